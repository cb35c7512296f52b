"""What deep verification writes on a RawFile, and which RawFiles it may sample. MongoDB only.

A verification takes minutes to hours; meanwhile alphakraken may re-inventory the raw file, or a backup
attempt may replace its objects. So an outcome is written only onto the record that was verified, in one
conditional update whose filter says so:

- ``backup_status`` is still ``upload_done`` and ``s3_bucket`` the bucket that was read;
- ``file_info`` is exactly the inventory that was compared (an entry changed meanwhile refuses the write);
- no backup attempt holds a live lease (``s3_lease_owner`` absent, or its ``s3_lease_expires_at`` past):
  a running upload owns the record, and its outcome stands.

When the bytes in S3 are proven different from the inventory (or an object is gone), the record must stop
saying ``upload_done``: the sensor and alphakraken's file remover trust that status before deleting the
instrument's copy. It becomes ``upload_failed`` with details saying what differs and what to do, under the
same conditions. Nothing else is ever changed here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from airflow_provider_kraken_s3.core.deep_verify import DeepVerifyOutcome, SampleCandidate
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.manifest import DISTRUSTING_OUTCOMES
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile

log = logging.getLogger(__name__)

#: The fields a verification reads: enough to find the objects and to condition the write on them.
RECORD_FIELDS = (
    "backup_status",
    "s3_bucket",
    "file_info",
    "project_id",
    "instrument_id",
    "created_at",
    "s3_lease_owner",
    "s3_lease_expires_at",
    "s3_verified_at",
    "s3_verify_outcome",
    "s3_upload_path",
    "s3_manifest",
)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def read_record(raw_file_id: str) -> dict[str, Any]:
    """The fields of :data:`RECORD_FIELDS` exactly as stored (``file_info`` in stored order, for the filter)."""
    return store.read_fields(raw_file_id, *RECORD_FIELDS)


def _as_verified(
    bucket: str,
    file_info: Mapping[str, Any],
    now: datetime,
    document: Mapping[str, Any] | None = None,
    *,
    or_distrusted: bool = False,
) -> dict[str, Any]:
    """The filter: still ``upload_done``, the same backup (the manifest and ``s3_upload_path`` as read in
    ``document``; else the same ``s3_bucket``), the same inventory, and no live lease. ``or_distrusted``:
    also a record a deep verify had found wrong (a passing one may make it DONE again)."""
    status: dict[str, Any] = {"backup_status": BackupStatus.DONE}
    if or_distrusted:
        distrusted = {
            "backup_status": BackupStatus.FAILED,
            "s3_verify_outcome": {"$in": sorted(DISTRUSTING_OUTCOMES)},
        }
        status = {"$or": [status, distrusted]}
    same_backup: dict[str, Any] = (
        {"s3_manifest": document.get("s3_manifest"), "s3_upload_path": document.get("s3_upload_path")}
        if document is not None
        else {"s3_bucket": bucket}
    )
    return {
        **same_backup,
        "file_info": dict(file_info),
        "$and": [status, {"$or": [{"s3_lease_owner": None}, {"s3_lease_expires_at": {"$lt": now}}]}],
    }


def record_outcome(
    raw_file_id: str,
    *,
    bucket: str,
    file_info: Mapping[str, Any],
    outcome: DeepVerifyOutcome,
    at: datetime | None = None,
    document: Mapping[str, Any] | None = None,
) -> bool:
    """Record ``ok`` or ``needs_restore`` with its time; False (nothing written) if the record changed.

    ``needs_restore`` gets a time too, so sampling moves on to other raw files instead of asking for the
    same archived objects every run; ``s3_verify_outcome`` says that they were not read. An ``ok`` on a
    record an earlier deep verify had found wrong makes it ``upload_done`` again: every byte was read back
    and proven, which is the only evidence that outweighs the earlier one.
    """
    if outcome not in (DeepVerifyOutcome.OK, DeepVerifyOutcome.NEEDS_RESTORE):
        raise InvalidInputError(
            f"record_outcome records ok or needs_restore, not {outcome.value!r}: a difference or a missing "
            "object is recorded with record_proven_wrong, an unverified object not at all"
        )
    now = at or _now()
    fields: dict[str, Any] = {"s3_verified_at": now, "s3_verify_outcome": outcome.value}
    ok = outcome is DeepVerifyOutcome.OK
    if ok:
        fields["backup_status"] = BackupStatus.DONE
    return store.update_where(
        raw_file_id,
        f"recording the deep verification ({outcome.value})",
        _as_verified(bucket, file_info, now, document, or_distrusted=ok),
        {"$set": fields},
    )


def record_proven_wrong(
    raw_file_id: str,
    *,
    bucket: str,
    file_info: Mapping[str, Any],
    outcome: DeepVerifyOutcome,
    details: str,
    at: datetime | None = None,
    document: Mapping[str, Any] | None = None,
) -> bool:
    """S3 was proven not to hold the inventory's bytes: ``upload_done`` → ``upload_failed`` with ``details``.

    False (nothing written) if the record changed since it was verified or a backup attempt holds it.
    """
    if not outcome.proves_record_wrong:
        raise InvalidInputError(f"{outcome.value!r} does not prove the backup wrong; use record_outcome")
    now = at or _now()
    changed = store.update_where(
        raw_file_id,
        f"recording that deep verification found the backup {outcome.value}",
        _as_verified(bucket, file_info, now, document),
        {
            "$set": {
                "backup_status": BackupStatus.FAILED,
                "s3_backup_details": store.clip_details(details),
                "s3_backup_updated_at": now,
                "s3_verified_at": now,
                "s3_verify_outcome": outcome.value,
            }
        },
    )
    if changed:
        log.warning("RawFile %s: backup_status upload_done -> upload_failed (%s)", raw_file_id, details)
    return changed


def why_not_recorded(raw_file_id: str, *, bucket: str, file_info: Mapping[str, Any]) -> str:
    """Words for a refused write: what about the record changed since it was read for verification."""
    now = read_record(raw_file_id)
    reasons = []
    if now.get("backup_status") != BackupStatus.DONE:
        reasons.append(f"backup_status is now {now.get('backup_status')!r}, no longer {BackupStatus.DONE!r}")
    if now.get("s3_bucket") != bucket:
        reasons.append(f"s3_bucket is now {now.get('s3_bucket')!r}, not the verified {bucket!r}")
    if now.get("file_info") != dict(file_info):
        reasons.append("its file_info changed since it was read (the raw file was re-inventoried)")
    owner, expires = now.get("s3_lease_owner"), now.get("s3_lease_expires_at")
    if owner is not None and expires is not None:
        expires = expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)
        if expires >= _now():
            reasons.append(f"backup attempt {owner!r} holds it (lease until {expires:%Y-%m-%d %H:%M:%S} UTC)")
    return "; ".join(reasons) or "the record changed while the outcome was written"


def sampling_candidates(
    *, project_id: str | None = None, instrument_id: str | None = None
) -> list[SampleCandidate]:
    """Every ``upload_done`` RawFile (optionally of one project and/or instrument) with its bytes and the time
    it was last deep-verified, for :func:`~..core.deep_verify.select_sample`."""
    query: dict[str, Any] = {"backup_status": BackupStatus.DONE}
    if project_id is not None:
        query["project_id"] = project_id
    if instrument_id is not None:
        query["instrument_id"] = instrument_id
    projection = {"file_info": 1, "s3_verified_at": 1}
    with store.mongo_errors("listing raw files to verify"):
        documents = list(RawFile._get_collection().find(query, projection))
    return [
        SampleCandidate(
            raw_file_id=document["_id"],
            size=_total_size(document.get("file_info")),
            verified_at=document.get("s3_verified_at"),
        )
        for document in documents
    ]


def _total_size(file_info: Any) -> int:
    """Bytes of a raw file from its inventory; malformed entries count 0 (the verification reports them)."""
    if not isinstance(file_info, Mapping):
        return 0
    sizes = (entry[0] for entry in file_info.values() if isinstance(entry, (list, tuple)) and entry)
    return sum(size for size in sizes if isinstance(size, int) and not isinstance(size, bool) and size > 0)
