"""Read queries over RawFiles for the audit and reconcile jobs, and reconcile's one conditional write.

The backup reads and writes one RawFile at a time (:mod:`.store`); audit and reconcile look across the whole
collection. Rules, and why:

- **Only the fields a job needs** are read (projections): a RawFile of a large ``.d`` folder carries an
  inventory of thousands of entries, and the reconcile queries need none of it.
- **Pages by ``_id``**, not one long cursor: an audit asks S3 about each record while it reads, and a real
  MongoDB closes a cursor left idle for ten minutes. Each page is a fresh query after the last ``_id`` seen.
- **Reconcile never touches a live attempt.** :func:`fail_stuck` writes only if the record is still exactly
  as it was read: still ``upload_in_progress``, the same lease owner, the same (expired) expiry. An attempt
  that renewed its lease in between changed the expiry, so the write finds nothing to match and the attempt
  wins. ``s3_uploads`` stay: the next attempt resumes those multipart uploads.

Call ``KrakenMongoHook(...).connect()`` first, as for :mod:`.store`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.layout import FALLBACK_PROJECT_ID
from airflow_provider_kraken_s3.core.manifest import parse_upload_path
from airflow_provider_kraken_s3.core.verdict import RawFileRecord
from airflow_provider_kraken_s3.records import lease, store
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile

#: Records per page: small enough that a page is read in one round trip, large enough that paging is rare.
DEFAULT_BATCH_SIZE = 500

#: The fields of a :class:`~..core.verdict.RawFileRecord` the audit needs (``_id`` comes with every read).
_AUDIT_FIELDS = (
    "backup_status",
    "s3_bucket",
    "file_info",
    "project_id",
    "instrument_id",
    "created_at",
    "s3_upload_path",
    "s3_manifest",
)


# --------------------------------------------------------------------------- audit: upload_done records


@dataclass(frozen=True)
class RecordFilter:
    """Which records to look at: any of ``project_ids`` (all when empty), any of ``instrument_ids``, and
    ``created_at`` in ``[created_from, created_before)``. Naive datetimes are read as UTC, as MongoDB does."""

    project_ids: tuple[str, ...] = ()
    instrument_ids: tuple[str, ...] = ()
    created_from: datetime | None = None
    created_before: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("project_ids", "instrument_ids"):
            values = getattr(self, name)
            if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
                raise InvalidInputError(f"{name} must be a tuple of non-empty strings, got {values!r}")
        for name in ("created_from", "created_before"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, datetime):
                raise InvalidInputError(f"{name} must be a datetime (UTC), got {value!r}")
        start, end = self.created_from, self.created_before
        if start is not None and end is not None and _utc(start) >= _utc(end):
            raise InvalidInputError(
                f"created_from ({start}) is not before created_before ({end}): no record can match"
            )

    def query(self) -> dict[str, Any]:
        """The MongoDB filter for these conditions (empty: every record)."""
        query: dict[str, Any] = {}
        if self.project_ids:
            wanted: list[str | None] = list(self.project_ids)
            if FALLBACK_PROJECT_ID in wanted:  # no project id (old records) is the fallback project
                wanted.append(None)
            query["project_id"] = {"$in": wanted}
        if self.instrument_ids:
            query["instrument_id"] = {"$in": list(self.instrument_ids)}
        created: dict[str, datetime] = {}
        if self.created_from is not None:
            created["$gte"] = _utc(self.created_from)
        if self.created_before is not None:
            created["$lt"] = _utc(self.created_before)
        if created:
            query["created_at"] = created
        return query


def done_records(
    record_filter: RecordFilter | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> Iterator[RawFileRecord]:
    """Every ``upload_done`` record matching ``record_filter``, in ``_id`` order, read ``batch_size`` at a time."""
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be at least 1, got {batch_size}")
    query = {"backup_status": BackupStatus.DONE, **(record_filter or RecordFilter()).query()}
    projection = dict.fromkeys(_AUDIT_FIELDS, 1)
    last: str | None = None
    while True:
        page_query = query if last is None else {**query, "_id": {"$gt": last}}
        with store.mongo_errors("listing upload_done records"):
            page = list(_collection().find(page_query, projection).sort("_id", 1).limit(batch_size))
        for document in page:
            yield _audit_record(document)
        if len(page) < batch_size:
            return
        last = page[-1]["_id"]


def _audit_record(document: Mapping[str, Any]) -> RawFileRecord:
    created_at = document.get("created_at")
    return RawFileRecord(
        id=document["_id"],
        backup_status=document.get("backup_status"),
        s3_bucket=document.get("s3_bucket"),
        file_info=document.get("file_info"),
        project_id=document.get("project_id"),
        instrument_id=document.get("instrument_id"),
        created_at=_utc(created_at) if isinstance(created_at, datetime) else None,
        s3_upload_path=document.get("s3_upload_path"),
        s3_manifest=document.get("s3_manifest") or None,
    )


# --------------------------------------------------------------------------- reconcile: stuck records


@dataclass(frozen=True)
class StuckRecord:
    """A record left ``upload_in_progress`` by an attempt that is gone, exactly as it was read.

    ``lease_expires_at`` and ``updated_at`` are kept as stored (naive UTC from pymongo): :func:`fail_stuck`
    matches them exactly, so the write happens only if nothing changed since.
    """

    id: str
    lease_owner: str | None
    lease_expires_at: datetime | None
    updated_at: datetime | None
    uploads: int  # entries in s3_uploads: multipart uploads the next attempt resumes

    @property
    def since(self) -> datetime | None:
        """When the attempt was last known alive (UTC): its lease's expiry, or the last status write."""
        moment = self.lease_expires_at if self.lease_owner else self.updated_at
        return _utc(moment) if moment is not None else None


def stuck_uploads(*, unleased_older_than: timedelta, now: datetime | None = None) -> list[StuckRecord]:
    """Records ``upload_in_progress`` whose lease expired, or that have no lease and whose
    ``s3_backup_updated_at`` is older than ``unleased_older_than`` (written before leases existed).

    A live lease never matches: its expiry lies in the future.
    """
    now = _utc(now or lease.server_now())  # the clock leases are judged by
    query = {
        "backup_status": BackupStatus.IN_PROGRESS,
        "$or": [
            {"s3_lease_owner": {"$ne": None}, "s3_lease_expires_at": {"$lt": now}},
            {"s3_lease_owner": None, "s3_backup_updated_at": {"$lt": now - unleased_older_than}},
        ],
    }
    fields = {"s3_lease_owner": 1, "s3_lease_expires_at": 1, "s3_backup_updated_at": 1, "s3_uploads": 1}
    with store.mongo_errors("listing records stuck upload_in_progress"):
        documents = list(_collection().find(query, fields).sort("_id", 1))
    return [
        StuckRecord(
            id=document["_id"],
            lease_owner=document.get("s3_lease_owner"),
            lease_expires_at=document.get("s3_lease_expires_at"),
            updated_at=document.get("s3_backup_updated_at"),
            uploads=len(document.get("s3_uploads") or []),
        )
        for document in documents
    ]


def in_progress_without_time() -> list[str]:
    """Ids of records ``upload_in_progress`` with neither a lease nor ``s3_backup_updated_at`` (another
    uploader's, e.g. alphakraken's own): nothing tells whether it is still working, so reconcile leaves them."""
    query = {"backup_status": BackupStatus.IN_PROGRESS, "s3_lease_owner": None, "s3_backup_updated_at": None}
    with store.mongo_errors("listing records upload_in_progress without a timestamp"):
        return [document["_id"] for document in _collection().find(query, {"_id": 1}).sort("_id", 1)]


def fail_stuck(record: StuckRecord, details: str, *, now: datetime | None = None) -> bool:
    """Move one stuck record to ``upload_failed`` with ``details``, releasing the lease; False when the record
    changed since it was read (a live attempt renewed its lease, or finished), and nothing was written.

    Refuses a record whose lease has not expired: reconcile never takes a live attempt's record.
    """
    now = _utc(now or lease.server_now())  # the clock leases are judged by
    condition: dict[str, Any] = {"backup_status": BackupStatus.IN_PROGRESS}
    if record.lease_owner is not None:
        if record.lease_expires_at is None or _utc(record.lease_expires_at) >= now:
            raise InvalidInputError(
                f"the lease of raw file {record.id!r} ({record.lease_owner}) has not expired "
                f"(until {record.lease_expires_at}); a live attempt's record is never marked failed"
            )
        condition |= {"s3_lease_owner": record.lease_owner, "s3_lease_expires_at": record.lease_expires_at}
    elif record.updated_at is not None:
        condition |= {"s3_lease_owner": None, "s3_backup_updated_at": record.updated_at}
    else:
        raise InvalidInputError(
            f"raw file {record.id!r} has neither a lease nor s3_backup_updated_at: nothing tells whether its "
            "uploader is still working, so it is not marked failed"
        )
    update = {
        "$set": {
            "backup_status": BackupStatus.FAILED,
            "s3_backup_details": details,
            "s3_backup_updated_at": now,
        },
        "$unset": {"s3_lease_owner": "", "s3_lease_expires_at": ""},
    }
    return store.update_where(record.id, "marking a stuck upload failed", condition, update)


# --------------------------------------------------------------------------- reconcile: multipart uploads


def referenced_upload_ids() -> set[str]:
    """Every ``s3_uploads[].upload_id`` of any RawFile: multipart uploads an attempt will resume."""
    with store.mongo_errors("reading the multipart uploads RawFiles keep"):
        documents = _collection().find({"s3_uploads.upload_id": {"$exists": True}}, {"s3_uploads": 1})
        return {
            str(entry["upload_id"])
            for document in documents
            for entry in _entries(document.get("s3_uploads"))
            if entry.get("upload_id")
        }


def recorded_buckets() -> set[str]:
    """Every bucket a RawFile names: ``s3_bucket``, and ``s3_upload_path`` (records alphakraken's own
    uploader made have only that)."""
    with store.mongo_errors("reading the buckets RawFiles name"):
        buckets = {str(name) for name in _collection().distinct("s3_bucket") if name}
        paths = _collection().distinct("s3_upload_path")
    for path in paths:
        with contextlib.suppress(InvalidInputError):
            buckets.add(parse_upload_path(str(path))[0])
    return buckets


# --------------------------------------------------------------------------- helpers


def _entries(value: Any) -> Sequence[Mapping[str, Any]]:
    return [entry for entry in value or [] if isinstance(entry, Mapping)]


def _utc(moment: datetime) -> datetime:
    """Timezone-aware UTC; a naive value is UTC already (pymongo returns naive UTC)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _collection() -> Any:
    return RawFile._get_collection()
