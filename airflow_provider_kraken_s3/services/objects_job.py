"""What deep verification and restore share: a job over every object of one RawFile's backup. No Airflow.

Both start alike — the RawFile's record as :mod:`..records.deep_verify` reads it, its bucket, the objects its
inventory names at the keys the backup used, and the bucket checked to exist — and run alike: object by object
through :func:`..transfer.download.run_per_object`, each read with parallel ranged GETs under the job's
settings and logged with its throughput. Each job (:mod:`.deep_verify`, :mod:`.restore`) adds what it does
with the bytes.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, TypeVar

from airflow_provider_kraken_s3.core.checksum import Checksum
from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.deep_verify import (
    DeepVerifyFinding,
    Downloaded,
    archived_finding,
    missing_finding,
)
from airflow_provider_kraken_s3.core.errors import InvalidInputError, PermanentBackupError
from airflow_provider_kraken_s3.core.etag import etag_part_count, parse_precomputed_etag
from airflow_provider_kraken_s3.core.inventory import BackupObject
from airflow_provider_kraken_s3.core.log import Log
from airflow_provider_kraken_s3.core.manifest import etag_info, recorded_backup
from airflow_provider_kraken_s3.core.part_layouts import CrcLayout, layout_from_parts
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.records import deep_verify as records
from airflow_provider_kraken_s3.transfer import remote
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.attributes import object_attributes
from airflow_provider_kraken_s3.transfer.buckets import check_bucket
from airflow_provider_kraken_s3.transfer.download import (
    RANGE_SIZE,
    DownloadResult,
    ObjectDownload,
    ObjectHead,
    head_object,
    run_per_object,
)
from airflow_provider_kraken_s3.transfer.hashing import Digests
from airflow_provider_kraken_s3.transfer.progress import kv
from airflow_provider_kraken_s3.transfer.stream_checksums import CRC32_FUNCTIONS, StreamChecksums

_log = logging.getLogger(__name__)

T = TypeVar("T")


class ObjectRow:
    """A report's line for one object (a dataclass with an enum ``outcome`` and ``seconds``), as JSON."""

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)  # every subclass is a dataclass
        return {**row, "outcome": row["outcome"].value, "seconds": round(row["seconds"], 3)}


@dataclass(frozen=True)
class RecordedBackup:
    """A RawFile's backup as its record describes it: the record as read, its bucket and its objects."""

    document: dict[str, Any]
    bucket: str
    objects: list[BackupObject]


@dataclass(kw_only=True)
class ObjectsJob:
    """The settings of a job over one RawFile's objects, and the steps every such job takes.

    :param max_concurrency: ranged GETs in flight (and objects of one range handled at once).
    :param range_size: bytes per ranged GET; memory stays below about ``2 * max_concurrency * range_size``.
    :param cancel: set it from another thread to stop (:class:`~..core.errors.BackupInterrupted`).
    :param progress: told of the bytes of every range (from several threads for a set of small objects).
    """

    access: S3Access
    raw_file_id: str
    max_concurrency: int = 4
    range_size: int = RANGE_SIZE
    cancel: threading.Event = field(default_factory=threading.Event)
    log: Log = _log
    progress: Callable[[int], None] | None = None

    def read_backup(self, nothing_to: str) -> RecordedBackup:
        """The record, its bucket and the objects it vouches for (its manifest: S3's ETags, part sizes and
        versions; for older records, alphakraken's ``s3_upload_path`` and ``file_info``); refuses a record
        naming no backup (``nothing_to`` says what there is then nothing of). The bucket is checked: a
        missing bucket is no proof that every object is missing."""
        document = records.read_record(self.raw_file_id)
        try:
            recorded = recorded_backup(self.raw_file_id, document)
        except InvalidInputError as error:
            raise InvalidInputError(f"{error}, so there is nothing {nothing_to}") from error
        objects = [
            BackupObject(
                path=item.path,
                key=item.key,
                size=item.size,
                md5=item.md5,
                precomputed=parse_precomputed_etag(value) if (value := etag_info(item)) else None,
                version_id=item.version_id,
                checksum=item.checksum,
            )
            for item in recorded.objects
        ]
        check_bucket(self.access, recorded.bucket)
        return RecordedBackup(document=document, bucket=recorded.bucket, objects=objects)

    def per_object(self, objects: Sequence[BackupObject], job: Callable[[BackupObject], T]) -> list[T]:
        """``job(object)`` for every object, results in order (small objects several at a time)."""
        return run_per_object(
            [item.size for item in objects],
            lambda i: job(objects[i]),
            range_size=self.range_size,
            max_concurrency=self.max_concurrency,
        )

    def readable_head(self, bucket: str, item: BackupObject) -> ObjectHead | DeepVerifyFinding:
        """HEAD the object: what to read it as, or the finding why it cannot be read (missing, archived)."""
        head = head_object(self.access, bucket, item.key, item.version_id)
        if head is None:
            return missing_finding(bucket, item.key)
        if head.needs_restore:
            return archived(bucket, head)
        return head

    def checksums_for(
        self, bucket: str, item: BackupObject, head: ObjectHead, part_size: int | None = None
    ) -> tuple[StreamChecksums, Checksum | None]:
        """What to compute while the object is read, and S3's stored checksum to compare it with.

        The CRC64NVME always. A 32-bit CRC (CRC32, CRC32C) that S3 stores or the record names is computed at
        the object's part layout: the part sizes ``GetObjectAttributes`` lists, else parts of ``part_size``
        (the part size known for the object's ETag) or of the size S3 gives for part 1. Where the layout stays
        unknown, nothing is computed for it and the verdict says the checksum proves nothing.
        """
        stored = head.checksum
        wanted = next(
            (c for c in (stored, item.checksum) if c is not None and c.algorithm in CRC32_FUNCTIONS), None
        )
        if wanted is None:
            return StreamChecksums(head.size), stored
        try:
            attributes = object_attributes(self.access, bucket, item.key, item.version_id)
        except PermanentBackupError as error:  # a store without the call, a policy without the permission
            self.log.warning("cannot read the part layout of s3://%s/%s: %s", bucket, item.key, error)
            attributes = None
        if attributes is not None and attributes.checksum is not None and stored is not None:
            stored = attributes.checksum  # HEAD may hide a composite's kind (moto drops its "-N")
            wanted = stored if stored.algorithm in CRC32_FUNCTIONS else wanted
        layout = None
        described = attributes is not None and attributes.checksum is not None
        multipart = not head.etag_is_md5 or etag_part_count(head.etag) is not None
        if wanted.full_object and (described or not multipart):
            layout = CrcLayout.whole(wanted.algorithm, head.size)  # HEAD alone may hide a composite's kind
        elif (
            not wanted.full_object and attributes is not None and sum(attributes.part_sizes) == head.size > 0
        ):
            layout = layout_from_parts(wanted.algorithm, attributes.part_sizes)
        elif not wanted.full_object:
            count = etag_part_count(head.etag) if head.etag_is_md5 else None
            if part_size is None and count:
                part_size = remote.part_size_from_s3(self.access, bucket, item.key, _as_remote(head))
            if part_size and count is not None and -(-head.size // part_size) == count:
                layout = CrcLayout.uniform(wanted.algorithm, head.size, part_size)
        return StreamChecksums(head.size, layout), stored

    def download(
        self,
        bucket: str,
        head: ObjectHead,
        digests: Digests,
        *,
        sink: BinaryIO | None = None,
        start: int = 0,
        checksums: StreamChecksums | None = None,
    ) -> DownloadResult:
        """Read an object (as ``head`` describes it) into ``digests`` and ``sink``, from byte ``start``.

        An object of one range is one GET: :meth:`per_object` already runs several of those at once.
        """
        return ObjectDownload(
            self.access,
            bucket,
            head,
            digests,
            sink=sink,
            start=start,
            checksums=checksums,
            range_size=self.range_size,
            max_concurrency=1 if head.size <= self.range_size else self.max_concurrency,
            cancel=self.cancel,
            progress=self.progress,
        ).run()

    def log_object(self, what: str, *, seconds: float, **fields: Any) -> None:
        """One line per object: ``fields`` (``bytes`` among them), its seconds and its MiB/s."""
        rate = fields["bytes"] / MIB / max(seconds, 1e-9)
        self.log.info("%s %s", what, kv(**fields, seconds=seconds, mib_s=rate))


def archived(bucket: str, head: ObjectHead) -> DeepVerifyFinding:
    """The finding for an object in an archive tier: restore it from there first."""
    return archived_finding(bucket, head.key, head.storage_class, head.restore)


def downloaded(
    digests: Digests,
    s3_etag: str,
    object_part_size: int | None = None,
    *,
    checksums: StreamChecksums | None = None,
    head: ObjectHead | None = None,
    stored_checksum: Checksum | None = None,
) -> Downloaded:
    """The digests of bytes read, in the words of the deep-verify verdicts (``s3_etag``: S3's ETag, or ""), with
    their checksums and, given the ``head`` they were read as, S3's stored checksum and encryption."""
    return Downloaded(
        size=digests.size,
        md5=digests.md5,
        etags=digests.etags(),
        s3_etag=s3_etag,
        object_part_size=object_part_size,
        crc64nvme=checksums.crc64nvme if checksums is not None else None,
        at_layout=checksums.at_layout() if checksums is not None else None,
        stored_checksum=stored_checksum,
        **({"encryption": head.encryption} if head is not None else {}),
    )


def _as_remote(head: ObjectHead) -> RemoteObject:
    return RemoteObject(head.etag, head.size, version_id=head.version_id)


E = TypeVar("E", bound=enum.Enum)


def tally(outcomes: Iterable[E], kinds: type[E]) -> str:
    """``"2 ok, 1 missing"``: how many of each kind, in the kinds' order, leaving out those that did not occur."""
    seen = list(outcomes)
    counts = ((sum(outcome is kind for outcome in seen), kind.value) for kind in kinds)
    return ", ".join(f"{n} {name}" for n, name in counts if n)
