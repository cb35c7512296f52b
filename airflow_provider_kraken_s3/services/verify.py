"""One verification round of a raw file's backup, shared by the poking sensor and the deferred trigger.

Reads the RawFile (never writes it), decides which objects must be in S3 (or that it is too early, or that
the record itself is wrong), and leaves the HEAD requests to the caller: the sensor uses the synchronous
hook, the trigger the asynchronous client. The verdict is :mod:`airflow_provider_kraken_s3.core.verdict`.
No Airflow here.
"""

from __future__ import annotations

import threading
from typing import Any

from airflow_provider_kraken_s3.core.errors import (
    InvalidInputError,
    PermanentBackupError,
    TransientBackupError,
)
from airflow_provider_kraken_s3.core.verdict import (
    Action,
    ExpectedObject,
    Outcome,
    RawFileRecord,
    assess_raw_file,
    explicit_objects,
)
from airflow_provider_kraken_s3.records import store

# mongoengine aliases are process-global; a triggerer runs many triggers in one process (and their reads in
# several threads), so connecting the alias and reading through it happen under one lock.
_MONGO_LOCK = threading.Lock()


def read_raw_file_record(connect: Any, mongo_conn_id: str, raw_file_id: str) -> RawFileRecord:
    """Blocking: ``connect(mongo_conn_id)`` the ``kraken_s3`` alias and snapshot one RawFile (read only)."""
    with _MONGO_LOCK:
        connect(mongo_conn_id)
        return RawFileRecord.of(store.get_raw_file(raw_file_id))


def fetch_record(connect: Any, mongo_conn_id: str, raw_file_id: str) -> RawFileRecord | Outcome:
    """Blocking: the RawFile snapshot, or the Outcome to report when it cannot be read."""
    if not isinstance(raw_file_id, str) or not raw_file_id:
        return Outcome(Action.FAIL, f"raw_file_id must be a non-empty string, got {raw_file_id!r}")
    try:
        return read_raw_file_record(connect, mongo_conn_id, raw_file_id)
    except TransientBackupError as error:
        return Outcome(Action.WAIT, f"cannot read the RawFile right now ({error})")
    except PermanentBackupError as error:  # no such RawFile, bad connection settings
        return Outcome(Action.FAIL, f"cannot verify raw file {raw_file_id!r}: {error}")


def objects_to_check(
    record: RawFileRecord | Outcome | None,
    *,
    fail_on_failed: bool,
    bucket: Any,
    keys: Any,
    expected_etags: Any,
    expected_sizes: Any,
) -> Outcome | tuple[str, list[ExpectedObject]]:
    """What one verification round HEADs: ``(bucket, objects)``, or the Outcome that ends the round early.

    Shared by the sensor (synchronous) and the trigger (asynchronous), so both decide alike. ``record`` is
    what :func:`fetch_record` returned in RawFile mode, ``None`` in explicit mode.
    """
    if isinstance(record, Outcome):
        return record
    if record is not None:
        assessed = assess_raw_file(record, fail_on_failed=fail_on_failed)
        if assessed.action is not Action.VERIFY:
            return assessed
        expected = assessed.expected
        if expected is None or not expected.bucket:  # pragma: no cover - assess_raw_file guarantees both
            return Outcome(Action.FAIL, f"record of {record.id!r} names no bucket")
        return expected.bucket, list(expected.objects)
    try:
        objects = explicit_objects(keys or [], expected_etags or {}, expected_sizes)
    except InvalidInputError as error:
        return Outcome(Action.FAIL, f"invalid expected objects: {error}")
    return str(bucket), list(objects)


def validate_mode(
    raw_file_id: Any,
    bucket: Any,
    keys: Any,
    expected_etags: Any,
    expected_sizes: Any,
) -> None:
    """Exactly one mode: a RawFile id, or bucket + keys + expected_etags (and optionally expected_sizes)."""
    explicit = {"bucket": bucket, "keys": keys, "expected_etags": expected_etags}
    given = sorted(name for name, value in explicit.items() if value is not None)
    if raw_file_id is not None:
        if given or expected_sizes is not None:
            extra = [*given, *(["expected_sizes"] if expected_sizes is not None else [])]
            raise ValueError(
                f"give either raw_file_id or bucket + keys + expected_etags, not both (also got {extra})"
            )
        return
    if len(given) != len(explicit):
        missing = sorted(set(explicit) - set(given))
        raise ValueError(
            "give raw_file_id (verify a RawFile's recorded backup) or all of bucket, keys and expected_etags "
            f"(verify given objects); missing {missing}"
        )
