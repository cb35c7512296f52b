"""Read an object back from S3 and hash what arrives: the engine of deep verification and restore.

An object is fetched with parallel ranged GETs (``RANGE_SIZE`` each), at most ``max_concurrency`` requests
at a time and ``max_concurrency * ranges_per_worker`` ranges held in memory (fetched or being fetched), in
reused buffers: memory is bounded by those numbers, never by the object's size. Ranges are handed on in
order to the consumers — the whole-object MD5, the part MD5s at each part size of interest (one pass for
all of them: :class:`~.hashing.Digests`), S3's additional checksums (:class:`~.stream_checksums.StreamChecksums`:
the full-object CRC64NVME, and a CRC32/CRC32C at a part layout where asked) and optionally a sink (the file a
restore writes) — while the next ranges are still arriving, so hashing costs no extra wall time (hashlib and
awscrt release the GIL). Each range's CRC64NVME is computed by the thread that fetched it, in parallel, and
the ranges' CRCs are combined in order (:func:`~..core.checksum.combine_crc64nvme`).

HEAD is asked with ``ChecksumMode=ENABLED``: the object's stored checksum and its encryption (SSE-KMS and
SSE-C make its ETag opaque) come with it.

Every ranged GET carries ``IfMatch`` with the ETag HEAD reported at the start: if the object is replaced
meanwhile, S3 refuses the next range instead of handing out a blend of two versions
(:class:`~..core.errors.ObjectReplacedError`). An archived object (HEAD's storage class, or a GET answered
``InvalidObjectState``) is reported as needing a restore, never as a failure. A GET refused as changed (412)
or missing (404) while HEAD still shows the same ETag concludes nothing: the range is tried again, and in
the end the read fails as transient (verify again later), never as "needs restore".

Nothing is written to disk unless a sink is given. All S3 calls go through :meth:`S3Access.call`. No Airflow.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from botocore.exceptions import BotoCoreError, ClientError

from airflow_provider_kraken_s3.core.checksum import Checksum, Encryption, checksum_of, encryption_of
from airflow_provider_kraken_s3.core.deep_verify import needs_restore
from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    InvalidInputError,
    KrakenBackupError,
    ObjectReplacedError,
    PermanentBackupError,
    S3ErrorKind,
    S3TransientError,
    classify_s3_error,
)
from airflow_provider_kraken_s3.core.etag import normalize_etag
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.transfer.access import S3Access, error_code, error_status
from airflow_provider_kraken_s3.transfer.hashing import Digests
from airflow_provider_kraken_s3.transfer.pool import worker_pool
from airflow_provider_kraken_s3.transfer.remote import head_response
from airflow_provider_kraken_s3.transfer.stream_checksums import StreamChecksums, crc64nvme

#: Bytes per ranged GET: s3transfer's own chunk size, so S3 (and moto) see the same requests as a download.
RANGE_SIZE = 8 * MIB
#: Ranges held per concurrent request: one being fetched, one fetched and waiting for its turn.
RANGES_PER_WORKER = 2
#: Bytes read from a response body per call (the buffer is filled in place, nothing is concatenated).
READ_CHUNK = MIB
#: A range whose body broke off mid-stream (botocore retries only before the body) is fetched this often.
RANGE_ATTEMPTS = 3


@dataclass(frozen=True)
class ObjectHead:
    """What HEAD said about an object when a download started; ``quoted_etag`` is sent as ``IfMatch``."""

    key: str
    etag: str  # normalised (unquoted, lower case)
    quoted_etag: str  # as S3 sent it
    size: int
    storage_class: str | None = None
    restore: str | None = None
    archive_status: str | None = None
    #: the version read (the one the record vouches for), where the bucket keeps versions
    version_id: str | None = None
    #: the additional checksum S3 stores for the object (None where it keeps none)
    checksum: Checksum | None = None
    #: the encryption S3's answer declared: under SSE-KMS and SSE-C the ETag is no digest of the bytes
    encryption: Encryption = Encryption.NONE

    @property
    def etag_is_md5(self) -> bool:
        """Whether S3's ETag may be recomputed from the bytes (no encryption, or SSE-S3)."""
        return self.encryption.etag_is_md5

    @property
    def needs_restore(self) -> bool:
        return needs_restore(self.storage_class, self.restore, self.archive_status)


def head_object(access: S3Access, bucket: str, key: str, version_id: str | None = None) -> ObjectHead | None:
    """HEAD an object (``version_id``: that version of it) for a download: ETag, size and archive state;
    None when there is no such object or version."""
    response = head_response(access, bucket, key, version_id)
    if response is None:
        return None
    return ObjectHead(
        key=key,
        etag=normalize_etag(response["ETag"]),
        quoted_etag=response["ETag"],
        size=int(response["ContentLength"]),
        storage_class=response.get("StorageClass"),
        restore=response.get("Restore"),
        archive_status=response.get("ArchiveStatus"),
        version_id=version_id,
        checksum=checksum_of(response),
        encryption=encryption_of(response),
    )


@dataclass(frozen=True)
class DownloadResult:
    """One object read back: what S3 said at the start, and the digests of every byte (``start`` included).

    ``needs_restore``: the object is archived, nothing was read and the digests are unset.
    """

    bucket: str
    key: str
    head: ObjectHead
    md5: str | None
    etags: dict[int, str]
    bytes_fetched: int
    seconds: float
    needs_restore: bool = False
    #: the CRC64NVME of every byte (``start`` included); None when nothing was read (archived)
    crc64nvme: Checksum | None = None
    #: the CRC32/CRC32C at the part layout the download was asked for (None without one)
    at_layout: Checksum | None = None


@dataclass
class ObjectDownload:
    """Stream ``s3://bucket/key`` (as ``head`` describes it) into ``digests`` and, if given, ``sink``.

    :param digests: fed every byte in order; with ``start > 0`` it must already hold bytes ``[0, start)``
        (a restore re-hashes its partial file first), so the digests always cover the whole object.
    :param sink: written every byte from ``start`` on, in order (a file opened for writing at ``start``).
    :param checksums: fed every byte in order, like ``digests`` (with ``start > 0`` it must hold the first
        ``start`` bytes too); None: a fresh one computing the CRC64NVME from byte 0 (a continuation without
        them computes none).
    :param max_concurrency: ranged GETs in flight at once.
    :param ranges_per_worker: ranges held in memory per concurrent GET (memory bound:
        ``max_concurrency * ranges_per_worker * range_size`` bytes).
    :param cancel: set it from another thread to stop at the next chunk (:class:`BackupInterrupted`).
    :param progress: told of every range consumed, with its size in bytes.
    """

    access: S3Access
    bucket: str
    head: ObjectHead
    digests: Digests
    sink: BinaryIO | None = None
    start: int = 0
    checksums: StreamChecksums | None = None
    range_size: int = RANGE_SIZE
    max_concurrency: int = 4
    ranges_per_worker: int = RANGES_PER_WORKER
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: Callable[[int], None] | None = None
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    @property
    def target(self) -> str:
        return f"s3://{self.bucket}/{self.head.key}"

    def run(self) -> DownloadResult:
        started = time.monotonic()
        if self.head.needs_restore:
            return self._archived(started)
        if self.checksums is None and self.start == 0:
            self.checksums = StreamChecksums(self.head.size)
        if (
            not 0 <= self.start <= self.head.size
            or self.digests.offset != self.start
            or (self.checksums is not None and self.checksums.offset != self.start)
        ):
            raise InvalidInputError(
                f"{self.target}: cannot continue at byte {self.start} of {self.head.size} with digests of "
                f"{self.digests.offset} bytes"
            )
        if self.range_size < 1 or self.max_concurrency < 1 or self.ranges_per_worker < 1:
            raise InvalidInputError("range_size, max_concurrency and ranges_per_worker must be positive")
        ranges = [
            (offset, min(self.range_size, self.head.size - offset))
            for offset in range(self.start, self.head.size, self.range_size)
        ]
        fetched = self._fetch_in_order(ranges)
        if fetched is None:  # a GET said InvalidObjectState although HEAD did not show an archive tier
            return self._archived(started)
        return DownloadResult(
            bucket=self.bucket,
            key=self.head.key,
            head=self.head,
            md5=self.digests.md5,
            etags=self.digests.etags(),
            bytes_fetched=fetched,
            seconds=time.monotonic() - started,
            crc64nvme=self.checksums.crc64nvme if self.checksums is not None else None,
            at_layout=self.checksums.at_layout() if self.checksums is not None else None,
        )

    def _archived(self, started: float) -> DownloadResult:
        return DownloadResult(
            self.bucket, self.head.key, self.head, None, {}, 0, time.monotonic() - started, needs_restore=True
        )

    # ------------------------------------------------------------------ the pipeline

    def _fetch_in_order(self, ranges: list[tuple[int, int]]) -> int | None:
        """Fetch ``ranges`` concurrently, consume them in order; bytes fetched, or None if archived."""
        if not ranges:
            return 0
        window = min(len(ranges), self.max_concurrency * self.ranges_per_worker)
        free = [bytearray(min(self.range_size, self.head.size - self.start)) for _ in range(window)]
        pending: deque[tuple[Future[tuple[memoryview, int] | None], bytearray]] = deque()
        queued = 0
        fetched = 0
        # When this ends, the other ranges in flight stop at their next chunk and are waited for.
        with worker_pool(min(window, self.max_concurrency), "kraken-get", stop=self._stop) as pool:
            while True:
                while free and queued < len(ranges):
                    buffer = free.pop()
                    offset, length = ranges[queued]
                    pending.append((pool.submit(self._fetch, offset, length, buffer), buffer))
                    queued += 1
                if not pending:
                    return fetched
                future, buffer = pending.popleft()
                got = future.result()
                if got is None:
                    return None
                view, crc = got
                self.digests.update(view)
                if self.checksums is not None:
                    self.checksums.update(view, crc)
                if self.sink is not None:
                    self.sink.write(view)
                fetched += len(view)
                if self.progress is not None:
                    self.progress(len(view))
                free.append(buffer)
                if self.cancel.is_set():
                    raise BackupInterrupted(f"reading {self.target} was stopped after {fetched} bytes")

    def _fetch(self, offset: int, length: int, buffer: bytearray) -> tuple[memoryview, int] | None:
        """One range into ``buffer``, with its CRC64NVME computed on this thread; None when S3 says the
        object is archived. Retries broken bodies."""
        for attempt in range(1, RANGE_ATTEMPTS + 1):
            try:
                view = self._fetch_once(offset, length, memoryview(buffer)[:length])
                return None if view is None else (view, crc64nvme(view))
            except S3TransientError:
                if attempt == RANGE_ATTEMPTS or self._stopping():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _fetch_once(self, offset: int, length: int, view: memoryview) -> memoryview | None:
        self._check_stop()
        doing = f"reading bytes {offset}-{offset + length - 1} of {self.target}"
        try:
            response = self.access.call(
                "get_object",
                doing,
                none_on={S3ErrorKind.ARCHIVED},
                Bucket=self.bucket,
                Key=self.head.key,
                Range=f"bytes={offset}-{offset + length - 1}",
                IfMatch=self.head.quoted_etag,
                **({"VersionId": self.head.version_id} if self.head.version_id else {}),
            )
        except KrakenBackupError as error:
            refused = _refusal(error)
            if refused is None:
                raise
            self._look_again()
            raise S3TransientError(
                f"{doing}: S3 answered {refused}, yet HEAD still shows ETag {self.head.etag}; nothing was "
                "concluded about the object. Verify it again later (if this persists, the store may not honour "
                "IfMatch on ranged GETs as S3 does)."
            ) from error
        if response is None:  # archived, unless HEAD shows it deleted or replaced meanwhile
            self._look_again()
            return None
        body = response["Body"]
        try:
            if int(response.get("ContentLength", -1)) != length:
                raise PermanentBackupError(
                    f"{doing}: S3 answered {response.get('ContentLength')} bytes "
                    f"({response.get('ContentRange') or 'no Content-Range'}) for a range of {length}; the store "
                    "does not honour Range requests, which deep verification and restore need"
                )
            got = 0
            while got < length:
                self._check_stop()
                count = body.readinto(view[got : min(length, got + READ_CHUNK)])
                if not count:
                    break
                got += count
            if got != length or body.read(1):
                raise S3TransientError(f"{doing}: the response body ended after {got} of {length} bytes")
        except BotoCoreError as error:
            raise self.access.translate(error, doing) from error
        finally:
            body.close()
        return view

    def _look_again(self) -> None:
        """A GET refused as archived, changed or missing: raises if HEAD shows it deleted or replaced."""
        now = head_object(self.access, self.bucket, self.head.key, self.head.version_id)
        if now is None:
            raise ObjectReplacedError(
                f"{self.target} was deleted while it was being read; nothing was concluded about it. Check "
                "who deletes backup objects (a lifecycle rule, a person), then verify again."
            )
        if now.etag != self.head.etag:
            raise ObjectReplacedError(
                f"{self.target} was replaced while it was being read (ETag {self.head.etag} when the download "
                f"started, now {now.etag}); no bytes of the two versions were mixed and nothing was concluded. "
                "Verify it again to check the new version."
            )

    def _stopping(self) -> bool:
        return self._stop.is_set() or self.cancel.is_set()

    def _check_stop(self) -> None:
        if self.cancel.is_set():
            raise BackupInterrupted(f"reading {self.target} was stopped")
        if self._stop.is_set():
            raise BackupInterrupted(f"reading {self.target} was abandoned (another range failed)")


def _refusal(error: KrakenBackupError) -> str | None:
    """``412 PreconditionFailed`` or ``404`` when that is what S3 answered to ``error``'s request, else None."""
    answer = error.__cause__
    if not isinstance(answer, ClientError):
        return None
    status, code = error_status(answer), error_code(answer)
    if classify_s3_error(status, code) not in (S3ErrorKind.CHANGED, S3ErrorKind.NOT_FOUND):
        return None
    return f"{status} {code}".strip()


def download_object(
    access: S3Access,
    bucket: str,
    head: ObjectHead,
    *,
    part_sizes: Iterable[int] = (),
    sink: BinaryIO | None = None,
    **options: Any,
) -> DownloadResult:
    """Read a whole object (as HEAD described it) and hash it at ``part_sizes``; see :class:`ObjectDownload`."""
    digests = Digests(head.size, part_sizes)
    return ObjectDownload(access, bucket, head, digests, sink=sink, **options).run()


def run_per_object(
    sizes: list[int], job: Callable[[int], Any], *, range_size: int, max_concurrency: int
) -> list[Any]:
    """``job(i)`` for every object ``i`` of a set, results in order.

    Objects larger than one range run one after another, each with its own ``max_concurrency`` ranged GETs;
    objects of one range (the many small files of a Bruker ``.d`` folder) run ``max_concurrency`` at a time,
    since each costs a round trip rather than bandwidth. Either way at most ``max_concurrency`` requests are
    in flight. The first error is raised once the small objects already started have finished.
    """
    results: list[Any] = [None] * len(sizes)
    small = [i for i, size in enumerate(sizes) if size <= range_size]
    if len(small) > 1 and max_concurrency > 1:
        with worker_pool(max_concurrency, "kraken-object") as pool:  # after an error: only the started finish
            futures = {i: pool.submit(job, i) for i in small}
            for i, future in futures.items():
                results[i] = future.result()
    else:
        for i in small:
            results[i] = job(i)
    for i, size in enumerate(sizes):
        if size > range_size:
            results[i] = job(i)
    return results
