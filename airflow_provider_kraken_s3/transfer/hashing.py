"""The ETag S3 will report for a file, computed from the file: what a check-and-skip or a verify reads.

Hashing is I/O- and CPU-bound; ``hashlib`` releases the GIL, so parts are hashed on several threads.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from airflow_provider_kraken_s3.core.errors import LocalFileChangedError
from airflow_provider_kraken_s3.core.etag import etag_from_part_digests
from airflow_provider_kraken_s3.core.parts import DEFAULT_PART_SIZE, MIB, Part, PartPlan, plan_parts

READ_BLOCK = 4 * MIB


def _md5_of_range(path: Path, part: Part) -> bytes:
    digest = hashlib.md5()
    buffer = bytearray(min(READ_BLOCK, max(part.length, 1)))
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        handle.seek(part.offset)
        remaining = part.length
        while remaining:
            got = handle.readinto(view[: min(remaining, len(buffer))])
            if not got:
                raise LocalFileChangedError(
                    f"{path} became shorter while it was read (at byte {part.end - remaining})"
                )
            digest.update(view[:got])
            remaining -= got
    return digest.digest()


def _plan_for(path: Path, part_size: int) -> PartPlan:
    return plan_parts(os.stat(path).st_size, part_size, fixed=True)


def compute_s3_etag(path: str | os.PathLike[str], part_size: int = DEFAULT_PART_SIZE) -> str:
    """Unquoted lower-case ETag S3 reports for ``path`` uploaded with ``part_size`` (our uploader's rule).

    Parts are hashed in parallel, one thread per CPU.
    """
    path = Path(path)
    plan = _plan_for(path, part_size)
    parts = list(plan.parts())
    workers = max(1, min(len(parts), os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kraken-etag") as pool:
        digests = list(pool.map(lambda part: _md5_of_range(path, part), parts))
    return etag_from_part_digests(digests, multipart=plan.is_multipart)


def compute_s3_etag_and_md5(
    path: str | os.PathLike[str],
    part_size: int = DEFAULT_PART_SIZE,
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[str, str]:
    """ETag and whole-file hex MD5 from one read pass.

    The reading thread hashes the whole file while a second thread hashes the parts, so both digests cost
    about as much wall time as ``md5sum`` alone. Blocks come from a small ring of reused buffers, bounding
    memory to a few MiB whatever the file size. ``on_bytes(n)`` is told of every block read (a progress bar).
    """
    path = Path(path)
    plan = _plan_for(path, part_size)
    ring_size = 4
    ring = [bytearray(READ_BLOCK) for _ in range(ring_size)]
    free_slots = threading.Semaphore(ring_size)
    blocks: queue.SimpleQueue[tuple[int, int, bool] | None] = queue.SimpleQueue()
    part_digests: list[bytes] = []

    def hash_parts() -> None:
        digest = hashlib.md5()
        while (item := blocks.get()) is not None:
            slot, length, ends_part = item
            digest.update(memoryview(ring[slot])[:length])
            free_slots.release()
            if ends_part:
                part_digests.append(digest.digest())
                digest = hashlib.md5()

    whole = hashlib.md5()
    hasher = threading.Thread(target=hash_parts, name="kraken-etag-parts", daemon=True)
    hasher.start()
    slot = 0
    try:
        with open(path, "rb", buffering=0) as handle:
            for part in plan.parts():
                remaining = part.length
                if remaining == 0:
                    blocks.put((slot, 0, True))
                while remaining:
                    free_slots.acquire()
                    view = memoryview(ring[slot])[: min(remaining, READ_BLOCK)]
                    got = handle.readinto(view)
                    if not got:
                        free_slots.release()
                        raise LocalFileChangedError(f"{path} became shorter while it was read")
                    remaining -= got
                    blocks.put((slot, got, remaining == 0))
                    whole.update(view[:got])
                    slot = (slot + 1) % ring_size
                    if on_bytes is not None:
                        on_bytes(got)
    finally:
        blocks.put(None)
        hasher.join()
    return etag_from_part_digests(part_digests, multipart=plan.is_multipart), whole.hexdigest()


def compute_s3_etags(path: str | os.PathLike[str], part_sizes: Sequence[int]) -> tuple[dict[int, str], str]:
    """The ETag ``path`` would have at each of ``part_sizes``, and its whole-file MD5, from one read pass.

    For an object whose part size is unknown: the file is read once, and every candidate's part MD5s and the
    whole MD5 are updated from the same block (each digest on its own thread; hashlib releases the GIL).
    A block that crosses a part boundary of a candidate is split there.
    """
    path = Path(path)
    plans = {size: plan_parts(os.stat(path).st_size, size, fixed=True) for size in dict.fromkeys(part_sizes)}
    whole = hashlib.md5()
    current = {size: hashlib.md5() for size in plans}
    digests: dict[int, list[bytes]] = {size: [] for size in plans}
    offset = 0

    def feed(size: int, block: memoryview, start: int) -> None:
        position = start
        while block:
            room = size - position % size
            current[size].update(block[:room])
            if len(block) >= room:
                digests[size].append(current[size].digest())
                current[size] = hashlib.md5()
            position += min(room, len(block))
            block = block[room:]

    buffer = bytearray(READ_BLOCK)
    with open(path, "rb", buffering=0) as handle, ThreadPoolExecutor(max_workers=len(plans) + 1) as pool:
        while got := handle.readinto(buffer):
            view = memoryview(buffer)[:got]
            jobs = [pool.submit(whole.update, view)] + [
                pool.submit(feed, size, view, offset) for size in plans
            ]
            for job in jobs:
                job.result()
            offset += got
    etags = {}
    for size, plan in plans.items():
        if plan.file_size % size or not digests[size]:  # the last (short) part, or the empty file
            digests[size].append(current[size].digest())
        etags[size] = etag_from_part_digests(digests[size], multipart=plan.is_multipart)
    return etags, whole.hexdigest()
