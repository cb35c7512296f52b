"""Threads for the transfers: one way to run calls side by side and to end them, whatever ends first.

Two shapes. :func:`worker_pool` is a bounded pool that, when its block ends (normally or not), tells the calls
still running to stop (``stop``: they watch it at their next block), drops the ones not started and waits for
the running ones. :func:`run_until_first_failure` submits every call at once and waits for all of them, the
first failure, or ``cancel`` from outside — the shape of a multipart upload's parts and of a set's files.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")

#: Seconds between two looks at ``cancel`` while calls run.
POLL_SECONDS = 1.0


def close(
    pool: ThreadPoolExecutor, *, stop: threading.Event | None = None, wait_running: bool = True
) -> None:
    """Tell the running calls to stop (``stop``), drop those not started, and wait for the running ones (or
    not: a call stuck on the network must not hold an interrupted task past its deadline)."""
    if stop is not None:
        stop.set()
    pool.shutdown(wait=wait_running, cancel_futures=True)


@contextmanager
def worker_pool(
    workers: int, name: str, *, stop: threading.Event | None = None
) -> Iterator[ThreadPoolExecutor]:
    """A pool of ``workers`` threads named ``name-…``; when the block ends, :func:`close` (waiting)."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    try:
        yield pool
    finally:
        close(pool, stop=stop)


def run_until_first_failure(
    calls: Sequence[Callable[[], T]],
    *,
    workers: int,
    name: str,
    stop: threading.Event,
    cancel: threading.Event,
    interrupted: Callable[[], BaseException],
    cause: Callable[[list[BaseException]], BaseException],
    wait_after_interruption: bool,
) -> list[T]:
    """Run every call, ``workers`` at a time, and return their results in order.

    The first failure ends the run: ``stop`` is set (every call watches it), the calls still running are
    waited for — so none acts after the caller reacts to the failure (an abort, a FAILED record) — and
    ``cause(errors of the failed calls)`` is raised (the real error, not the stops it caused). When ``cancel``
    is set from outside, or anything is raised in the caller's thread meanwhile (Airflow's timeout), ``stop``
    is set too, and the running calls are waited for only if ``wait_after_interruption``; ``interrupted()``
    is raised for ``cancel``. ``stop`` stays unset when every call finished.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
    futures: list[Future[T]] = [pool.submit(call) for call in calls]
    finished = False  # every call ended
    failed = False  # one call failed: wait for the others whatever happens next
    try:
        while True:
            done, pending = wait(futures, timeout=POLL_SECONDS, return_when=FIRST_EXCEPTION)
            errors = [f.exception() for f in done if not f.cancelled() and f.exception() is not None]
            if errors:
                failed = True
                stop.set()  # before choosing the cause: the others stop at their next block
                raise cause([error for error in errors if error is not None])
            if not pending:
                finished = True
                return [future.result() for future in futures]
            if cancel.is_set():
                raise interrupted()
    finally:
        close(
            pool,
            stop=None if finished else stop,
            wait_running=finished or failed or wait_after_interruption,
        )
