"""Deep verification of RawFile backups: download every object, hash it, compare with the inventory. No Airflow.

What a HEAD cannot see — bytes that rotted or were rewritten behind the backup's back while S3's ETag stayed
— only reading the bytes can. :func:`deep_verify_raw_file` does that for one raw file (a single file or a
whole ``.d``/``.wiff`` set): for each object it HEADs it (missing? archived?), streams it through
:mod:`..transfer.download` (parallel ranged GETs, nothing written to disk) and judges the digests with
:func:`..core.deep_verify.judge_download`. The raw file's outcome is the worst of its objects' and is recorded on
the RawFile by :mod:`..records.deep_verify` (conditional: only onto the record that was verified). A difference
is reported and recorded, never raised: the report is the answer.

:func:`verify_sample` is the periodic fixity check: it picks a fraction or a byte budget of ``upload_done``
raw files, never-verified and longest-unverified first, and verifies each.

Callers connect MongoDB first (``KrakenMongoHook(...).connect()``) and pass an :class:`S3Access`
(``KrakenS3Hook(...).access()``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.deep_verify import (
    DeepVerifyFinding,
    DeepVerifyOutcome,
    judge_download,
    select_sample,
    worst,
)
from airflow_provider_kraken_s3.core.errors import BackupInterrupted, KrakenBackupError, ObjectReplacedError
from airflow_provider_kraken_s3.core.etag import etag_part_count
from airflow_provider_kraken_s3.core.inventory import BackupObject
from airflow_provider_kraken_s3.core.log import Log
from airflow_provider_kraken_s3.core.part_layouts import candidate_part_sizes
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.records import deep_verify as records
from airflow_provider_kraken_s3.services.objects_job import ObjectRow, ObjectsJob, archived, downloaded, tally
from airflow_provider_kraken_s3.transfer import remote
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.download import RANGE_SIZE, ObjectHead
from airflow_provider_kraken_s3.transfer.hashing import Digests
from airflow_provider_kraken_s3.transfer.progress import kv

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ObjectReport(ObjectRow):
    """One object's deep verification: what was read and what it showed."""

    key: str
    path: str
    outcome: DeepVerifyOutcome
    bytes: int  # bytes downloaded (0 when missing or archived)
    seconds: float
    detail: str
    proof: str = ""  # what the bytes were proven against: "md5+checksum+etag", "md5+checksum", ...


@dataclass(frozen=True)
class DeepVerifyReport:
    """One raw file's deep verification.

    :param outcome: the worst outcome of its objects (``unverified`` when it could not be checked at all).
    :param recorded: whether the outcome was written on the RawFile; ``record_note`` says what was written,
        or why not.
    """

    raw_file_id: str
    bucket: str | None
    outcome: DeepVerifyOutcome
    objects: tuple[ObjectReport, ...]
    recorded: bool
    record_note: str
    seconds: float
    verified_at: datetime

    @property
    def ok(self) -> bool:
        return self.outcome is DeepVerifyOutcome.OK

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.objects)

    def problems(self) -> list[str]:
        """The details of every object that is not OK, in words a data steward can act on."""
        return [item.detail for item in self.objects if item.outcome is not DeepVerifyOutcome.OK]

    def summary(self) -> str:
        shown = tally((item.outcome for item in self.objects), DeepVerifyOutcome)
        return (
            f"raw file {self.raw_file_id!r}: {self.outcome.value} ({shown or 'no objects'}; "
            f"{self.bytes / MIB:.1f} MiB read in {self.seconds:.1f} s); {self.record_note}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "raw_file_id": self.raw_file_id,
            "bucket": self.bucket,
            "outcome": self.outcome.value,
            "objects": [item.as_dict() for item in self.objects],
            "recorded": self.recorded,
            "record_note": self.record_note,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "verified_at": self.verified_at.isoformat(),
        }

    @classmethod
    def unverified(cls, raw_file_id: str, reason: str, seconds: float = 0.0) -> DeepVerifyReport:
        """A raw file that could not be checked at all (its record, S3 or MongoDB failed us)."""
        return cls(
            raw_file_id=raw_file_id,
            bucket=None,
            outcome=DeepVerifyOutcome.UNVERIFIED,
            objects=(),
            recorded=False,
            record_note=f"not verified: {reason}",
            seconds=seconds,
            verified_at=datetime.now(timezone.utc),
        )


@dataclass(kw_only=True)
class DeepVerification(ObjectsJob):
    """Deep-verify one RawFile's backup; see :func:`deep_verify_raw_file` for the parameters."""

    record: bool = True

    def run(self) -> DeepVerifyReport:
        started = time.monotonic()
        backup = self.read_backup("in S3 to verify")
        document, bucket, objects = backup.document, backup.bucket, backup.objects
        self.log.info(
            "deep verify start %s",
            kv(
                raw_file=self.raw_file_id,
                bucket=bucket,
                objects=len(objects),
                bytes=sum(o.size for o in objects),
            ),
        )
        reports = self.per_object(objects, lambda item: self._verify_object(bucket, item))
        outcome = worst(report.outcome for report in reports)
        verified_at = datetime.now(timezone.utc)
        recorded, note = self._record(document, bucket, outcome, reports, verified_at)
        report = DeepVerifyReport(
            raw_file_id=self.raw_file_id,
            bucket=bucket,
            outcome=outcome,
            objects=tuple(reports),
            recorded=recorded,
            record_note=note,
            seconds=time.monotonic() - started,
            verified_at=verified_at,
        )
        log = self.log.info if report.ok else self.log.warning
        log(
            "deep verify summary %s",
            kv(
                raw_file=self.raw_file_id,
                outcome=outcome.value,
                objects=len(reports),
                bytes=report.bytes,
                seconds=report.seconds,
                recorded=recorded,
            ),
        )
        for problem in report.problems():
            self.log.warning("deep verify: %s", problem)
        return report

    # ------------------------------------------------------------------ one object

    def _verify_object(self, bucket: str, item: BackupObject) -> ObjectReport:
        started = time.monotonic()
        finding, fetched = self._judge(bucket, item)
        report = ObjectReport(
            key=item.key,
            path=item.path,
            outcome=finding.outcome,
            bytes=fetched,
            seconds=time.monotonic() - started,
            detail=finding.reason,
            proof="+".join(finding.proofs),
        )
        self.log_object(
            "deep verify",
            key=item.key,
            outcome=report.outcome.value,
            proof=report.proof or "-",
            bytes=report.bytes,
            seconds=report.seconds,
        )
        return report

    def _judge(self, bucket: str, item: BackupObject) -> tuple[DeepVerifyFinding, int]:
        head = self.readable_head(bucket, item)
        if isinstance(head, DeepVerifyFinding):
            return head, 0
        part_sizes, known = self.part_sizes(bucket, item, head)
        digests = Digests(head.size, part_sizes)
        checksums, stored = self.checksums_for(bucket, item, head, known)
        try:
            result = self.download(bucket, head, digests, checksums=checksums)
        except ObjectReplacedError as error:
            return DeepVerifyFinding(DeepVerifyOutcome.UNVERIFIED, str(error)), 0
        if result.needs_restore:
            return archived(bucket, head), 0
        got = downloaded(digests, head.etag, known, checksums=checksums, head=head, stored_checksum=stored)
        return judge_download(bucket, item, got), result.bytes_fetched

    def part_sizes(self, bucket: str, item: BackupObject, head: ObjectHead) -> tuple[set[int], int | None]:
        """The part sizes to hash the object at, and the one known to be its own (if any).

        The inventory's part size always (its ETag is compared); when S3's ETag has a part count that part
        size does not give, S3 is asked for the object's part size (HEAD ``partNumber=1``), and where it
        cannot tell, the common part sizes that give that count are hashed in the same pass.
        """
        count = etag_part_count(head.etag) if head.etag_is_md5 else None  # an opaque ETag tells no parts
        sizes: set[int] = set()
        known = None
        if item.precomputed is not None:
            sizes.add(item.precomputed.part_size)
            if count is not None and -(-head.size // item.precomputed.part_size) == count:
                known = item.precomputed.part_size
        if count is not None and count > 1 and known is None:
            known = remote.part_size_from_s3(
                self.access, bucket, item.key, RemoteObject(head.etag, head.size)
            )
            sizes.update([known] if known else candidate_part_sizes(head.size, count))
        return sizes, known

    # ------------------------------------------------------------------ the record

    def _record(
        self,
        document: dict[str, Any],
        bucket: str,
        outcome: DeepVerifyOutcome,
        reports: list[ObjectReport],
        at: datetime,
    ) -> tuple[bool, str]:
        if not self.record:
            return False, "not recorded (record=False)"
        if outcome is DeepVerifyOutcome.UNVERIFIED:
            return False, "not recorded: some objects could not be verified this time; run it again"
        file_info = document.get("file_info") or {}
        if outcome.proves_record_wrong:
            details = deep_verify_details(self.raw_file_id, reports, at)
            written = records.record_proven_wrong(
                self.raw_file_id,
                bucket=bucket,
                file_info=file_info,
                outcome=outcome,
                details=details,
                at=at,
                document=document,
            )
            note = "recorded: backup_status upload_done -> upload_failed"
        else:
            written = records.record_outcome(
                self.raw_file_id,
                bucket=bucket,
                file_info=file_info,
                outcome=outcome,
                at=at,
                document=document,
            )
            note = f"recorded: s3_verify_outcome={outcome.value}"
        if written:
            return True, note
        why = records.why_not_recorded(self.raw_file_id, bucket=bucket, file_info=file_info)
        self.log.warning("deep verify of %s not recorded: %s", self.raw_file_id, why)
        return False, f"not recorded: {why}"


def deep_verify_details(raw_file_id: str, reports: list[ObjectReport], at: datetime) -> str:
    """``s3_backup_details`` for a backup proven wrong: what differs, and what to do."""
    wrong = [item.detail for item in reports if item.outcome.proves_record_wrong]
    return (
        f"deep verification at {at:%Y-%m-%d %H:%M:%S} UTC downloaded the backup of {raw_file_id!r} and found "
        f"{len(wrong)} of {len(reports)} object(s) not matching the inventory: {'; '.join(wrong)}. The record "
        "no longer says upload_done, so nothing deletes the instrument's copy on its strength; run the backup "
        "again from a copy matching the inventory."
    )


def deep_verify_raw_file(
    access: S3Access,
    raw_file_id: str,
    *,
    record: bool = True,
    max_concurrency: int = 4,
    range_size: int = RANGE_SIZE,
    cancel: threading.Event | None = None,
    log: Log | None = None,
    progress: Callable[[int], None] | None = None,
) -> DeepVerifyReport:
    """Download and hash every object of a RawFile's backup and compare it with the inventory.

    Never raises because the backup differs, is missing or is archived: the report says so (and, with
    ``record``, the RawFile: see :mod:`..records.deep_verify`). An object replaced while it was read is
    ``unverified`` (nothing is recorded).

    ``max_concurrency``, ``range_size``, ``cancel`` and ``progress``: see :class:`~.objects_job.ObjectsJob`.

    :raises InvalidInputError: the record has no bucket or an unreadable inventory.
    :raises KrakenBackupError: S3 or MongoDB failed (access denied, unreachable, ...): nothing was concluded.
    """
    return DeepVerification(
        access=access,
        raw_file_id=raw_file_id,
        record=record,
        max_concurrency=max_concurrency,
        range_size=range_size,
        cancel=cancel or threading.Event(),
        log=log or _log,
        progress=progress,
    ).run()


@dataclass(frozen=True)
class SampleReport:
    """One periodic fixity run: how many raw files were eligible, and each chosen one's report."""

    candidates: int
    reports: tuple[DeepVerifyReport, ...]

    @property
    def outcome(self) -> DeepVerifyOutcome:
        return worst(report.outcome for report in self.reports)

    @property
    def bytes(self) -> int:
        return sum(report.bytes for report in self.reports)

    def of(self, outcome: DeepVerifyOutcome) -> list[DeepVerifyReport]:
        return [report for report in self.reports if report.outcome is outcome]

    def summary(self) -> str:
        shown = tally((report.outcome for report in self.reports), DeepVerifyOutcome)
        return (
            f"deep-verified {len(self.reports)} of {self.candidates} upload_done raw file(s), "
            f"{self.bytes / MIB:.1f} MiB: {shown or 'nothing to do'}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "outcome": self.outcome.value,
            "bytes": self.bytes,
            "reports": [report.as_dict() for report in self.reports],
        }


def verify_sample(
    access: S3Access,
    *,
    fraction: float | None = None,
    byte_budget: int | None = None,
    project_id: str | None = None,
    instrument_id: str | None = None,
    record: bool = True,
    cancel: threading.Event | None = None,
    log: Log | None = None,
    **options: Any,
) -> SampleReport:
    """Periodic fixity: deep-verify a fraction or a byte budget of ``upload_done`` raw files, oldest first.

    Raw files never deep-verified come first, then those verified longest ago (``s3_verified_at``), so
    successive runs cover the whole archive. A raw file that cannot be verified (S3 or MongoDB trouble, a bad
    inventory) is reported ``unverified`` and the run goes on with the next. ``options`` are passed to
    :func:`deep_verify_raw_file` (``max_concurrency``, ``range_size``, ``progress``).
    """
    log = log or _log
    cancel = cancel or threading.Event()
    candidates = records.sampling_candidates(project_id=project_id, instrument_id=instrument_id)
    chosen = select_sample(candidates, fraction=fraction, byte_budget=byte_budget)
    log.info(
        "deep verify sample %s",
        kv(
            candidates=len(candidates),
            chosen=len(chosen),
            bytes=sum(c.size for c in chosen),
            fraction=fraction if fraction is not None else "none",
            byte_budget=byte_budget if byte_budget is not None else "none",
        ),
    )
    reports = []
    for candidate in chosen:
        if cancel.is_set():
            break
        started = time.monotonic()
        try:
            report = deep_verify_raw_file(
                access, candidate.raw_file_id, record=record, cancel=cancel, log=log, **options
            )
        except BackupInterrupted:
            raise
        except KrakenBackupError as error:
            log.warning("deep verify of %s failed: %s", candidate.raw_file_id, error)
            report = DeepVerifyReport.unverified(
                candidate.raw_file_id, f"{type(error).__name__}: {error}", time.monotonic() - started
            )
        reports.append(report)
    result = SampleReport(candidates=len(candidates), reports=tuple(reports))
    log.info("%s", result.summary())
    return result
