"""One verification round of a raw file's backup, shared by the poking sensor and the deferred trigger.

Reads the RawFile (never writes it), decides which objects must be in S3 (or that it is too early, or that
the record itself is wrong), and asks S3: :func:`verify_once` is the whole round, run by the poking sensor and
(in a thread) by the deferred trigger; :func:`check_round` is its S3 half, also used by ``kraken-s3 verify``.
What a round checks is one value, :class:`VerificationRound`. The verdict is
:mod:`airflow_provider_kraken_s3.core.verdict`. No Airflow here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.errors import (
    InvalidInputError,
    PermanentBackupError,
    TransientBackupError,
)
from airflow_provider_kraken_s3.core.layout import listing_folder
from airflow_provider_kraken_s3.core.verdict import (
    ExpectedObject,
    Outcome,
    RawFileRecord,
    SensorStep,
    assess_raw_file,
    conclude,
    explicit_objects,
    verify_objects,
)
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.attributes import head_as_recorded
from airflow_provider_kraken_s3.transfer.listing import list_prefix

# mongoengine aliases are process-global; a triggerer runs many triggers in one process (and their reads in
# several threads), so connecting the alias and reading through it happen under one lock.
_MONGO_LOCK = threading.Lock()


@dataclass(frozen=True)
class VerificationRound:
    """What a verification round checks: one RawFile's recorded backup, or objects named explicitly.

    Exactly one mode: ``raw_file_id`` (with ``fail_on_failed``: whether an ``upload_failed`` record ends the
    wait), or ``bucket`` + ``keys`` + ``expected_etags`` (+ ``expected_sizes``). The mode is checked when the
    value is made (:class:`ValueError`); the explicit objects themselves when a round runs, where a bad one
    is a failed round ("invalid expected objects"), since a sensor's values may come from a template.

    The sensor makes one from its rendered arguments for every round; the trigger carries it as one
    JSON-friendly dict (:meth:`as_dict`, :meth:`from_dict`).
    """

    raw_file_id: str | None = None
    fail_on_failed: bool = False
    bucket: str | None = None
    keys: Sequence[str] | None = None
    expected_etags: Mapping[str, str] | None = None
    expected_sizes: Mapping[str, int] | None = None

    def __post_init__(self) -> None:
        validate_mode(self.raw_file_id, self.bucket, self.keys, self.expected_etags, self.expected_sizes)
        # Copies, so that the caller's lists and dicts changing later cannot change this round.
        if isinstance(self.keys, (list, tuple)):
            object.__setattr__(self, "keys", tuple(self.keys))
        for name in ("expected_etags", "expected_sizes"):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, dict(value))

    @property
    def explicit(self) -> bool:
        """True when the objects are named explicitly (no MongoDB read)."""
        return self.raw_file_id is None

    def as_dict(self) -> dict[str, Any]:
        """The fields of this mode only, as JSON types (lists, dicts), for a trigger's serialised kwargs."""
        if not self.explicit:
            return {"raw_file_id": self.raw_file_id, "fail_on_failed": bool(self.fail_on_failed)}
        return {
            "bucket": self.bucket,
            "keys": list(self.keys) if isinstance(self.keys, (list, tuple)) else self.keys,
            "expected_etags": _plain(self.expected_etags),
            "expected_sizes": _plain(self.expected_sizes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerificationRound:
        """The round :meth:`as_dict` wrote (unknown names refused with :class:`TypeError`)."""
        unknown = sorted(set(data) - {field.name for field in fields(cls)})
        if unknown:
            raise TypeError(f"not part of a verification round: {unknown}")
        return cls(**data)


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, Mapping) else value


def read_raw_file_record(connect: Any, mongo_conn_id: str, raw_file_id: str) -> RawFileRecord:
    """Blocking: ``connect(mongo_conn_id)`` the ``kraken_s3`` alias and snapshot one RawFile (read only)."""
    with _MONGO_LOCK:
        connect(mongo_conn_id)
        return RawFileRecord.of(store.get_raw_file(raw_file_id))


def fetch_record(connect: Any, mongo_conn_id: str, raw_file_id: str) -> RawFileRecord | Outcome:
    """Blocking: the RawFile snapshot, or the Outcome to report when it cannot be read."""
    if not isinstance(raw_file_id, str) or not raw_file_id:
        return Outcome(SensorStep.FAIL, f"raw_file_id must be a non-empty string, got {raw_file_id!r}")
    try:
        return read_raw_file_record(connect, mongo_conn_id, raw_file_id)
    except TransientBackupError as error:
        return Outcome(SensorStep.WAIT, f"cannot read the RawFile right now ({error})")
    except PermanentBackupError as error:  # no such RawFile, bad connection settings
        return Outcome(SensorStep.FAIL, f"cannot verify raw file {raw_file_id!r}: {error}")


def objects_to_check(
    record: RawFileRecord | Outcome | None, target: VerificationRound
) -> Outcome | tuple[str, list[ExpectedObject]]:
    """What one verification round HEADs: ``(bucket, objects)``, or the Outcome that ends the round early.

    Shared by the sensor (synchronous) and the trigger (asynchronous), so both decide alike. ``record`` is
    what :func:`fetch_record` returned in RawFile mode, ``None`` in explicit mode.
    """
    if isinstance(record, Outcome):
        return record
    if record is not None:
        assessed = assess_raw_file(record, fail_on_failed=target.fail_on_failed)
        if assessed.action is not SensorStep.VERIFY:
            return assessed
        expected = assessed.expected
        if expected is None or not expected.bucket:  # pragma: no cover - assess_raw_file guarantees both
            return Outcome(SensorStep.FAIL, f"record of {record.id!r} names no bucket")
        return expected.bucket, list(expected.objects)
    try:
        objects = explicit_objects(target.keys or [], target.expected_etags or {}, target.expected_sizes)
    except InvalidInputError as error:
        return Outcome(SensorStep.FAIL, f"invalid expected objects: {error}")
    return str(target.bucket), list(objects)


def fetch_remote(
    access: S3Access, bucket: str, objects: Sequence[ExpectedObject]
) -> dict[str, RemoteObject | None]:
    """What S3 holds for each expected key: one listing for a set (a ``.d`` folder), a HEAD for one object.

    An object recorded under SSE-KMS/SSE-C is always HEADed: a listing shows neither the encryption nor the
    checksum, and its ETag proves nothing there. A HEAD that may hide the recorded checksum's kind is
    completed by ``GetObjectAttributes`` (:func:`~..transfer.attributes.head_as_recorded`)."""
    folder = listing_folder(item.key for item in objects)
    if folder:
        listed = list_prefix(access, bucket, folder)
        return {
            item.key: listed.get(item.key)
            if item.listing_can_prove or listed.get(item.key) is None
            else head_as_recorded(access, bucket, item.key, item.checksum)
            for item in objects
        }
    return {item.key: head_as_recorded(access, bucket, item.key, item.checksum) for item in objects}


def check_round(
    access: Callable[[], S3Access], record: RawFileRecord | Outcome | None, target: VerificationRound
) -> Outcome:
    """One synchronous verification round: what must be in S3, what is there, and the verdict.

    ``access`` is called only when S3 has to be asked, so a round that ends at the record costs no client.
    """
    checked = objects_to_check(record, target)
    if isinstance(checked, Outcome):
        return checked
    target_bucket, objects = checked
    try:
        found = fetch_remote(access(), target_bucket, objects)
    except TransientBackupError as error:
        return Outcome(SensorStep.WAIT, f"S3 not answering properly ({error})")
    except PermanentBackupError as error:
        return Outcome(SensorStep.FAIL, f"cannot read the backup in s3://{target_bucket}/: {error}")
    return conclude(verify_objects(objects, found), bucket=target_bucket, raw_file_id=target.raw_file_id)


def verify_once(
    access: Callable[[], S3Access], connect: Any, *, mongo_conn_id: str, target: VerificationRound
) -> Outcome:
    """One whole verification round, blocking: read the record (RawFile mode), ask S3, decide.

    The one read path of the poking sensor and of the deferred trigger (which runs it in a thread off the
    triggerer's event loop), so both modes decide every case alike.
    """
    raw_file_id = target.raw_file_id
    record = fetch_record(connect, mongo_conn_id, raw_file_id) if raw_file_id is not None else None
    return check_round(access, record, target)


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
