"""Streaming, hashing views of file ranges: what lets one read pass both send and verify a part.

No Airflow and no boto3 here: botocore only needs a file-like body (``read``/``seek``/``tell``/``len``).
Each byte is MD5-hashed and CRC64NVME-checksummed (``awscrt``, far faster than MD5) at its first read; the
object's full-object CRC64NVME follows from the part CRCs (:func:`..core.checksum.full_object_crc64nvme`),
so no whole-file pass is needed for it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from awscrt import checksums

from airflow_provider_kraken_s3.core.checksum import ALGORITHM, Checksum, encode_crc64
from airflow_provider_kraken_s3.core.errors import BackupInterrupted, LocalFileChangedError, LocalReadError
from airflow_provider_kraken_s3.core.parts import MIB, Part, PartPlan

STREAM_BLOCK = 1 * MIB


def local_read_error(path: Path, error: OSError) -> LocalReadError:
    """An OSError while reading the local file is the file system's trouble, not the network's."""
    name = errno.errorcode.get(error.errno or 0, "OSError")
    return LocalReadError(
        f"reading {path} failed ({name}: {error.strerror or error}): the local copy or its file system is "
        "unhealthy (disk error, stale NFS handle?). Check the mount and the file, then clear the task."
    )


class UploadStopped(RuntimeError):
    """Raised inside a part's body when another part failed or the attempt was interrupted: not an OSError,
    so botocore does not retry it."""


class PartBody:
    """A seekable, read-only view of one part of a file that MD5-hashes (and CRC64NVME-checksums) the bytes
    as they are first read.

    botocore may read a body more than once (a retry seeks back to the start); every byte is hashed exactly
    once, at its first read, so the digest is the MD5 of what was read and what S3 must have received. If
    the file changes between two reads, the part ETag S3 returns no longer equals this digest, and the
    uploader sees it. Only one block (``STREAM_BLOCK``) is held in memory, whatever the part size.

    ``on_new_bytes(offset, block)`` is called with each block read for the first time (absolute offset), so
    a whole-file digest can follow without reading the file again.
    """

    def __init__(
        self,
        path: Path,
        part: Part,
        *,
        on_new_bytes: Callable[[int, bytes], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self._path = path
        self._part = part
        self._on_new_bytes = on_new_bytes
        self._should_stop = should_stop
        self._md5 = hashlib.md5()
        self._crc = 0
        self._hashed = 0
        self._position = 0
        self._block: bytes = b""
        self._block_start = 0
        self._fd: int | None = None
        self.failure: LocalFileChangedError | LocalReadError | UploadStopped | None = None

    def __len__(self) -> int:
        return self._part.length

    @property
    def part(self) -> Part:
        return self._part

    @property
    def fully_hashed(self) -> bool:
        return self._hashed == self._part.length

    def hexdigest(self) -> str:
        if not self.fully_hashed:
            raise RuntimeError(f"part {self._part.number} was read only to byte {self._hashed}")
        return self._md5.hexdigest()

    def digest(self) -> bytes:
        self.hexdigest()
        return self._md5.digest()

    def crc64nvme(self) -> int:
        """The CRC64NVME of the part's bytes as first read (what S3 must compute from what it received)."""
        self.hexdigest()
        return self._crc

    def checksum(self) -> Checksum:
        """The part's CRC64NVME as S3 writes it (``ChecksumCRC64NVME``, base64)."""
        return Checksum(ALGORITHM, encode_crc64(self.crc64nvme()))

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._part.length}[whence]
        self._position = min(max(base + offset, 0), self._part.length)
        return self._position

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def read(self, amount: int | None = -1) -> bytes:
        try:
            return self._read(amount)
        except (LocalFileChangedError, LocalReadError, UploadStopped) as error:
            self.failure = error
            raise

    def raise_failure(self) -> None:
        """Re-raise the error that stopped an earlier read, if any.

        botocore wraps whatever a body raises into a retryable ``HTTPClientError`` and would retry a part
        whose file is gone; the hook calls this before every (re)send, so the real error surfaces at once.
        """
        if self.failure is not None:
            raise self.failure

    def _read(self, amount: int | None) -> bytes:
        self._check_stop()
        if amount is None or amount < 0:
            amount = self._part.length - self._position
        chunks = []
        while amount > 0 and self._position < self._part.length:
            if not self._block_start <= self._position < self._block_start + len(self._block):
                self._check_stop()  # a read of the whole part (a drain, a checksum) looks at every block
                self._load_block(self._position - self._position % STREAM_BLOCK)
            start = self._position - self._block_start
            chunk = self._block[start : start + amount]
            chunks.append(chunk)
            self._position += len(chunk)
            amount -= len(chunk)
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    def _check_stop(self) -> None:
        if self._should_stop is not None and self._should_stop():
            raise UploadStopped(
                f"upload of part {self._part.number} stopped (another part failed, or the attempt was "
                "interrupted)"
            )

    def drain(self) -> None:
        """Read (and so hash) the whole part without sending it: used to check parts kept on resume."""
        self.seek(0)
        while self.read(STREAM_BLOCK):
            pass

    def close(self) -> None:
        """Release the file descriptor; a later read reopens it (botocore may close, then retry)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._block = b""

    def _load_block(self, block_start: int) -> None:
        length = min(STREAM_BLOCK, self._part.length - block_start)
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDONLY)
            block = os.pread(self._fd, length, self._part.offset + block_start)
        except FileNotFoundError as error:
            raise LocalFileChangedError(f"{self._path} disappeared during the upload") from error
        except OSError as error:
            raise local_read_error(self._path, error) from error
        if len(block) != length:
            raise LocalFileChangedError(
                f"{self._path} became shorter during the upload (part {self._part.number} could read "
                f"{len(block)} of {length} bytes at offset {self._part.offset + block_start})"
            )
        self._block, self._block_start = block, block_start
        if block_start == self._hashed:
            self._md5.update(block)
            self._crc = checksums.crc64nvme(block, previous_crc64nvme=self._crc)
            self._hashed += length
            if self._on_new_bytes is not None:
                self._on_new_bytes(self._part.offset + block_start, block)


class SequentialMd5:
    """Whole-file MD5 of a file whose parts are read concurrently and out of order.

    MD5 needs the bytes in order, the parts arrive in parallel. Blocks offered at the position the digest
    has reached are hashed right away; later blocks are kept while they fit in ``max_buffer``; any block
    that did not fit is read again from the file once it is due — it was read moments ago, so it comes
    from the page cache, not the disk. The follower never reads a range no part has read yet, so the file
    is read from disk once, and memory stays bounded whatever the part size and concurrency.

    **No byte is hashed that was not the byte sent.** A re-read block could differ from the block the part
    sent if the file was rewritten in between, and an mtime proves nothing (``cp -p``, ``rsync -t`` and NFS
    attribute caches restore or hide it). So a block that does not fit is fingerprinted (SHA-256, 32 bytes)
    when it is first read, and its re-read must have the same fingerprint, or the digest fails.

    ``cancel`` (the attempt's) stops the follower before its next block; :meth:`hexdigest` then raises
    :class:`BackupInterrupted` instead of waiting for it to catch up with the parts.
    """

    def __init__(
        self,
        path: Path,
        plan: PartPlan,
        *,
        max_buffer: int = 32 * MIB,
        cancel: threading.Event | None = None,
    ) -> None:
        self._path = path
        self._plan = plan
        self._cancel = cancel
        self._max_buffer = max_buffer
        self._md5 = hashlib.md5()
        self._position = 0
        self._read_upto: dict[int, int] = {}
        self._buffer: dict[int, bytes] = {}
        self._fingerprints: dict[int, bytes] = {}
        self._buffered = 0
        self._condition = threading.Condition()
        self._stopped = False
        self._error: BaseException | None = None
        self.reread_bytes = 0
        self._thread = threading.Thread(target=self._follow, name="kraken-whole-md5", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def offer(self, offset: int, block: bytes) -> None:
        """Record that ``block`` at ``offset`` was read (called by each part's reader, any thread)."""
        index = offset // self._plan.part_size
        with self._condition:
            keep = offset == self._position or (
                offset > self._position and self._buffered + len(block) <= self._max_buffer
            )
            if keep:
                self._buffer[offset] = block
                self._buffered += len(block)
        if not keep:  # hashed outside the lock (hashlib releases the GIL): other parts go on reading
            fingerprint = hashlib.sha256(block).digest()
        with self._condition:
            if not keep:
                self._fingerprints[offset] = fingerprint
            self._read_upto[index] = max(self._read_upto.get(index, 0), offset + len(block))
            self._condition.notify_all()

    def stop(self) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify_all()
        self._thread.join()

    def hexdigest(self, timeout: float | None = None) -> str:
        """Wait for the digest of the whole file (all parts must have been read)."""
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        if self._position != self._plan.file_size:
            raise RuntimeError(f"whole-file MD5 stopped at byte {self._position} of {self._plan.file_size}")
        return self._md5.hexdigest()

    def _next_block(self) -> tuple[bytes | None, int] | None:
        """Wait until the block at the current position is available; None when stopped."""
        with self._condition:
            while True:
                if self._stopped:
                    return None
                block = self._buffer.pop(self._position, None)
                if block is not None:
                    self._buffered -= len(block)
                    return block, len(block)
                index = self._position // self._plan.part_size
                read_upto = self._read_upto.get(index, 0)
                if self._position < read_upto:
                    part_end = min((index + 1) * self._plan.part_size, self._plan.file_size)
                    return None, min(read_upto, part_end, self._position + STREAM_BLOCK) - self._position
                self._condition.wait()

    def _follow(self) -> None:
        try:
            with open(self._path, "rb", buffering=0) as handle:
                while self._position < self._plan.file_size:
                    if self._cancel is not None and self._cancel.is_set():
                        raise BackupInterrupted(f"the whole-file MD5 of {self._path} was stopped")
                    item = self._next_block()
                    if item is None:
                        return
                    block, length = item
                    if block is None:
                        block = self._reread(handle.fileno(), length)
                    self._md5.update(block)
                    with self._condition:
                        self._position += len(block)
        except BaseException as error:  # re-raised in hexdigest(), on the caller's thread
            self._error = error

    def _reread(self, fd: int, length: int) -> bytes:
        """Read a dropped block again and prove it is the block the part read (and sent) before."""
        try:
            block = os.pread(fd, length, self._position)
        except OSError as error:
            raise local_read_error(self._path, error) from error
        with self._condition:
            fingerprint = self._fingerprints.pop(self._position)
        if len(block) != length or hashlib.sha256(block).digest() != fingerprint:
            raise LocalFileChangedError(
                f"{self._path} changed during the upload: the {length} bytes at offset {self._position} read "
                "again for the whole-file MD5 differ from the bytes sent (rewritten in place?). The upload was "
                "not completed; find out what writes to the file, then re-run."
            )
        self.reread_bytes += length
        return block


def stat_or_fail(path: Path) -> os.stat_result:
    try:
        stat = os.stat(path)
    except FileNotFoundError as error:
        raise LocalFileChangedError(f"local file {path} does not exist; nothing was uploaded") from error
    except OSError as error:  # ELOOP (a symlink loop), EACCES, EIO, ESTALE
        raise local_read_error(path, error) from error
    if not os.path.isfile(path):
        raise LocalFileChangedError(f"{path} is not a regular file; nothing was uploaded")
    return stat


def check_unchanged(path: Path, before: os.stat_result) -> None:
    """An early warning, not a proof: same inode, size and mtime as when reading started."""
    try:
        after = os.stat(path)
    except FileNotFoundError as error:
        raise LocalFileChangedError(f"{path} disappeared during the upload") from error
    except OSError as error:
        raise LocalReadError(f"{path} cannot be examined after the upload: {error}") from error
    if (after.st_ino, after.st_size, after.st_mtime_ns) != (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    ):
        raise LocalFileChangedError(
            f"{path} changed during the upload (size {before.st_size} → {after.st_size}, mtime changed); the "
            "upload was not completed. Find out what writes to the file, then re-run."
        )
