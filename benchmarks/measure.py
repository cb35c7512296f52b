"""What every benchmark here measures with, and how it runs its contenders and prints what it found.

- **Measuring** — :func:`measured` wraps a block and records its wall time, this process's CPU (its
  children's included), the CPU of the moto server and of every other process meanwhile, minor page faults,
  RSS before and at its peak (:class:`RssSampler`) and the ``/proc/self/io`` counters.
- **A shared machine** — :func:`measure_quietly` waits for idle CPUs first and redoes a measurement that
  other processes disturbed (:class:`NoisePolicy`, the ``--quiet-wait``/``--noisy-retries``/``--budget-s``
  options of :func:`add_common_args`).
- **Baseline runs** — :func:`interleaved_rounds` runs every method (ours and the baselines) once per round,
  so a slow phase of the machine hits all of them alike; :func:`run_measured_child` runs one measurement in
  a fresh process (:func:`print_child_result` is that process's half); :func:`medians` over the undisturbed
  runs.
- **Reporting** — :func:`markdown_table`, :class:`Target` and :func:`targets_table`, :func:`context_sentence`
  (machine, versions, noise) and :func:`write_json`.

Plus the fixtures they share: :func:`s3_client`, :func:`connection_json`, :func:`child_env`,
:func:`make_test_file`, :func:`md5_pass`, :func:`md5sum`, :func:`evict_from_page_cache`,
:func:`scratch_dir`.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MIB = 1024**2
MB = 10**6
WRITE_CHUNK = 64 * MIB
HASH_BLOCK = 4 * MIB
RESULT_MARKER = "RESULT "
CHILD_TIMEOUT_S = 900
RSS_SAMPLE_INTERVAL_S = 0.01
QUIET_CPU_PERCENT = 25.0
#: A measurement is redone when other processes used more than this share of the machine's CPU during it.
NOISE_SHARE = 0.10


# ---------------------------------------------------------------------------------------------- counters


def proc_io() -> dict[str, int]:
    """This process's I/O counters: ``read_bytes``/``write_bytes`` (block device), ``rchar``/``wchar``
    (via syscalls, sockets included)."""
    with open("/proc/self/io") as handle:
        return {key: int(value) for key, value in (line.split(": ") for line in handle if line.strip())}


def cpu_seconds() -> tuple[float, float]:
    """User and system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that have ended (``md5sum``, ...)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def minor_faults() -> int:
    """Page faults served without I/O: mostly first touches of freshly allocated memory (system CPU)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def max_rss_bytes() -> int:
    """Lifetime peak RSS; ``ru_maxrss`` is in KiB on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent on anything but idling since boot (to find out what *others* used)."""
    import psutil

    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq


class RssSampler:
    """Samples RSS in a thread: ``ru_maxrss`` is a lifetime peak and may predate the measured block."""

    def __init__(self, interval: float = RSS_SAMPLE_INTERVAL_S) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = self._process.memory_info().rss
        self.samples = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


@contextmanager
def measured(moto_pid: int | None = None, *, sample_rss: bool = True) -> Iterator[dict[str, Any]]:
    """Measure the ``with`` block; the yielded dict is filled when the block ends.

    ``sample_rss=False`` spares a block that only times CPU-bound steps the sampling thread (its peak RSS
    is then RSS at the end, or the lifetime peak if the block raised it).

    Keys: ``wall_s``; ``cpu_user_s``, ``cpu_sys_s``, ``children_cpu_s`` and their sum ``cpu_s`` (this
    process); ``moto_cpu_s`` (``moto_user_s`` + ``moto_sys_s``, 0 without ``moto_pid``); ``others_cpu_s`` (every
    other process: what disturbed the measurement); ``minor_faults``; ``rss_before``, ``peak_rss``,
    ``rss_growth``, ``maxrss_lifetime``, ``rss_samples``; the deltas of ``read_bytes``, ``rchar``,
    ``write_bytes`` and ``wchar``.
    """
    import psutil

    gc.collect()
    moto = psutil.Process(moto_pid) if moto_pid else None
    result: dict[str, Any] = {}
    rss_before = psutil.Process().memory_info().rss
    maxrss_before = max_rss_bytes()
    busy0 = machine_busy_seconds()
    moto0 = moto.cpu_times() if moto else None
    user0, sys0 = cpu_seconds()
    kids0 = children_cpu_seconds()
    faults0 = minor_faults()
    io0 = proc_io()
    sampler = RssSampler()
    with sampler if sample_rss else nullcontext():
        started = time.perf_counter()
        yield result
        wall = time.perf_counter() - started
    sampler.peak = max(sampler.peak, psutil.Process().memory_info().rss)
    user1, sys1 = cpu_seconds()
    kids = children_cpu_seconds() - kids0
    faults = minor_faults() - faults0
    io1 = proc_io()
    busy1 = machine_busy_seconds()
    moto_user = moto_sys = 0.0
    if moto and moto0:
        moto1 = moto.cpu_times()
        moto_user, moto_sys = moto1.user - moto0.user, moto1.system - moto0.system
    own = (user1 - user0) + (sys1 - sys0) + kids
    maxrss_after = max_rss_bytes()
    # ru_maxrss is exact but lifetime-wide: it only speaks for the block if the block raised it.
    peak = max(sampler.peak, maxrss_after if maxrss_after > maxrss_before else 0)
    result.update(
        wall_s=wall,
        cpu_user_s=user1 - user0,
        cpu_sys_s=sys1 - sys0,
        children_cpu_s=kids,
        cpu_s=own,
        # moto is the server: its CPU, mostly kernel time for memory, is what bounds the wall time here.
        moto_cpu_s=moto_user + moto_sys,
        moto_user_s=moto_user,
        moto_sys_s=moto_sys,
        others_cpu_s=max(0.0, (busy1 - busy0) - own - moto_user - moto_sys),
        minor_faults=faults,
        rss_before=rss_before,
        peak_rss=peak,
        rss_growth=peak - rss_before,
        maxrss_lifetime=maxrss_after,
        rss_samples=sampler.samples,
        **{name: io1[name] - io0[name] for name in ("read_bytes", "rchar", "write_bytes", "wchar")},
    )


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    """``action()``'s value and its wall seconds (for steps inside a :func:`measured` block)."""
    started = time.perf_counter()
    value = action()
    return value, time.perf_counter() - started


# ---------------------------------------------------------------------------------------------- shared machine


def add_common_args(
    parser: argparse.ArgumentParser, *, repeat: int | None = None, repeat_help: str = ""
) -> None:
    """The options every benchmark takes: ``--json``, the noise policy, and (when given) ``--repeat``."""
    if repeat is not None:
        parser.add_argument(
            "--repeat",
            type=int,
            default=repeat,
            help=f"runs per method; median (default {repeat}{repeat_help})",
        )
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=15.0,
        help="before each measurement wait up to this many seconds for other processes to go idle (default 15)",
    )
    parser.add_argument(
        "--noisy-retries",
        type=int,
        default=1,
        help="redo a measurement this often if other processes used the CPUs during it (default 1)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=400.0,
        help="stop waiting for quiet and redoing noisy measurements after this many seconds (default 400)",
    )


def is_noisy(result: dict[str, Any]) -> bool:
    return result["others_cpu_s"] > NOISE_SHARE * result["wall_s"] * (os.cpu_count() or 1)


@dataclass(frozen=True)
class NoisePolicy:
    """How hard to try for undisturbed measurements on a shared machine, within a time budget."""

    quiet_wait: float
    retries: int
    deadline: float  # time.monotonic() after which we neither wait nor redo

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NoisePolicy:
        return cls(args.quiet_wait, args.noisy_retries, time.monotonic() + args.budget_s)

    def may_wait(self) -> bool:
        return time.monotonic() < self.deadline


def wait_for_quiet(max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until the machine's CPUs are mostly idle; return the busy % last seen.

    Other work on a small machine (a test suite, a build) steals CPU from the client *and* from moto and
    skews both sides unevenly; waiting is cheap, and the value is recorded so a noisy run is visible.
    """
    import psutil

    deadline = time.monotonic() + max_wait
    busy = psutil.cpu_percent(interval=0.5)
    while busy > QUIET_CPU_PERCENT and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
    return busy


def measure_quietly(measure: Callable[[], dict[str, Any]], what: str, policy: NoisePolicy) -> dict[str, Any]:
    """Run ``measure`` when the machine is idle; redo it if other processes took CPU while it ran.

    ``measure`` returns a dict with at least ``wall_s`` and ``others_cpu_s`` (what :func:`measured` gives).
    """
    attempt = 0
    while True:
        attempt += 1
        busy = wait_for_quiet(policy.quiet_wait if policy.may_wait() else 0.0)
        result = measure()
        result.update(busy_before_pct=busy, attempt=attempt, noisy=is_noisy(result))
        redo = result["noisy"] and attempt <= policy.retries and policy.may_wait()
        if result["noisy"]:
            print(
                f"  {what}: other processes used {result['others_cpu_s']:.1f} CPU s during it "
                f"({result['wall_s']:.1f} s wall), {'redoing' if redo else 'kept, flagged as noisy'}",
                file=sys.stderr,
                flush=True,
            )
        if not redo:
            return result


# ---------------------------------------------------------------------------------------------- baseline runs


def interleaved_rounds(
    methods: Iterable[str],
    repeat: int,
    run_one: Callable[[str], dict[str, Any]],
    labels: dict[str, str],
    policy: NoisePolicy,
) -> dict[str, list[dict[str, Any]]]:
    """``repeat`` rounds, each measuring every method once (quietly), in order; one progress line per run."""
    methods = tuple(methods)
    runs: dict[str, list[dict[str, Any]]] = {method: [] for method in methods}
    width = max(len(labels[method]) for method in methods)
    for round_number in range(1, repeat + 1):
        for method in methods:
            result = measure_quietly(lambda method=method: run_one(method), labels[method], policy)
            runs[method].append(result)
            print(
                f"  round {round_number}/{repeat} {labels[method]:<{width}} {result['wall_s']:7.2f} s wall "
                f"{result['cpu_s']:6.2f} s CPU ({result['minor_faults'] / 1000:.0f}k faults) "
                f"+{result['rss_growth'] / MIB:6.1f} MiB RSS  "
                f"moto {result['moto_cpu_s']:5.2f} s CPU, others {result['others_cpu_s']:4.1f} s CPU",
                file=sys.stderr,
                flush=True,
            )
    return runs


def print_child_result(result: dict[str, Any]) -> None:
    """A measuring child's last stdout line, read back by :func:`run_measured_child`."""
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(result), flush=True)


def run_measured_child(command: list[str], env: dict[str, str], what: str) -> dict[str, Any]:
    """Run one measurement in a fresh process (RSS, CPU and I/O are then that run's alone); its result."""
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise RuntimeError(f"child {what} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_MARKER) :])


def undisturbed(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs no other process disturbed, or all of them if every run was disturbed."""
    return [r for r in results if not r["noisy"]] or results


def medians(runs: dict[str, list[dict[str, Any]]], fields: Iterable[str]) -> dict[str, dict[str, float]]:
    """Per-method medians of ``fields`` over the undisturbed runs, with ``runs`` (how many) and ``noisy``
    (none was undisturbed)."""
    fields = tuple(fields)
    table: dict[str, dict[str, float]] = {}
    for method, results in runs.items():
        usable = undisturbed(results)
        table[method] = {name: statistics.median(r[name] for r in usable) for name in fields}
        table[method]["runs"] = len(usable)
        table[method]["noisy"] = all(r["noisy"] for r in usable)
    return table


def noisy_count(*groups: Iterable[dict[str, Any]]) -> int:
    """How many measurements in ``groups`` were kept although disturbed."""
    return sum(bool(result.get("noisy")) for group in groups for result in group)


# ---------------------------------------------------------------------------------------------- reporting


@dataclass(frozen=True)
class Target:
    """A promise of the README, measured: ``value`` against ``limit`` (a floor or a ceiling)."""

    name: str
    value: float
    limit: float
    higher_is_better: bool
    unit: str
    strict: bool = False  # ``<``/``>`` instead of ``≤``/``≥``

    @property
    def passed(self) -> bool:
        if self.higher_is_better:
            return self.value > self.limit if self.strict else self.value >= self.limit
        return self.value < self.limit if self.strict else self.value <= self.limit

    @property
    def comparator(self) -> str:
        return {(True, False): "≥", (True, True): ">", (False, False): "≤", (False, True): "<"}[
            (self.higher_is_better, self.strict)
        ]

    @property
    def margin(self) -> str:
        """How far from the limit, in percent of it (positive = headroom, negative = missed by)."""
        if not self.limit:
            return "n/a"
        headroom = (self.value - self.limit) if self.higher_is_better else (self.limit - self.value)
        return f"{headroom / self.limit * 100:+.1f}%"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed, "margin": self.margin}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def targets_table(targets: list[Target]) -> str:
    rows = [
        [
            t.name,
            f"{t.value:.2f}{t.unit}",
            f"{t.comparator} {t.limit:.2f}{t.unit}",
            "PASS" if t.passed else "MISS",
            t.margin,
        ]
        for t in targets
    ]
    return markdown_table(["target", "measured", "target", "result", "headroom"], rows)


def context_sentence(noisy: int) -> str:
    """The machine, the versions that matter, and whether other processes disturbed any measurement."""
    import boto3
    import botocore

    noise = (
        f"WARNING: {noisy} measurement(s) kept although other processes used over {NOISE_SHARE:.0%} of the "
        "CPUs during them (see --json)."
        if noisy
        else f"No measurement was disturbed by other processes (< {NOISE_SHARE:.0%} of the CPUs)."
    )
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs (load average {load} at the end), Python {platform.python_version()}, "
        f"boto3 {boto3.__version__}, botocore {botocore.__version__}. {noise}"
    )


def write_json(path: Path | None, args: argparse.Namespace, **sections: Any) -> None:
    """Every number, with the parameters it was measured with, to ``path`` (``--json``) if given."""
    if path is None:
        return
    parameters = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    path.write_text(json.dumps({"parameters": parameters, **sections}, indent=2))


# ---------------------------------------------------------------------------------------------- fixtures


def connection_json(endpoint_url: str) -> str:
    """The ``aws`` Airflow connection the hook reads (same form as ``tests/conftest.py``)."""
    extra = {"endpoint_url": endpoint_url, "region_name": "us-east-1"}
    return json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra})


def s3_client(endpoint_url: str, config: Any = None) -> Any:
    """A boto3 S3 client for the moto server; ``config=None`` keeps every boto3 default."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def child_env(endpoint: str, airflow_home: Path) -> dict[str, str]:
    """Airflow reads its config at import: a throwaway home, test mode, our connection via env var."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_AWS_DEFAULT": connection_json(endpoint),
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
    }


@contextmanager
def scratch_dir(parent: Path | None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kraken-bench-", dir=parent) as name:
        yield Path(name)


def make_test_file(directory: Path, size: int) -> Path:
    """Random (incompressible) bytes, synced so the page cache can be dropped before each read."""
    path = directory / "bench.raw"
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(WRITE_CHUNK, remaining))
            handle.write(chunk)
            remaining -= len(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def evict_from_page_cache(path: Path) -> None:
    """Drop the file's cached pages so the next read comes from disk (needs the data synced first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def md5_pass(path: Path) -> tuple[str, float, float]:
    """hashlib MD5 over the file on one thread: (hex, CPU seconds, wall seconds), the cost of one pass."""
    digest = hashlib.md5()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(buffer):
            digest.update(view[:got])
    return digest.hexdigest(), time.process_time() - cpu0, time.perf_counter() - wall0


def md5sum(path: Path) -> str:
    output = subprocess.run(["md5sum", str(path)], check=True, capture_output=True, text=True).stdout
    return output.split()[0]
