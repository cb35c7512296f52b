"""Reads and writes of alphakraken ``RawFile`` documents: the provider's only contact with MongoDB.

Rules every function here follows, and why:

- **Atomic updates only** (``update_one(set__...)``), never ``save()`` of a loaded document. alphakraken's
  own DAGs update the same documents concurrently; a read-modify-write would put back whatever they changed
  in between, and a whole-document save would drop fields this provider's model does not declare.
- **Dict fields with dotted keys are written whole** (``set__file_info=...``). A ``$set`` on a path such as
  ``file_info.x.raw`` would be read by MongoDB as nested keys ``x`` → ``raw``.
- **Connection trouble becomes** :class:`MongoUnavailableError` (transient: Airflow retries the task);
  a missing document becomes :class:`RawFileNotFoundError` (permanent: a person must look).

Call ``KrakenMongoHook(...).connect()`` first; the functions use the ``kraken_s3`` mongoengine alias.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import mongoengine
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError

from airflow_provider_kraken_s3.errors import (
    InvalidInputError,
    MongoUnavailableError,
    PermanentBackupError,
    RawFileNotFoundError,
)
from airflow_provider_kraken_s3.models import KRAKEN_DB_ALIAS, RAW_FILE_COLLECTION, BackupStatus, RawFile

log = logging.getLogger(__name__)

# All are ConnectionFailure subclasses; listed so a reader sees which driver errors count as "retry later".
_CONNECTION_ERRORS = (ServerSelectionTimeoutError, NetworkTimeout, AutoReconnect, ConnectionFailure)

#: Longest ``s3_backup_details`` stored. The field is read by people; a full traceback or a list of many
#: failed parts would bloat every RawFile read, so longer texts keep their start and end.
DETAILS_MAX_LENGTH = 4000


def _now() -> datetime:
    """Timestamp for ``s3_backup_updated_at``: timezone-aware UTC (MongoDB stores UTC)."""
    return datetime.now(timezone.utc)


def _clip(details: str) -> str:
    """Keep details readable and bounded; the middle of an over-long message is the least useful part."""
    details = str(details)
    if len(details) <= DETAILS_MAX_LENGTH:
        return details
    marker = " […] "
    keep = (DETAILS_MAX_LENGTH - len(marker)) // 2
    return details[:keep] + marker + details[-keep:]


def _check_id(raw_file_id: str) -> None:
    """Reject ids that cannot name a document, before they turn into confusing database errors."""
    if not isinstance(raw_file_id, str) or not raw_file_id:
        raise InvalidInputError(f"RawFile id must be a non-empty string, got {raw_file_id!r}.")


def _check_dict_keys(name: str, value: Mapping[str, Any]) -> None:
    """Keys become MongoDB field names: they must be strings and may not start with ``$``."""
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{name} must be a dict, got {type(value).__name__}.")
    for key in value:
        if not isinstance(key, str) or not key or key.startswith("$"):
            raise InvalidInputError(
                f"{name} has an invalid key {key!r} (must be a string not starting with '$')."
            )


def _normalise_file_info(file_info: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Validate ``file_info`` entries (``[size, md5]`` or ``[size, md5, etag_info]``) and make them lists."""
    _check_dict_keys("file_info", file_info)
    normalised: dict[str, list[Any]] = {}
    for path, entry in file_info.items():
        if isinstance(entry, str | bytes) or not isinstance(entry, Sequence) or len(entry) not in (2, 3):
            raise InvalidInputError(
                f"file_info[{path!r}] must be [size, md5] or [size, md5, etag_info], got {entry!r}."
            )
        normalised[path] = list(entry)
    return normalised


def _check_field(field_name: str, value: Any) -> None:
    """Apply the model's own field validation (e.g. the 1024-character key limit) to one value.

    ``update_one`` does not validate, so without this a too-long value would be stored silently.
    """
    try:
        RawFile._fields[field_name].validate(value)
    except mongoengine.ValidationError as err:
        raise InvalidInputError(f"Invalid value for RawFile.{field_name}: {err}") from err


def _database_name() -> str:
    """Name of the database our alias points at, for error messages (best effort)."""
    try:
        return RawFile._get_db().name
    except Exception:  # only decorates a message; never hide the original problem
        return "?"


@contextlib.contextmanager
def _mongo_errors(action: str, raw_file_id: str) -> Iterator[None]:
    """Translate driver and mongoengine connection errors into the provider's error classes."""
    try:
        yield
    except _CONNECTION_ERRORS as err:
        raise MongoUnavailableError(
            f"MongoDB unavailable while {action} for raw file {raw_file_id!r}: {err}. The task will be retried."
        ) from err
    except mongoengine.connection.ConnectionFailure as err:
        raise PermanentBackupError(
            f"mongoengine alias {KRAKEN_DB_ALIAS!r} is not connected while {action} for raw file "
            f"{raw_file_id!r}; call KrakenMongoHook(...).connect() first ({err})."
        ) from err


def _not_found(raw_file_id: str) -> RawFileNotFoundError:
    return RawFileNotFoundError(
        f"No RawFile {raw_file_id!r} in collection {RAW_FILE_COLLECTION!r} of database "
        f"{_database_name()!r}; check the id (alphakraken may have prefixed it after a name collision)."
    )


def _update(raw_file_id: str, action: str, **updates: Any) -> None:
    """One atomic ``update_one`` on an existing document; unknown fields stay untouched."""
    _check_id(raw_file_id)
    with _mongo_errors(action, raw_file_id):
        result = RawFile.objects(id=raw_file_id).update_one(upsert=False, full_result=True, **updates)
    if result.matched_count == 0:
        raise _not_found(raw_file_id)
    log.debug("RawFile %r: %s (%s).", raw_file_id, action, ", ".join(sorted(updates)))


def get_raw_file(raw_file_id: str) -> RawFile:
    """Load one RawFile (read-only use: never ``save()`` it, see the module docstring)."""
    _check_id(raw_file_id)
    with _mongo_errors("reading the document", raw_file_id):
        raw_file = RawFile.objects(id=raw_file_id).first()
    if raw_file is None:
        raise _not_found(raw_file_id)
    return raw_file


def mark_in_progress(raw_file_id: str, details: str) -> None:
    """Record that an upload attempt started, so alphakraken's UI shows it and stale attempts are visible."""
    _update(
        raw_file_id,
        "marking the upload in progress",
        set__backup_status=BackupStatus.IN_PROGRESS,
        set__s3_backup_details=_clip(details),
        set__s3_backup_updated_at=_now(),
    )


def record_upload_id(raw_file_id: str, upload_ids: Mapping[str, str]) -> None:
    """Store the complete ``{relative path: multipart upload id}`` map, so a retry can resume.

    The caller passes the whole new dict: paths contain dots, so single entries cannot be ``$set``.
    """
    _check_dict_keys("s3_upload_ids", upload_ids)
    for path, upload_id in upload_ids.items():
        if not isinstance(upload_id, str) or not upload_id:
            raise InvalidInputError(f"s3_upload_ids[{path!r}] must be a non-empty string, got {upload_id!r}.")
    _update(raw_file_id, "recording multipart upload ids", set__s3_upload_ids=dict(upload_ids))


def record_file_etags(raw_file_id: str, file_info: Mapping[str, Sequence[Any]]) -> None:
    """Store the complete ``file_info`` (now with ETag entries) as one value, written whole."""
    _update(raw_file_id, "recording file ETags", set__file_info=_normalise_file_info(file_info))


def mark_done(
    raw_file_id: str,
    *,
    bucket: str,
    backup_key: str,
    etag: str,
    file_info: Mapping[str, Sequence[Any]],
    details: str,
) -> None:
    """Record a verified upload in one atomic update, so readers never see "done" without its location.

    Clears ``s3_upload_ids``: the multipart uploads are completed and there is nothing left to resume.
    """
    _check_field("s3_bucket", bucket)
    _check_field("s3_backup_key", backup_key)
    _check_field("s3_etag", etag)
    _update(
        raw_file_id,
        "marking the upload done",
        set__backup_status=BackupStatus.DONE,
        set__s3_bucket=bucket,
        set__s3_backup_key=backup_key,
        set__s3_etag=etag,
        set__file_info=_normalise_file_info(file_info),
        set__s3_upload_ids={},
        set__s3_backup_details=_clip(details),
        set__s3_backup_updated_at=_now(),
    )


def mark_failed(raw_file_id: str, details: str, *, bucket: str | None = None) -> None:
    """Record a failed attempt and why.

    ``s3_upload_ids`` stay as they are: a retry resumes those multipart uploads instead of re-sending parts.
    """
    updates: dict[str, Any] = {
        "set__backup_status": BackupStatus.FAILED,
        "set__s3_backup_details": _clip(details),
        "set__s3_backup_updated_at": _now(),
    }
    if bucket is not None:
        _check_field("s3_bucket", bucket)
        updates["set__s3_bucket"] = bucket
    _update(raw_file_id, "marking the upload failed", **updates)


def set_backup_status(raw_file_id: str, status: str) -> None:
    """Set only ``backup_status`` (the local-copy path reports its progress this way)."""
    if status not in BackupStatus.ALL:
        raise InvalidInputError(
            f"Unknown backup status {status!r}; expected one of {sorted(BackupStatus.ALL)}."
        )
    _update(raw_file_id, f"setting backup_status to {status!r}", set__backup_status=status)


def register_raw_file(raw_file_id: str, *, project_id: str, instrument_id: str, size: int) -> None:
    """Create the RawFile if it does not exist yet (alphakraken's instrument watcher does this).

    An existing document is left exactly as it is (``$setOnInsert``), so re-running a DAG never resets it.
    """
    _check_id(raw_file_id)
    with _mongo_errors("registering the raw file", raw_file_id):
        RawFile._get_collection().update_one(
            {"_id": raw_file_id},
            {
                "$setOnInsert": {
                    "project_id": project_id,
                    "instrument_id": instrument_id,
                    "size": size,
                    "created_at": _now(),
                }
            },
            upsert=True,
        )


def record_local_copy(
    raw_file_id: str, *, backup_base_path: str, file_info: Mapping[str, Sequence[Any]]
) -> None:
    """Record where the local copy lives and its inventory, in one atomic update."""
    _update(
        raw_file_id,
        "recording the local copy",
        set__backup_base_path=str(backup_base_path),
        set__file_info=_normalise_file_info(file_info),
    )
