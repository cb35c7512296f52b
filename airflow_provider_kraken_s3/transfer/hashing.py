"""The ETag S3 will report for bytes, computed from the bytes: what a check-and-skip, a verify, a download
and a restore hash.

Hashing is I/O- and CPU-bound; ``hashlib`` releases the GIL, so parts are hashed on several threads.

The full-object CRC64NVME S3 keeps beside the ETag (the proof under SSE-KMS/SSE-C) is computed in the same
read pass where asked for (``awscrt``: more than ten times MD5's speed, so it costs no wall time), and so is
a CRC32/CRC32C another tool stored, at each part layout the object may have (:class:`Digests`).

Every read loop takes an optional ``cancel`` event and looks at it before each block: hashing a 100 GB file
takes minutes, and a killed task (Airflow sends SIGKILL 5 s after SIGTERM) or a lost lease must stop it
within one block (:class:`~..core.errors.BackupInterrupted`), not after the whole file.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from awscrt import checksums

from airflow_provider_kraken_s3.core.checksum import ALGORITHM, Checksum, encode_crc64
from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    InvalidInputError,
    LocalFileChangedError,
)
from airflow_provider_kraken_s3.core.etag import etag_from_part_digests
from airflow_provider_kraken_s3.core.part_layouts import CrcLayout
from airflow_provider_kraken_s3.core.parts import DEFAULT_PART_SIZE, MIB, Part, PartPlan, plan_parts
from airflow_provider_kraken_s3.transfer.stream_checksums import LayoutCrc

READ_BLOCK = 4 * MIB


def _check_cancel(cancel: threading.Event | None, what: object) -> None:
    """Raise :class:`BackupInterrupted` if ``cancel`` is set: called before every block a loop reads."""
    if cancel is not None and cancel.is_set():
        raise BackupInterrupted(f"hashing {what} was stopped: the attempt was interrupted")


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


@dataclass(frozen=True)
class FileDigests:
    """What one read pass of a file gives: its ETag at one part size, its MD5 and its CRC64NVME."""

    etag: str
    md5: str
    checksum: Checksum


def crc64nvme_checksum(crc: int) -> Checksum:
    """A CRC64NVME as the :class:`Checksum` S3 shows for a whole object."""
    return Checksum(ALGORITHM, encode_crc64(crc))


def compute_s3_etag_and_md5(
    path: str | os.PathLike[str],
    part_size: int = DEFAULT_PART_SIZE,
    *,
    on_bytes: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> tuple[str, str]:
    """ETag and whole-file hex MD5 from one read pass (:func:`compute_s3_digests` without the CRC)."""
    digests = compute_s3_digests(path, part_size, on_bytes=on_bytes, cancel=cancel, checksum=False)
    return digests.etag, digests.md5


def compute_s3_digests(
    path: str | os.PathLike[str],
    part_size: int = DEFAULT_PART_SIZE,
    *,
    on_bytes: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    checksum: bool = True,
) -> FileDigests:
    """ETag, whole-file hex MD5 and (``checksum``) full-object CRC64NVME from one read pass.

    The reading thread hashes the whole file's MD5 while a second thread hashes the parts and the CRC (the
    CRC is ~40× cheaper than MD5, so it goes to the thread that does not also read: on two cores the two
    threads then finish together), so all digests cost about as much wall time as ``md5sum`` alone. Blocks
    come from a small ring of reused buffers, bounding memory to a few MiB whatever the file size.
    ``on_bytes(n)`` is told of every block read (a progress bar).
    """
    path = Path(path)
    plan = _plan_for(path, part_size)
    ring_size = 4
    ring = [bytearray(READ_BLOCK) for _ in range(ring_size)]
    free_slots = threading.Semaphore(ring_size)
    blocks: queue.SimpleQueue[tuple[int, int, bool] | None] = queue.SimpleQueue()
    part_digests: list[bytes] = []
    crc = 0

    def hash_parts() -> None:
        nonlocal crc
        digest = hashlib.md5()
        while (item := blocks.get()) is not None:
            slot, length, ends_part = item
            block = memoryview(ring[slot])[:length]
            digest.update(block)
            if checksum:
                crc = checksums.crc64nvme(block, previous_crc64nvme=crc)
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
                    _check_cancel(cancel, path)
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
    return FileDigests(
        etag_from_part_digests(part_digests, multipart=plan.is_multipart),
        whole.hexdigest(),
        crc64nvme_checksum(crc),
    )


class _PartMD5s:
    """The MD5 of every part of a stream at one part size; the last part stays open until the stream ends."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self.closed: list[bytes] = []
        self._open = hashlib.md5()

    def feed(self, view: memoryview, position: int) -> None:
        """Hash ``view``, the bytes from ``position`` on, splitting it where a part ends."""
        while view:
            room = self.part_size - position % self.part_size
            self._open.update(view[:room])
            if len(view) >= room:
                self.closed.append(self._open.digest())
                self._open = hashlib.md5()
            position += min(room, len(view))
            view = view[room:]

    def etag(self, size: int) -> str:
        """The multipart ETag of the ``size`` bytes fed."""
        digests = self.closed if size % self.part_size == 0 else [*self.closed, self._open.digest()]
        return etag_from_part_digests(digests, multipart=True)


class Digests:
    """The MD5 of a byte stream and its multipart ETag at each of ``part_sizes``, fed in order, in one pass.

    The one multi-part-size hasher: :func:`compute_s3_etags` feeds it a file, a download (:mod:`.download`)
    the ranges as they arrive, a restore the partial file it continues. A block that crosses a part boundary
    of some part size is split there. The ETag at a part size the stream fits in is its plain MD5 (a single
    PUT), so only smaller part sizes are hashed as multipart.

    :param pool: with one, every digest of a block is updated on its own thread (hashlib releases the GIL,
        so a file hashed at several part sizes takes about the wall time of one MD5 where cores allow);
        without, one after another on the caller's thread (a download's consumer, whose GETs fill the cores).
    :param checksum: also compute the stream's CRC64NVME (on the caller's thread: it is cheap).
    :param layouts: also compute a CRC32/CRC32C at each of these part layouts (another tool's checksum), each
        fed like a part size's MD5s.
    """

    def __init__(
        self,
        size: int,
        part_sizes: Iterable[int] = (),
        *,
        pool: Executor | None = None,
        checksum: bool = False,
        layouts: Iterable[CrcLayout] = (),
    ) -> None:
        self.size = size
        self.offset = 0
        self._crc: int | None = 0 if checksum else None
        self._whole = hashlib.md5()
        self._parts = [_PartMD5s(p) for p in sorted({p for p in part_sizes if 0 < p < size})]
        self._layouts = [LayoutCrc(layout) for layout in dict.fromkeys(layouts)]
        if any(crc.layout.size != size for crc in self._layouts):
            raise InvalidInputError(f"a part layout of another size than the stream's {size} bytes")
        self._pool = pool

    @property
    def part_sizes(self) -> tuple[int, ...]:
        """The part sizes hashed as multipart (those the stream does not fit in)."""
        return tuple(parts.part_size for parts in self._parts)

    def update(self, block: memoryview | bytes) -> None:
        view = memoryview(block)
        if self.offset + len(view) > self.size:
            raise InvalidInputError(f"{self.offset + len(view)} bytes fed into digests of {self.size} bytes")
        feeds = [partial(parts.feed, view, self.offset) for parts in self._parts]
        feeds += [partial(crc.update, view) for crc in self._layouts]
        if self._pool is None or not feeds:
            self._whole.update(view)
            for feed in feeds:
                feed()
            self._update_crc(view)
        else:
            jobs = [self._pool.submit(self._whole.update, view), *map(self._pool.submit, feeds)]
            self._update_crc(view)
            for job in jobs:
                job.result()
        self.offset += len(view)

    def _update_crc(self, view: memoryview) -> None:
        if self._crc is not None:
            self._crc = checksums.crc64nvme(view, previous_crc64nvme=self._crc)

    @property
    def checksum(self) -> Checksum | None:
        """The stream's full-object CRC64NVME (None unless asked for)."""
        self._check_complete()
        return None if self._crc is None else crc64nvme_checksum(self._crc)

    @property
    def md5(self) -> str:
        self._check_complete()
        return self._whole.hexdigest()

    def etags(self) -> dict[int, str]:
        """Part size → ETag of the whole stream (multipart part sizes only)."""
        self._check_complete()
        return {parts.part_size: parts.etag(self.size) for parts in self._parts}

    @property
    def at_layouts(self) -> tuple[tuple[CrcLayout, Checksum], ...]:
        """Each layout asked for, with the CRC32/CRC32C S3 keeps for an object of that layout."""
        self._check_complete()
        return tuple((crc.layout, crc.checksum) for crc in self._layouts)

    def _check_complete(self) -> None:
        if self.offset != self.size:
            raise InvalidInputError(f"digests asked for after {self.offset} of {self.size} bytes")


def hash_into(
    digests: Digests, handle: BinaryIO, length: int, *, cancel: threading.Event | None = None
) -> int:
    """Feed the next ``length`` bytes of ``handle`` into ``digests``; the bytes fed (fewer: the file ended)."""
    buffer = bytearray(min(READ_BLOCK, max(length, 1)))
    remaining = length
    while remaining:
        _check_cancel(cancel, getattr(handle, "name", "a file"))
        # Every file opened "rb" (buffered or not) has readinto; typing.BinaryIO does not declare it.
        got = handle.readinto(memoryview(buffer)[: min(remaining, len(buffer))])  # type: ignore[attr-defined]
        if not got:
            break
        digests.update(memoryview(buffer)[:got])
        remaining -= got
    return length - remaining


def compute_s3_etags(
    path: str | os.PathLike[str], part_sizes: Sequence[int], *, cancel: threading.Event | None = None
) -> tuple[dict[int, str], str]:
    """The ETag ``path`` would have at each of ``part_sizes``, and its whole-file MD5, from one read pass."""
    hashed = hash_file(path, part_sizes, cancel=cancel, checksum=False)
    return hashed.etags, hashed.md5


@dataclass(frozen=True)
class FileHashes:
    """One read pass at several part sizes: the ETag at each, the MD5, the CRC64NVME if asked for, and the
    CRC32/CRC32C at each layout asked for."""

    etags: dict[int, str]
    md5: str
    checksum: Checksum | None
    at_layouts: tuple[tuple[CrcLayout, Checksum], ...] = ()


def hash_file(
    path: str | os.PathLike[str],
    part_sizes: Sequence[int],
    *,
    cancel: threading.Event | None = None,
    checksum: bool = True,
    layouts: Sequence[CrcLayout] = (),
) -> FileHashes:
    """The ETag ``path`` would have at each of ``part_sizes``, its whole-file MD5, (``checksum``) its
    full-object CRC64NVME and its CRC32/CRC32C at each of ``layouts``, from one read pass: the hash-first
    step before deciding about an object.

    For an object whose part size is unknown: the file is read once into :class:`Digests`, which updates
    every candidate's part MD5s (and CRCs) and the whole MD5 from the same block, each on its own thread.
    """
    path = Path(path)
    size = os.stat(path).st_size
    compared_as = {layout.size for layout in layouts} - {size}
    if compared_as:
        raise LocalFileChangedError(
            f"{path} has {size} bytes now, not the {min(compared_as)} it was compared as"
        )
    plans = {part_size: plan_parts(size, part_size, fixed=True) for part_size in dict.fromkeys(part_sizes)}
    workers = len(plans) + len(layouts) + 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kraken-etags") as pool:
        digests = Digests(size, plans, pool=pool, checksum=checksum, layouts=layouts)
        with open(path, "rb", buffering=0) as handle:
            if hash_into(digests, handle, size, cancel=cancel) != size:
                raise LocalFileChangedError(f"{path} became shorter while it was read")
    multipart = digests.etags()
    return FileHashes(
        {part_size: multipart.get(part_size, digests.md5) for part_size in plans},
        digests.md5,
        digests.checksum,
        digests.at_layouts,
    )
