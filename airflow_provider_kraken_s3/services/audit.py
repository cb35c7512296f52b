"""Audit recorded backups against S3: is every ``upload_done`` raw file still there, as recorded? No Airflow.

For each matching record (:func:`~..records.queries.done_records`), S3 is asked once: a listing of the set's
folder for a ``.d`` folder or ``.wiff`` set (which also shows objects the inventory does not name), a HEAD
(``ChecksumMode=ENABLED``: the stored checksum and the encryption come with it) for a single object. A
listing carries no checksum and no encryption, so a set's object is asked about once more where the listing
cannot settle it: ``GetObjectAttributes`` where the record names a checksum (S3's stored one decides), a HEAD
where the ETag rule does not prove it (an encrypted object's opaque ETag is then not called different). Records are checked in parallel by a bounded pool of threads, with a bounded number of
records read ahead, so memory stays flat however many records match. The verdict for each object is
:mod:`airflow_provider_kraken_s3.core.audit` (the sensor's proof rule); nothing is downloaded and nothing is
written, to S3 or to MongoDB.

API::

    access = KrakenS3Hook(aws_conn_id="aws_default").access()
    KrakenMongoHook(mongo_conn_id="kraken_mongo_default").connect()

    report = run_audit(access, RecordFilter(project_ids=("P1234",)))
    print(render_table(report.findings, report.summary))      # or render_json_lines(...)
    sys.exit(0 if report.ok else 1)

    # streaming, e.g. for a progress bar or JSON lines as they come:
    summary = AuditSummary()
    for audit in iter_audit(access, done_records(RecordFilter())):
        summary.add(audit)
        ...

A record whose S3 request fails (network, throttling, denied access) is reported as *not checked* (kind
``unchecked``) and the audit goes on; a missing bucket makes every object of the record *missing*. Only
MongoDB trouble ends the audit (:class:`~..core.errors.MongoUnavailableError`, transient).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from airflow_provider_kraken_s3.core.audit import (
    AuditFinding,
    AuditSummary,
    AuditTarget,
    RecordAudit,
    bucket_missing,
    compare,
    needs_a_closer_look,
    not_checked,
    plan_audit,
)
from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.errors import BucketNotFoundError, KrakenBackupError
from airflow_provider_kraken_s3.core.log import Log
from airflow_provider_kraken_s3.core.proof import checksums_agree
from airflow_provider_kraken_s3.core.verdict import RawFileRecord
from airflow_provider_kraken_s3.records.queries import DEFAULT_BATCH_SIZE, RecordFilter, done_records
from airflow_provider_kraken_s3.transfer import remote
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.attributes import head_as_recorded, object_attributes
from airflow_provider_kraken_s3.transfer.listing import list_prefix
from airflow_provider_kraken_s3.transfer.progress import kv

#: Records checked at once. Each holds one HTTP connection (the hook's pool has 32) and, for a set, its
#: listing; S3 answers HEADs in tens of milliseconds, so a few threads keep thousands of records a minute going.
DEFAULT_MAX_WORKERS = 8

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditReport:
    """Every finding (ok ones too, unless left out) and the summary; ``ok`` when nothing is wrong."""

    findings: tuple[AuditFinding, ...]
    summary: AuditSummary

    @property
    def ok(self) -> bool:
        return self.summary.ok


def check_record(access: S3Access, record: RawFileRecord) -> RecordAudit:
    """Audit one record: plan, one listing or HEADs, compare. S3 errors become findings, never exceptions."""
    planned = plan_audit(record)
    if isinstance(planned, RecordAudit):
        return planned
    try:
        found = _ask_s3(access, planned)
    except BucketNotFoundError as error:
        return bucket_missing(planned, f"bucket {planned.bucket} does not exist ({error})")
    except KrakenBackupError as error:  # transient trouble, denied access: this record only
        return not_checked(planned, str(error))
    return compare(planned, found)


def _ask_s3(access: S3Access, target: AuditTarget) -> dict[str, RemoteObject | None]:
    if not target.folder:
        return {
            item.key: head_as_recorded(access, target.bucket, item.key, item.checksum)
            for item in target.objects
        }
    found: dict[str, RemoteObject | None] = dict(list_prefix(access, target.bucket, target.folder))
    for item in target.objects:
        listed = found.get(item.key)
        if listed is None or not needs_a_closer_look(item, listed):
            continue
        if item.checksum is not None:
            attributes = object_attributes(access, target.bucket, item.key)
            if attributes is None:  # deleted since the listing
                found[item.key] = None
                continue
            if checksums_agree(item.checksum, attributes.checksum) is not None:
                found[item.key] = RemoteObject(
                    attributes.etag or listed.etag,
                    attributes.size,
                    version_id=attributes.version_id,
                    checksum=attributes.checksum,
                )
                continue
        found[item.key] = remote.head(access, target.bucket, item.key)
    return found


def iter_audit(
    access: S3Access, records: Iterable[RawFileRecord], *, max_workers: int = DEFAULT_MAX_WORKERS
) -> Iterator[RecordAudit]:
    """Audit each record, ``max_workers`` at a time, yielding results in the order of ``records``.

    At most ``2 × max_workers`` records are read ahead of the one yielded, so a slow consumer or millions of
    records never pile up in memory. Closing the iterator early cancels what has not started.
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers}")
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="kraken-audit")
    pending: deque[Future[RecordAudit]] = deque()
    try:
        for record in records:
            pending.append(pool.submit(check_record, access, record))
            if len(pending) >= 2 * max_workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_audit(
    access: S3Access,
    record_filter: RecordFilter | None = None,
    *,
    max_workers: int = DEFAULT_MAX_WORKERS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    keep_ok: bool = True,
    on_record: Callable[[RecordAudit], None] | None = None,
    log: Log | None = None,
) -> AuditReport:
    """Audit every ``upload_done`` record matching ``record_filter`` (all when None).

    :param keep_ok: keep the ok findings in the report (False: only problems, for very large audits).
    :param on_record: called with each record's result as it comes (progress, streaming output).
    :param log: where a line per record with problems and the summary line go.
    """
    log = log or _log
    summary = AuditSummary()
    findings: list[AuditFinding] = []
    records = done_records(record_filter, batch_size=batch_size)
    for audit in iter_audit(access, records, max_workers=max_workers):
        summary.add(audit)
        findings.extend(finding for finding in audit.findings if keep_ok or not finding.ok)
        if not audit.ok:
            problems = [f for f in audit.findings if not f.ok]
            log.warning(
                "audit: %s has %d problem(s): %s",
                audit.raw_file_id,
                len(problems),
                ", ".join(f"{f.kind.value} {f.key or '(record)'}" for f in problems),
            )
        if on_record is not None:
            on_record(audit)
    log.info("audit summary %s", kv(**summary.as_dict()))
    return AuditReport(findings=tuple(findings), summary=summary)
