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

from airflow_provider_kraken_s3.core.errors import (
    InvalidInputError,
    InventoryChangedError,
    LeaseLostError,
    MongoUnavailableError,
    PermanentBackupError,
    RawFileNotFoundError,
)
from airflow_provider_kraken_s3.core.etag import parse_precomputed_etag
from airflow_provider_kraken_s3.core.manifest import MANIFEST_FIELD, Manifest, etag_info
from airflow_provider_kraken_s3.records.models import (
    KRAKEN_DB_ALIAS,
    RAW_FILE_COLLECTION,
    BackupStatus,
    RawFile,
)

log = logging.getLogger(__name__)

# All are ConnectionFailure subclasses; listed so a reader sees which driver errors count as "retry later".
_CONNECTION_ERRORS = (ServerSelectionTimeoutError, NetworkTimeout, AutoReconnect, ConnectionFailure)

#: Longest ``s3_backup_details`` stored. The field is read by people; a full traceback or a list of many
#: failed parts would bloat every RawFile read, so longer texts keep their start and end.
DETAILS_MAX_LENGTH = 4000


def _now() -> datetime:
    """Timestamp for ``s3_backup_updated_at``: timezone-aware UTC (MongoDB stores UTC)."""
    return datetime.now(timezone.utc)


#: Our bookkeeping (who holds the lease, which multipart uploads to resume): a write of only these changes
#: nothing alphakraken reads, so it leaves ``updated_at_`` alone (a re-verified DONE stays untouched).
_BOOKKEEPING_FIELDS = frozenset({"s3_lease_owner", "s3_lease_expires_at", "s3_uploads"})


def stamped(update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` that also sets ``updated_at_`` as alphakraken's ``update_raw_file`` does on every write
    (``datetime.now(tz=utc)``): their alerts only look at records whose ``updated_at_`` is recent."""
    if {name for fields in update.values() for name in fields} <= _BOOKKEEPING_FIELDS:
        return dict(update)
    return {**update, "$set": {**update.get("$set", {}), "updated_at_": _now()}}


def clip_details(details: str) -> str:
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
def mongo_errors(action: str, raw_file_id: str | None = None) -> Iterator[None]:
    """Translate driver and mongoengine connection errors into the provider's error classes: connection
    trouble is transient (retry later), an unconnected alias is a setup mistake. Every read and write of
    :mod:`..records` runs inside it; ``action`` (and ``raw_file_id`` for one record) say what was being done.
    """
    doing = action if raw_file_id is None else f"{action} for raw file {raw_file_id!r}"
    try:
        yield
    except _CONNECTION_ERRORS as err:
        raise MongoUnavailableError(
            f"MongoDB unavailable while {doing}: {err}. The task will be retried (from the command line: try "
            "again later)."
        ) from err
    except mongoengine.connection.ConnectionFailure as err:
        raise PermanentBackupError(
            f"mongoengine alias {KRAKEN_DB_ALIAS!r} is not connected while {doing}; call "
            f"KrakenMongoHook(...).connect() first ({err})."
        ) from err


def _not_found(raw_file_id: str) -> RawFileNotFoundError:
    why = "check the id (alphakraken may have prefixed it after a name collision)"
    if _is_in_memory():
        why += (
            ". This is an in-memory MongoDB stand-in, per process: under a real scheduler "
            "each task's process starts with an empty store, so point the kraken_mongo connection at a MongoDB "
            "server"
        )
    return RawFileNotFoundError(
        f"No RawFile {raw_file_id!r} in collection {RAW_FILE_COLLECTION!r} of database {_database_name()!r}; {why}."
    )


def _is_in_memory() -> bool:
    """Whether our alias is an in-memory stand-in (only for wording errors; never changes behaviour)."""
    try:
        return bool(getattr(RawFile._get_db().client, "IN_MEMORY", False))
    except Exception:  # only decorates a message
        return False


def _update(raw_file_id: str, action: str, **updates: Any) -> None:
    """One atomic ``update_one`` on an existing document; unknown fields stay untouched."""
    _check_id(raw_file_id)
    with mongo_errors(action, raw_file_id):
        result = RawFile.objects(id=raw_file_id).update_one(
            upsert=False, full_result=True, set__updated_at_=_now(), **updates
        )
    if result.matched_count == 0:
        raise _not_found(raw_file_id)
    log.debug("RawFile %r: %s (%s).", raw_file_id, action, ", ".join(sorted(updates)))


def get_raw_file(raw_file_id: str) -> RawFile:
    """Load one RawFile (read-only use: never ``save()`` it, see the module docstring)."""
    _check_id(raw_file_id)
    with mongo_errors("reading the document", raw_file_id):
        raw_file = RawFile.objects(id=raw_file_id).first()
    if raw_file is None:
        raise _not_found(raw_file_id)
    return raw_file


def update_where(
    raw_file_id: str, action: str, condition: Mapping[str, Any], update: Mapping[str, Any]
) -> bool:
    """One atomic ``update_one`` on the document if it also matches ``condition``; False if it does not.

    Raw pymongo on purpose: these are the writes whose filter is the point, and mongoengine's query
    language would hide it.
    """
    _check_id(raw_file_id)
    with mongo_errors(action, raw_file_id):
        result = RawFile._get_collection().update_one({"_id": raw_file_id, **condition}, stamped(update))
        if result.matched_count:
            log.debug("RawFile %r: %s.", raw_file_id, action)
            return True
        if RawFile._get_collection().count_documents({"_id": raw_file_id}, limit=1) == 0:
            raise _not_found(raw_file_id)
    return False


def read_fields(raw_file_id: str, *fields: str) -> dict[str, Any]:
    """The named fields of one document, as stored (for messages and compare-and-swap)."""
    _check_id(raw_file_id)
    with mongo_errors("reading the document", raw_file_id):
        document = RawFile._get_collection().find_one({"_id": raw_file_id}, {name: 1 for name in fields})
    if document is None:
        raise _not_found(raw_file_id)
    return document


def owned_update(
    raw_file_id: str, owner: str, action: str, update: Mapping[str, Any], **condition: Any
) -> None:
    """An update that only the attempt holding the lease may make; :class:`LeaseLostError` otherwise."""
    if not update_where(raw_file_id, action, {"s3_lease_owner": owner, **condition}, update):
        _check_owner(raw_file_id, owner, action)


def _check_owner(raw_file_id: str, owner: str, action: str) -> None:
    holder = read_fields(raw_file_id, "s3_lease_owner").get("s3_lease_owner")
    if holder != owner:
        raise LeaseLostError(
            f"not {action} for raw file {raw_file_id!r}: this attempt ({owner}) no longer owns its backup "
            f"(now {holder!r}); a newer attempt's outcome stands."
        )


def _released(**fields: Any) -> dict[str, Any]:
    """A final write: the given fields, a fresh timestamp, and the lease given back."""
    return {
        "$set": {**fields, "s3_backup_updated_at": _now()},
        "$unset": {"s3_lease_owner": "", "s3_lease_expires_at": ""},
    }


def mark_in_progress(raw_file_id: str, owner: str, details: str) -> None:
    """Record that this attempt is uploading (written only when there is something to upload)."""
    owned_update(
        raw_file_id,
        owner,
        "marking the upload in progress",
        {
            "$set": {
                "backup_status": BackupStatus.IN_PROGRESS,
                "s3_backup_details": clip_details(details),
                "s3_backup_updated_at": _now(),
            }
        },
    )


def record_upload(raw_file_id: str, owner: str, entry: Mapping[str, Any]) -> None:
    """Remember one file's multipart upload (replacing that file's earlier entry), others untouched.

    One atomic update, never a ``$pull`` then a ``$push``: in between, the record would reference no upload
    for the file, and reconcile could abort the very upload being resumed (or a crash there lose it). The
    file's entry is appended where there is none (a new upload: one round trip), replaced in place where
    there is one (a resume): two conditional updates whose conditions exclude each other; if neither matched
    (the entry came or went in between), both are tried again.
    """
    for name in ("path", "key", "upload_id", "part_size", "expect"):
        if not entry.get(name):
            raise InvalidInputError(f"upload entry {dict(entry)!r} has no {name}")
    action = "recording a multipart upload"
    replace = (
        {"s3_lease_owner": owner, "s3_uploads.path": entry["path"]},
        {"$set": {"s3_uploads.$": dict(entry)}},
    )
    append = (
        {"s3_lease_owner": owner, "s3_uploads.path": {"$ne": entry["path"]}},
        {"$push": {"s3_uploads": dict(entry)}},
    )
    for _ in range(5):
        if any(
            update_where(raw_file_id, action, condition, update) for condition, update in (append, replace)
        ):
            return
        _check_owner(raw_file_id, owner, action)  # still ours: the file's entry came or went meanwhile
    raise MongoUnavailableError(f"s3_uploads of raw file {raw_file_id!r} kept changing; upload not recorded")


def forget_upload(raw_file_id: str, owner: str, path: str) -> None:
    """Drop one file's multipart upload entry (completed, aborted or vanished)."""
    owned_update(
        raw_file_id, owner, "forgetting a multipart upload", {"$pull": {"s3_uploads": {"path": path}}}
    )


def mark_done(
    raw_file_id: str,
    owner: str,
    *,
    manifest: Manifest,
    planned_file_info: Mapping[str, Any],
    details: str,
    clear_evidence: bool = False,
) -> None:
    """Record a verified backup and what it vouches for, in one atomic update that gives the lease back.

    Written only if this attempt still holds the lease **and** ``file_info`` is still exactly the inventory the
    attempt planned from (``planned_file_info``, as stored): DONE covers that inventory and nothing else. A file
    added or an entry redone meanwhile raises :class:`InventoryChangedError` naming them (the next attempt
    uploads them); nothing is written then.

    Beside the manifest, alphakraken's own fields stay true, since their file remover reads them:
    ``s3_upload_path`` (``s3://bucket[/prefix/]``) and ``file_info[path][2]`` (``"<etag>__<MiB>"``). The
    inventory is an acquisition fact: a third element is written only where it is missing, or where it
    names another ETag than S3 answered (their remover would then refuse the file forever).
    ``clear_evidence`` drops a deep verify's "differs"/"missing" once new verified uploads replaced the
    objects it condemned.
    """
    raw_id_key = manifest.backup_key(raw_file_id)
    etag = manifest.s3_etag(raw_file_id)
    _check_field("s3_bucket", manifest.bucket)
    _check_field("s3_backup_key", raw_id_key)
    _check_field("s3_etag", etag)
    _check_field("s3_upload_path", manifest.upload_path)
    fields = {
        "backup_status": BackupStatus.DONE,
        "s3_bucket": manifest.bucket,
        "s3_backup_key": raw_id_key,
        "s3_etag": etag,
        "s3_upload_path": manifest.upload_path,
        MANIFEST_FIELD: manifest.as_document(),
        "file_info": _with_etags(planned_file_info, manifest),
        "s3_uploads": [],
        "s3_backup_details": clip_details(details),
    }
    update = _released(**fields)
    if clear_evidence:
        update["$unset"].update({"s3_verify_outcome": "", "s3_verified_at": ""})
    action = "marking the upload done"
    condition = {"s3_lease_owner": owner, "file_info": dict(planned_file_info)}
    if update_where(raw_file_id, action, condition, update):
        return
    _check_owner(raw_file_id, owner, action)  # still ours: so the inventory changed under the attempt
    now = read_fields(raw_file_id, "file_info").get("file_info") or {}
    raise InventoryChangedError(
        f"file_info of raw file {raw_file_id!r} changed during the upload ({inventory_difference(planned_file_info, now)}); "
        "the backup covers the inventory it started from, so it is not marked done. The next attempt backs up "
        "the inventory as it is now."
    )


def inventory_difference(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """Words for how an inventory changed: files added, removed, or with another size or MD5."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(
        path for path in set(before) & set(after) if list(before[path])[:2] != list(after[path])[:2]
    )
    parts = [
        f"{label}: {', '.join(paths[:5])}{' …' if len(paths) > 5 else ''}"
        for label, paths in (("added", added), ("removed", removed), ("changed", changed))
        if paths
    ]
    return "; ".join(parts) or "a third element changed"


def _with_etags(planned: Mapping[str, Any], manifest: Manifest) -> dict[str, Any]:
    """``file_info`` with alphakraken's ``"<etag>__<MiB>"`` where it is missing or contradicts S3."""
    file_info = {path: list(entry) for path, entry in planned.items()}
    for item in manifest.objects:
        entry = file_info[item.path]
        value = etag_info(item)
        if value is None:
            continue
        if len(entry) < 3 or not entry[2]:
            file_info[item.path] = [entry[0], entry[1], value]
            continue
        try:
            recorded = parse_precomputed_etag(entry[2]).etag
        except InvalidInputError:
            recorded = None
        if recorded != item.etag:
            log.warning(
                "file_info[%r][2] was %r but S3 holds ETag %s: recording %r so alphakraken's remover can verify it",
                item.path,
                entry[2],
                item.etag,
                value,
            )
            file_info[item.path] = [entry[0], entry[1], value]
    return file_info


def mark_failed(raw_file_id: str, owner: str, details: str) -> None:
    """Record this attempt's failure and give the lease back.

    ``s3_uploads`` stay as they are: the next attempt resumes those multipart uploads. Where the backup is
    (``s3_bucket``, the manifest) is never touched: only a new verified backup moves it.
    """
    fields: dict[str, Any] = {
        "backup_status": BackupStatus.FAILED,
        "s3_backup_details": clip_details(details),
    }
    owned_update(raw_file_id, owner, "marking the upload failed", _released(**fields))


def release(raw_file_id: str, owner: str) -> None:
    """Give the lease back without touching anything else (nothing was done, nothing went wrong)."""
    owned_update(
        raw_file_id,
        owner,
        "releasing the lease",
        {"$unset": {"s3_lease_owner": "", "s3_lease_expires_at": ""}},
    )


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
    with mongo_errors("registering the raw file", raw_file_id):
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
