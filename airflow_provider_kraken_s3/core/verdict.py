"""Is a raw file's backup really in S3? The decision, with no Airflow, boto3 or MongoDB in sight.

The sensor (poking) and the trigger (deferred) both read the same two inputs and hand them here:

1. what *should* be in S3 — from a ``RawFile`` record (:func:`assess_raw_file`, which also decides whether
   the record is ready to be checked at all) or from explicit keys and ETags (:func:`explicit_objects`);
2. what a HEAD request returned for each of those keys (:func:`verify_objects`).

:func:`conclude` turns the comparison into one :class:`Outcome`: success (with the XCom value), keep
waiting, or fail with a message naming every key and what differs. The expected objects of a record come
from the record's manifest (:func:`airflow_provider_kraken_s3.core.manifest.recorded_backup`): exactly what the
upload proved, never re-derived from fields that may have changed since.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_provider_kraken_s3.core.checksum import Checksum, Encryption
from airflow_provider_kraken_s3.core.decision import (
    Expectation,
    RemoteObject,
    comparable,
    compare,
    explain_unproven,
    metadata_notes,
)
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.etag import etags_equal, normalize_etag
from airflow_provider_kraken_s3.core.manifest import recorded_backup
from airflow_provider_kraken_s3.core.status import BackupStatus

#: Start of the failure message when a DONE record and S3 disagree (possible data loss).
DISAGREES_PREFIX = "record says DONE but S3 disagrees: "


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ExpectedObject:
    """An object that must exist in S3: its key, ETag, size and (if known) the file's whole MD5.

    ``etag`` may be ``None`` only to report it as a problem: an object without an expected ETag cannot be
    verified. ``size=None`` skips the size check (explicit mode without ``expected_sizes``).
    """

    key: str
    etag: str | None
    size: int | None
    md5: str | None = None
    path: str | None = None  # the file_info path, when the object comes from a RawFile
    version_id: str | None = None  # the version the record vouches for, where the bucket keeps versions
    #: the checksum the record holds for it (S3's: full-object, or another tool's composite), where there is one
    checksum: Checksum | None = None
    #: the encryption S3 declared when the object was proven: under SSE-KMS/SSE-C only a HEAD (the stored
    #: checksum) can verify it, never a listing's ETag
    encryption: Encryption = Encryption.NONE

    @property
    def listing_can_prove(self) -> bool:
        """Whether a listing's ETag may stand for this object (its ETag is MD5-derived)."""
        return self.encryption.etag_is_md5


class ProblemKind(str, enum.Enum):
    MISSING = "missing"
    ETAG = "etag"
    SIZE = "size"
    #: the checksum decided (SSE-KMS/SSE-C, or a recorded checksum S3 contradicts): ``detail`` says how
    CHECKSUM = "checksum"
    RECORD = "record"  # the record itself cannot be verified (no ETag, no bucket, bad inventory)


@dataclass(frozen=True)
class Problem:
    """One way in which S3 (or the record) differs from what a verified backup requires."""

    kind: ProblemKind
    key: str
    expected: str | None = None
    found: str | None = None
    detail: str | None = None

    def __str__(self) -> str:
        if self.kind is ProblemKind.MISSING:
            return f"{self.key}: object missing (expected ETag {self.expected})"
        if self.kind is ProblemKind.ETAG:
            return f"{self.key}: ETag expected {self.expected}, found {self.found}"
        if self.kind is ProblemKind.SIZE:
            return f"{self.key}: size expected {self.expected} bytes, found {self.found} bytes"
        if self.kind is ProblemKind.CHECKSUM:
            return f"{self.key}: {self.detail}"
        return self.detail or f"{self.key}: cannot be verified"


@dataclass(frozen=True)
class VerificationResult:
    """Objects that matched, and every problem found (an object may have several)."""

    verified: tuple[ExpectedObject, ...]
    problems: tuple[Problem, ...]
    notes: tuple[str, ...] = ()  # contradicting hints (metadata), for the log; never a verdict

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def missing_only(self) -> bool:
        """True when every problem is a missing object (nothing present contradicts the expectation)."""
        return bool(self.problems) and all(p.kind is ProblemKind.MISSING for p in self.problems)

    def describe(self) -> str:
        return "; ".join(str(problem) for problem in self.problems)


@dataclass(frozen=True)
class RawFileRecord:
    """The fields of a ``RawFile`` the verification reads (a plain snapshot, safe to pass between threads)."""

    id: str
    backup_status: str | None
    s3_bucket: str | None
    file_info: Mapping[str, Sequence[Any]] | None
    s3_backup_details: str | None = None
    s3_lease_owner: str | None = None
    s3_lease_expires_at: datetime | None = None  # UTC
    project_id: str | None = None
    instrument_id: str | None = None
    created_at: datetime | None = None
    s3_upload_path: str | None = None
    s3_manifest: Mapping[str, Any] | None = None

    def fields(self) -> dict[str, Any]:
        """The snapshot as stored field names, for :func:`~.manifest.recorded_backup`."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "id"}

    @classmethod
    def of(cls, raw_file: Any) -> RawFileRecord:
        """Snapshot of a loaded ``RawFile`` (or anything with the same attributes)."""
        file_info = getattr(raw_file, "file_info", None)
        return cls(
            id=raw_file.id,
            backup_status=getattr(raw_file, "backup_status", None),
            s3_bucket=getattr(raw_file, "s3_bucket", None),
            file_info={path: list(entry) for path, entry in (file_info or {}).items()},
            s3_backup_details=getattr(raw_file, "s3_backup_details", None),
            s3_lease_owner=getattr(raw_file, "s3_lease_owner", None),
            s3_lease_expires_at=getattr(raw_file, "s3_lease_expires_at", None),
            project_id=getattr(raw_file, "project_id", None),
            instrument_id=getattr(raw_file, "instrument_id", None),
            created_at=getattr(raw_file, "created_at", None),
            s3_upload_path=getattr(raw_file, "s3_upload_path", None),
            s3_manifest=dict(getattr(raw_file, "s3_manifest", None) or {}) or None,
        )


@dataclass(frozen=True)
class ExpectedBackup:
    """Where a backup should be and what it should consist of; ``problems`` if the record is unusable."""

    bucket: str | None
    objects: tuple[ExpectedObject, ...]
    problems: tuple[Problem, ...] = ()


class SensorStep(str, enum.Enum):
    """The sensor's next step for a raw file or a set of keys (what an :class:`Outcome` tells it to do)."""

    SUCCESS = "success"
    WAIT = "wait"
    FAIL = "fail"
    VERIFY = "verify"  # assess_raw_file only: the record is DONE, now ask S3


@dataclass(frozen=True)
class Outcome:
    """A decision: ``action`` plus a message for the log or the failure, and the XCom value on success."""

    action: SensorStep
    message: str
    expected: ExpectedBackup | None = None
    xcom: dict[str, Any] | None = None


# --------------------------------------------------------------------------- expected objects


def _as_expected(item: ExpectedObject | Sequence[Any]) -> ExpectedObject:
    if isinstance(item, ExpectedObject):
        return item
    if isinstance(item, (list, tuple)) and len(item) == 4:
        key, etag, size, md5 = item
        return ExpectedObject(key=key, etag=etag, size=size, md5=md5)
    raise InvalidInputError(f"expected object {item!r} is not an ExpectedObject or (key, etag, size, md5)")


def _as_remote(value: RemoteObject | Sequence[Any] | None) -> RemoteObject | None:
    if value is None or isinstance(value, RemoteObject):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 3:
        etag, size, metadata = value
        return RemoteObject(etag=etag, size=int(size), metadata=metadata or {})
    raise InvalidInputError(f"HEAD result {value!r} is not None, a RemoteObject or (etag, size, metadata)")


def expected_from_record(record: RawFileRecord) -> ExpectedBackup:
    """The objects a DONE record vouches for (:func:`~.manifest.recorded_backup`), strictly.

    Record-level problems (no backup named, an unreadable inventory, a file without a recorded ETag, an
    inventory that changed since the backup was proven) are returned as ``problems`` rather than raised, so
    callers report them like any other disagreement.
    """
    try:
        recorded = recorded_backup(record.id, record.fields())
    except InvalidInputError as error:
        problem = Problem(
            ProblemKind.RECORD, record.id, detail=f"the backup cannot be read from the record: {error}"
        )
        return ExpectedBackup(bucket=record.s3_bucket or None, objects=(), problems=(problem,))
    problems = [
        Problem(
            ProblemKind.RECORD, record.id, detail=f"the record no longer vouches for its inventory: {gap}"
        )
        for gap in recorded.coverage_problems(record.file_info)
    ]
    objects = []
    for item in recorded.objects:
        if item.etag is None:
            problems.append(Problem(ProblemKind.RECORD, item.key, detail=f"no ETag recorded for {item.path}"))
        objects.append(
            ExpectedObject(
                key=item.key,
                etag=item.etag,
                size=item.size,
                md5=item.md5,
                path=item.path,
                version_id=item.version_id,
                checksum=item.checksum,
                encryption=item.encryption,
            )
        )
    return ExpectedBackup(bucket=recorded.bucket, objects=tuple(objects), problems=tuple(problems))


def explicit_objects(
    keys: Sequence[str] | str,
    expected_etags: Mapping[str, str],
    expected_sizes: Mapping[str, int] | None = None,
) -> tuple[ExpectedObject, ...]:
    """Expected objects given by hand: every key needs an ETag; sizes are optional, per key."""
    if isinstance(keys, str):
        keys = [keys]
    if not isinstance(keys, (list, tuple)) or not keys:
        raise InvalidInputError(f"keys must be a non-empty list of object keys, got {keys!r}")
    if not isinstance(expected_etags, Mapping):
        raise InvalidInputError(f"expected_etags must be a dict key -> ETag, got {expected_etags!r}")
    sizes = expected_sizes or {}
    if not isinstance(sizes, Mapping):
        raise InvalidInputError(f"expected_sizes must be a dict key -> bytes, got {expected_sizes!r}")
    for key in keys:
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"object key {key!r} must be a non-empty string")
    if len(set(keys)) != len(keys):
        raise InvalidInputError(f"keys lists a key more than once: {sorted(keys)}")
    missing = [key for key in keys if not expected_etags.get(key)]
    if missing:
        raise InvalidInputError(f"expected_etags has no ETag for {missing}; every key needs one")
    for name, mapping in (("expected_etags", expected_etags), ("expected_sizes", sizes)):
        unknown = sorted(set(mapping) - set(keys))
        if unknown:
            raise InvalidInputError(f"{name} names keys that are not in keys: {unknown}")
    objects = []
    for key in keys:
        size = sizes.get(key)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise InvalidInputError(f"expected_sizes[{key!r}] is {size!r}; expected a number of bytes")
        objects.append(ExpectedObject(key=key, etag=normalize_etag(str(expected_etags[key])), size=size))
    return tuple(objects)


class ObjectVerdict(str, enum.Enum):
    """The per-object check of a recorded object against what HEAD returned (:func:`judge_object`)."""

    PROVEN = "proven"
    MISSING = "missing"
    DIFFERS = "differs"


def judge_object(remote: RemoteObject | None, expected: Expectation) -> tuple[ObjectVerdict, str]:
    """Is a recorded object still proven in S3? The same rule as the upload's skip
    (:func:`~.decision.compare`): its MD5-derived ETag, or (under SSE-KMS/SSE-C the only way) its full-object
    checksum equal to the one recorded."""
    if remote is None:
        return ObjectVerdict.MISSING, "object missing"
    proof = compare(remote, expected).proven
    if proof is not None:
        return ObjectVerdict.PROVEN, proof
    return ObjectVerdict.DIFFERS, explain_unproven(remote, expected)


# --------------------------------------------------------------------------- comparison


def verify_objects(
    expected: Iterable[ExpectedObject | Sequence[Any]],
    found: Mapping[str, RemoteObject | Sequence[Any] | None],
) -> VerificationResult:
    """Compare each expected object with its HEAD result (a key absent from ``found`` counts as missing).

    An object is verified by :func:`judge_object`, the rule the upload
    uses to skip: ETag and size equal the expected ones. Object metadata never decides; a ``kraken-md5``
    that contradicts the inventory is reported in ``notes``.
    """
    verified: list[ExpectedObject] = []
    problems: list[Problem] = []
    notes: list[str] = []
    for raw in expected:
        item = _as_expected(raw)
        remote = _as_remote(found.get(item.key))
        if not item.etag:
            problems.append(Problem(ProblemKind.RECORD, item.key, detail=f"no ETag expected for {item.key}"))
            continue
        expected_etag = normalize_etag(item.etag)
        if remote is None:
            problems.append(Problem(ProblemKind.MISSING, item.key, expected=expected_etag))
            continue
        expectation = Expectation(
            size=item.size if item.size is not None else remote.size,
            md5=(item.md5 or "").strip().lower() or None,
            etag=expected_etag,
            checksum=item.checksum,
        )
        verdict, detail = judge_object(remote, expectation)
        notes.extend(f"{item.key}: {note}" for note in metadata_notes(remote, expectation))
        if verdict is ObjectVerdict.PROVEN:
            verified.append(
                ExpectedObject(
                    key=item.key,
                    etag=expected_etag,
                    size=remote.size,
                    md5=item.md5,
                    path=item.path,
                    checksum=item.checksum,
                )
            )
            continue
        if not remote.encryption.etag_is_md5 or comparable(remote.checksum, item.checksum):
            # The checksum decided (the ETag proves nothing here, or S3's checksum contradicts the record's).
            found_checksum = str(remote.checksum) if remote.checksum else None
            expected_checksum = str(item.checksum) if item.checksum else None
            problems.append(
                Problem(ProblemKind.CHECKSUM, item.key, expected_checksum, found_checksum, detail)
            )
            if remote.size != expectation.size:
                problems.append(Problem(ProblemKind.SIZE, item.key, str(expectation.size), str(remote.size)))
            continue
        if not etags_equal(remote.etag, expected_etag):
            problems.append(Problem(ProblemKind.ETAG, item.key, expected_etag, normalize_etag(remote.etag)))
        if remote.size != expectation.size:
            problems.append(Problem(ProblemKind.SIZE, item.key, str(expectation.size), str(remote.size)))
    return VerificationResult(verified=tuple(verified), problems=tuple(problems), notes=tuple(notes))


# --------------------------------------------------------------------------- decisions


def assess_raw_file(
    record: RawFileRecord, *, fail_on_failed: bool = False, now: datetime | None = None
) -> Outcome:
    """Whether a record is ready for the S3 check (``VERIFY``), still worth waiting for, or a failure."""
    status = record.backup_status
    if status == BackupStatus.DONE:
        expected = expected_from_record(record)
        if expected.problems:
            return Outcome(
                SensorStep.FAIL,
                "record says DONE but it cannot be verified: "
                + "; ".join(str(problem) for problem in expected.problems),
                expected=expected,
            )
        return Outcome(
            SensorStep.VERIFY, f"record of {record.id!r} says DONE; checking S3", expected=expected
        )
    details = record.s3_backup_details or "no details recorded"
    if status == BackupStatus.FAILED:
        if fail_on_failed:
            return Outcome(
                SensorStep.FAIL,
                f"backup of raw file {record.id!r} is {BackupStatus.FAILED!r} (fail_on_failed=True): {details}",
            )
        return Outcome(
            SensorStep.WAIT,
            f"backup of raw file {record.id!r} is {BackupStatus.FAILED!r} ({details}); waiting, a retry of the "
            "upload may still fix it (fail_on_failed=False)",
        )
    if status == BackupStatus.IN_PROGRESS:
        expires = record.s3_lease_expires_at
        if expires is not None:
            expires = (
                expires if expires.tzinfo else expires.replace(tzinfo=timezone.utc)
            )  # pymongo: naive UTC
            if expires < (now or datetime.now(timezone.utc)):
                return Outcome(
                    SensorStep.WAIT,
                    f"upload of raw file {record.id!r} is recorded in progress, but its attempt "
                    f"({record.s3_lease_owner}) stopped renewing its lease at {expires:%Y-%m-%d %H:%M:%S} UTC: that "
                    "worker probably died. Waiting for a retry of the upload task to take over and resume.",
                )
        return Outcome(
            SensorStep.WAIT, f"upload of raw file {record.id!r} is in progress ({details}); waiting"
        )
    if not status:
        return Outcome(
            SensorStep.WAIT, f"backup of raw file {record.id!r} has not started (no backup_status); waiting"
        )
    return Outcome(
        SensorStep.WAIT,
        f"backup_status of raw file {record.id!r} is {status!r}, not {BackupStatus.DONE!r}; waiting",
    )


def conclude(
    result: VerificationResult,
    *,
    bucket: str,
    raw_file_id: str | None,
    now: datetime | None = None,
) -> Outcome:
    """Decide from a comparison.

    - everything verified: ``SUCCESS`` with the XCom value;
    - from a DONE record (``raw_file_id`` given), any problem: ``FAIL``, message starting with
      :data:`DISAGREES_PREFIX` — the record claims a backup S3 does not hold (possible data loss);
    - explicit keys: objects merely missing mean ``WAIT`` (not uploaded yet); an object present with other
      content is ``FAIL``, since waiting will not change it.
    """
    where = f"s3://{bucket}/"
    if result.ok:
        noted = "".join(f"; note: {note}" for note in result.notes)
        return Outcome(
            SensorStep.SUCCESS,
            f"verified {len(result.verified)} object(s) in {where}{noted}",
            xcom=xcom_value(bucket, raw_file_id, result.verified, now=now),
        )
    listing = f"{result.describe()} (bucket {bucket})"
    if raw_file_id is not None:
        return Outcome(SensorStep.FAIL, f"{DISAGREES_PREFIX}raw file {raw_file_id!r}: {listing}")
    if result.missing_only:
        return Outcome(
            SensorStep.WAIT,
            f"{len(result.verified)} of {len(result.verified) + len(result.problems)} object(s) verified; "
            f"waiting for {listing}",
        )
    return Outcome(SensorStep.FAIL, f"S3 disagrees with the expected objects: {listing}")


def xcom_value(
    bucket: str,
    raw_file_id: str | None,
    verified: Iterable[ExpectedObject],
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """What the sensor returns: where, which objects (key, ETag, size, file_info path) and when (UTC)."""
    objects = []
    for item in verified:
        entry: dict[str, Any] = {"key": item.key, "etag": item.etag, "size": item.size}
        if item.path is not None:
            entry["path"] = item.path
        objects.append(entry)
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return {
        "bucket": bucket,
        "raw_file_id": raw_file_id,
        "objects": objects,
        "verified_at": moment.isoformat(),
    }
