"""Progress and summary lines for task logs: readable by people, parseable as stable key=value fields."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from airflow_provider_kraken_s3.core.log import Log
from airflow_provider_kraken_s3.core.parts import MIB


def kv(**fields: object) -> str:
    """Render ``key=value`` pairs in the given order; values with spaces are quoted."""
    rendered = []
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.2f}"
        elif isinstance(value, bool):
            value = str(value).lower()
        text = str(value)
        rendered.append(f'{key}="{text}"' if (" " in text or not text) else f"{key}={text}")
    return " ".join(rendered)


class ProgressReporter:
    """Logs bytes S3 has acknowledged, percent, MiB/s and ETA at every ``every_fraction`` of the total.

    At most ``1 / every_fraction`` lines per file (20 by default), whatever its size or speed; counted when S3
    acknowledges a part, not when a part is read (botocore reads a part ahead to checksum it), so the rate
    agrees with the summary. Thread-safe: parts report from several threads. ``callback(done, total)``, when given, is called on every
    update so a caller can drive its own display.
    """

    def __init__(
        self,
        log: Log,
        label: str,
        total: int,
        *,
        every_fraction: float = 0.05,
        callback: Callable[[int, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._label = label
        self._total = total
        self._step = max(1, int(total * every_fraction))
        self._callback = callback
        self._clock = clock
        self._lock = threading.Lock()
        self._done = 0
        self._started = clock()
        self._last_logged_bytes = 0
        self._last_logged_at = self._started

    @property
    def done(self) -> int:
        return self._done

    def add(self, count: int) -> None:
        with self._lock:
            self._done += count
            now = self._clock()
            due = self._done - self._last_logged_bytes >= self._step or self._done == self._total
            if due and self._done > self._last_logged_bytes:
                self._last_logged_bytes, self._last_logged_at = self._done, now
                self._log_line(now)
        if self._callback is not None:
            self._callback(self._done, self._total)

    def _log_line(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-9)
        rate = self._done / elapsed
        eta = (self._total - self._done) / rate if rate else float("inf")
        self._log.info(
            "progress %s",
            kv(
                file=self._label,
                done_mib=self._done / MIB,
                total_mib=self._total / MIB,
                pct=100.0 * self._done / self._total if self._total else 100.0,
                rate_mib_s=rate / MIB,
                eta_s=eta,
            ),
        )
