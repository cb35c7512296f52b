"""Reconcile what attempts left behind: stuck records, and multipart uploads nobody will resume. No Airflow.

Two jobs, each safe to run at any time beside running backups:

1. **Stuck records.** A worker killed with SIGKILL (or an OOM kill, a lost node) leaves its RawFile
   ``upload_in_progress`` with a lease that is no longer renewed. Such records are moved to
   ``upload_failed`` with a reason saying which attempt it was, when its lease expired, and that the next
   run resumes its multipart uploads (``s3_uploads`` are kept). The write is conditional on the record being
   exactly as read (:func:`~..records.queries.fail_stuck`): an attempt that renews its lease in between
   wins, and a live lease is never touched. Records without a lease (written before leases existed) count
   as stuck once their ``s3_backup_updated_at`` is older than ``unleased_age``.
2. **Orphan multipart uploads.** Incomplete uploads hold storage (and cost) until aborted. An upload no
   RawFile references (``s3_uploads[].upload_id``) and older than ``orphan_age`` is listed; it is aborted
   only with ``abort=True``. Buckets: those given, plus every bucket a RawFile names. S3 is listed before
   the references are read, so an upload recorded meanwhile is seen as referenced (and a new one is young).
   Listing needs ``s3:ListBucketMultipartUploads`` (the backup never does), aborting
   ``s3:AbortMultipartUpload``; a denied bucket is reported with the permission to grant, and the others go on.

``dry_run=True`` changes nothing and reports what would be done. API::

    KrakenMongoHook(mongo_conn_id="kraken_mongo_default").connect()
    report = reconcile(KrakenS3Hook().access(), buckets=["alphakraken-p1234"], abort=False, dry_run=True)
    print(report.describe())
    sys.exit(0 if report.ok else 1)
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_kraken_s3.core.errors import (
    BucketAccessDeniedError,
    BucketNotFoundError,
    KrakenBackupError,
    RawFileNotFoundError,
    S3ErrorKind,
    S3TransientError,
)
from airflow_provider_kraken_s3.core.log import Log
from airflow_provider_kraken_s3.records import lease, queries
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.progress import kv

#: Incomplete uploads younger than this are left alone: an attempt may be starting or resuming them. Matches
#: the lifecycle rule the operator puts on buckets it creates (abort incomplete uploads after 7 days).
DEFAULT_ORPHAN_AGE = timedelta(days=7)
#: A record without a lease is stuck once its last status write is this old: far beyond an upload task's
#: recommended ``execution_timeout``, and such an attempt never wrote again while it uploaded.
DEFAULT_UNLEASED_AGE = timedelta(days=1)

LIST_UPLOADS_PERMISSION = "s3:ListBucketMultipartUploads"
ABORT_PERMISSION = "s3:AbortMultipartUpload"

_log = logging.getLogger(__name__)


class StuckAction(str, enum.Enum):
    FAILED = "failed"  # marked upload_failed
    WOULD_FAIL = "would_fail"  # dry run
    ALIVE = "alive"  # changed since it was read (its attempt renewed the lease, or finished): left alone
    UNKNOWN_AGE = "unknown_age"  # neither lease nor timestamp: nothing tells whether it is stuck; left alone


class OrphanAction(str, enum.Enum):
    LISTED = "listed"  # not aborted (abort=False, or aborting was denied: see the detail)
    ABORTED = "aborted"
    WOULD_ABORT = "would_abort"  # dry run with abort=True


@dataclass(frozen=True)
class StuckResult:
    """One record found stuck and what was done; ``details`` is what was (or would be) recorded, or why not."""

    raw_file_id: str
    action: StuckAction
    details: str


@dataclass(frozen=True)
class OrphanUpload:
    """An incomplete multipart upload no RawFile references, older than the orphan age."""

    bucket: str
    key: str
    upload_id: str
    initiated: datetime | None
    action: OrphanAction
    detail: str = ""


@dataclass
class ReconcileReport:
    """What reconcile found and did; ``ok`` when every step could be done (nothing denied or unreachable)."""

    dry_run: bool
    abort: bool
    orphan_age: timedelta
    stuck: list[StuckResult] = field(default_factory=list)
    orphans: list[OrphanUpload] = field(default_factory=list)
    buckets: list[str] = field(default_factory=list)  # buckets whose uploads were listed
    unlisted: list[str] = field(default_factory=list)  # buckets whose uploads could not be listed
    kept_uploads: int = 0  # incomplete uploads left alone: referenced by a RawFile, or young
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (stable field names), for ``--json`` output and XCom."""
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "abort": self.abort,
            "orphan_age_days": self.orphan_age / timedelta(days=1),
            "stuck": [
                {"raw_file_id": s.raw_file_id, "action": s.action.value, "details": s.details}
                for s in self.stuck
            ],
            "orphans": [
                {
                    "bucket": o.bucket,
                    "key": o.key,
                    "upload_id": o.upload_id,
                    "initiated": o.initiated.isoformat() if o.initiated else None,
                    "action": o.action.value,
                    "detail": o.detail,
                }
                for o in self.orphans
            ],
            "buckets": list(self.buckets),
            "unlisted_buckets": list(self.unlisted),
            "kept_uploads": self.kept_uploads,
            "problems": list(self.problems),
        }

    def describe(self) -> str:
        """A few lines for people: what was done (or would be, in a dry run), each item, and the problems."""
        counts = {action: sum(s.action is action for s in self.stuck) for action in StuckAction}
        failed = "would be marked" if self.dry_run else "marked"
        done = counts[StuckAction.WOULD_FAIL if self.dry_run else StuckAction.FAILED]
        lines = [
            "reconcile (DRY RUN: nothing was changed)" if self.dry_run else "reconcile",
            f"stuck uploads: {done} record(s) {failed} upload_failed, {counts[StuckAction.ALIVE]} alive again "
            f"(left alone), {counts[StuckAction.UNKNOWN_AGE]} of unknown age (left alone)",
            *(f"  {s.raw_file_id}: {s.action.value}: {s.details}" for s in self.stuck),
        ]
        orphan_counts = {action: sum(o.action is action for o in self.orphans) for action in OrphanAction}
        hint = "" if self.abort else "; abort=True (--abort-orphans) aborts them"
        if self.unlisted and not self.buckets:  # no count of orphans: none could be looked for
            lines.append(
                f"incomplete multipart uploads: NOT LISTED in any of the {len(self.unlisted)} bucket(s) "
                "(see the problem below)"
            )
        else:
            lines.append(
                f"incomplete multipart uploads in {len(self.buckets)} bucket(s): {len(self.orphans)} orphan(s) "
                f"older than {self.orphan_age / timedelta(days=1):g} day(s) — "
                f"{orphan_counts[OrphanAction.ABORTED]} aborted, {orphan_counts[OrphanAction.WOULD_ABORT]} would "
                f"be aborted, {orphan_counts[OrphanAction.LISTED]} listed{hint}; {self.kept_uploads} kept "
                f"(referenced by a RawFile, or younger)"
                + (f"; {len(self.unlisted)} bucket(s) not listed (see below)" if self.unlisted else "")
            )
        for o in self.orphans:
            when = f"{o.initiated:%Y-%m-%d %H:%M} UTC" if o.initiated else "unknown time"
            note = f" ({o.detail})" if o.detail else ""
            lines.append(f"  s3://{o.bucket}/{o.key} upload {o.upload_id} of {when}: {o.action.value}{note}")
        lines.extend(f"problem: {problem}" for problem in self.problems)
        lines.append("OK" if self.ok else f"NOT OK: {len(self.problems)} problem(s)")
        return "\n".join(lines)


@dataclass
class Reconciler:
    """Both reconcile jobs with one set of settings; :meth:`run` does both, each step can run alone.

    :param access: the S3 endpoint (only the orphan step uses it).
    :param buckets: buckets to look for orphan uploads in, besides every bucket a RawFile names.
    :param orphan_age: uploads initiated less long ago are left alone.
    :param unleased_age: a record without a lease is stuck when its ``s3_backup_updated_at`` is older.
    :param abort: abort orphan uploads (otherwise they are only listed).
    :param dry_run: change nothing; report what would be done.
    """

    access: S3Access
    buckets: Iterable[str] = ()
    orphan_age: timedelta = DEFAULT_ORPHAN_AGE
    unleased_age: timedelta = DEFAULT_UNLEASED_AGE
    abort: bool = False
    dry_run: bool = False
    log: Log = _log

    def run(self) -> ReconcileReport:
        report = self.new_report()
        self.fail_stuck(report)
        self.find_orphans(report)
        self.log.info(
            "reconcile summary %s",
            kv(
                dry_run=self.dry_run,
                stuck=len(report.stuck),
                orphans=len(report.orphans),
                aborted=sum(o.action is OrphanAction.ABORTED for o in report.orphans),
                kept_uploads=report.kept_uploads,
                problems=len(report.problems),
            ),
        )
        return report

    def new_report(self) -> ReconcileReport:
        return ReconcileReport(dry_run=self.dry_run, abort=self.abort, orphan_age=self.orphan_age)

    # ------------------------------------------------------------------ stuck records

    def fail_stuck(self, report: ReconcileReport) -> None:
        """Mark records stuck ``upload_in_progress`` failed (unless their attempt came back meanwhile)."""
        now = lease.server_now()  # leases expire by the database server's clock, not this worker's
        for record in queries.stuck_uploads(unleased_older_than=self.unleased_age, now=now):
            details = _stuck_reason(record, now)
            if self.dry_run:
                report.stuck.append(StuckResult(record.id, StuckAction.WOULD_FAIL, details))
                continue
            try:
                written = queries.fail_stuck(record, details, now=now)
            except RawFileNotFoundError:
                written = False  # deleted meanwhile: nothing stuck any more
            if written:
                self.log.warning("marked %s upload_failed: %s", record.id, details)
                report.stuck.append(StuckResult(record.id, StuckAction.FAILED, details))
            else:
                why = "the record changed since it was read (its attempt renewed the lease, or finished); left alone"
                self.log.info("not marking %s failed: %s", record.id, why)
                report.stuck.append(StuckResult(record.id, StuckAction.ALIVE, why))
        for raw_file_id in queries.in_progress_without_time():
            report.stuck.append(
                StuckResult(
                    raw_file_id,
                    StuckAction.UNKNOWN_AGE,
                    "upload_in_progress with neither a lease nor s3_backup_updated_at (another uploader's record): "
                    "nothing tells whether it is still working. Check it, then re-run its backup.",
                )
            )

    # ------------------------------------------------------------------ orphan uploads

    def find_orphans(self, report: ReconcileReport) -> None:
        """List (and with ``abort``, abort) unreferenced incomplete uploads older than ``orphan_age``."""
        cutoff = datetime.now(timezone.utc) - self.orphan_age
        buckets = sorted({*self.buckets, *queries.recorded_buckets()})
        listed: list[tuple[str, dict[str, Any]]] = []
        for position, bucket in enumerate(buckets):
            try:
                uploads = self._uploads(bucket, report)
            except S3TransientError as error:  # S3 did not answer: the other buckets would say the same
                report.unlisted.extend(buckets[position:])
                report.problems.append(
                    f"S3 could not be asked (endpoint {self.access.endpoint or 'AWS default'}, connection "
                    f"'{self.access.conn_id}'): {error}. The incomplete multipart uploads of "
                    f"{len(buckets) - position} bucket(s) were not listed; run reconcile again once S3 answers."
                )
                break
            if uploads is None:
                report.unlisted.append(bucket)
            else:
                report.buckets.append(bucket)
                listed.extend((bucket, upload) for upload in uploads)
        referenced = queries.referenced_upload_ids()  # after listing: see the module docstring
        for bucket, upload in listed:
            initiated = upload.get("Initiated")
            initiated = initiated.astimezone(timezone.utc) if isinstance(initiated, datetime) else None
            if upload["UploadId"] in referenced or (initiated is not None and initiated > cutoff):
                report.kept_uploads += 1
                continue
            report.orphans.append(self._orphan(bucket, upload["Key"], upload["UploadId"], initiated, report))

    def _uploads(self, bucket: str, report: ReconcileReport) -> list[dict[str, Any]] | None:
        """Every incomplete upload in ``bucket`` (all pages), or None when it cannot be listed (reported)."""
        uploads: list[dict[str, Any]] = []
        params: dict[str, Any] = {"Bucket": bucket}
        doing = f"listing the incomplete multipart uploads of s3://{bucket}"
        try:
            while True:
                response = self.access.call(
                    "list_multipart_uploads", doing, none_on={S3ErrorKind.DENIED}, **params
                )
                if response is None:
                    report.problems.append(
                        f"{doing} was denied (connection '{self.access.conn_id}'): grant {LIST_UPLOADS_PERMISSION} "
                        f"on arn:aws:s3:::{bucket} (and {ABORT_PERMISSION} on arn:aws:s3:::{bucket}/* to abort "
                        "orphans), or check the credentials. The backup itself never needs them."
                    )
                    return None
                uploads.extend(response.get("Uploads", []))
                key_marker, id_marker = response.get("NextKeyMarker"), response.get("NextUploadIdMarker")
                if not response.get("IsTruncated") or not (key_marker or id_marker):
                    return uploads
                params.update(KeyMarker=key_marker or "", UploadIdMarker=id_marker or "")
        except BucketNotFoundError:
            report.problems.append(f"bucket {bucket} does not exist; its uploads were not listed")
        except S3TransientError:
            if uploads:  # a later page failed: this bucket only
                report.problems.append(
                    f"could not list all the incomplete multipart uploads of s3://{bucket}"
                )
                return None
            raise
        except KrakenBackupError as error:
            report.problems.append(
                f"could not list the incomplete multipart uploads of s3://{bucket}: {error}"
            )
        return None

    def _orphan(
        self, bucket: str, key: str, upload_id: str, initiated: datetime | None, report: ReconcileReport
    ) -> OrphanUpload:
        def orphan(action: OrphanAction, detail: str = "") -> OrphanUpload:
            return OrphanUpload(bucket, key, upload_id, initiated, action, detail)

        if not self.abort:
            return orphan(OrphanAction.LISTED)
        if self.dry_run:
            return orphan(OrphanAction.WOULD_ABORT)
        doing = f"aborting upload {upload_id} of s3://{bucket}/{key}"
        try:
            self.access.call(
                "abort_multipart_upload",
                doing,
                none_on={S3ErrorKind.NO_SUCH_UPLOAD, S3ErrorKind.NOT_FOUND},  # gone already: as good
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
            )
        except BucketAccessDeniedError:
            report.problems.append(
                f"{doing} was denied (connection '{self.access.conn_id}'): grant {ABORT_PERMISSION} on "
                f"arn:aws:s3:::{bucket}/*, or check the credentials"
            )
            return orphan(OrphanAction.LISTED, f"abort denied: needs {ABORT_PERMISSION}")
        except KrakenBackupError as error:
            report.problems.append(f"{doing} failed: {error}")
            return orphan(OrphanAction.LISTED, f"abort failed: {error}")
        self.log.warning("aborted orphan multipart upload %s of s3://%s/%s", upload_id, bucket, key)
        return orphan(OrphanAction.ABORTED)


def reconcile(access: S3Access, **settings: Any) -> ReconcileReport:
    """Both jobs, with :class:`Reconciler`'s settings (``buckets``, ``orphan_age``, ``abort``, ``dry_run``, …)."""
    return Reconciler(access, **settings).run()


def _stuck_reason(record: queries.StuckRecord, now: datetime) -> str:
    """The recorded reason: which attempt, since when, and what happens next."""
    since = f"{record.since:%Y-%m-%d %H:%M:%S} UTC" if record.since else "an unknown time"
    if record.lease_owner:
        what = (
            f"attempt {record.lease_owner} stopped renewing its lease, which expired at {since} (its worker died "
            "or was killed)"
        )
    else:
        what = (
            f"upload_in_progress since {since} without a lease (an attempt from before leases, which stopped)"
        )
    kept = (
        f"its {record.uploads} multipart upload(s) are kept and the next backup run resumes them"
        if record.uploads
        else "the next backup run starts it again"
    )
    return (
        f"marked failed by reconcile at {now:%Y-%m-%d %H:%M:%S} UTC: {what}; {kept}. Clear the upload task "
        "(or trigger the backup again) to finish it."
    )
