"""core/verdict.py: the pure decision of whether a backup is verifiably in S3."""

from __future__ import annotations

import ast
import hashlib
from datetime import datetime, timezone
from pathlib import Path

import pytest

import airflow_provider_kraken_s3.core.status as status
import airflow_provider_kraken_s3.core.verdict as verification
import airflow_provider_kraken_s3.records.models as models
from airflow_provider_kraken_s3.core.decision import META_MD5, RemoteObject
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.inventory import backup_objects
from airflow_provider_kraken_s3.core.manifest import Manifest, ManifestObject
from airflow_provider_kraken_s3.core.verdict import (
    DISAGREES_PREFIX,
    ExpectedObject,
    ProblemKind,
    RawFileRecord,
    SensorStep,
    assess_raw_file,
    conclude,
    expected_from_record,
    explicit_objects,
    verify_objects,
    xcom_value,
)
from airflow_provider_kraken_s3.records.models import BackupStatus

MD5_A = hashlib.md5(b"a").hexdigest()
MD5_B = hashlib.md5(b"b").hexdigest()
ETAG_A = MD5_A
ETAG_B = f"{hashlib.md5(b'parts').hexdigest()}-3"
NOW = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)


def test_module_is_pure_and_constants_match_the_rest_of_the_provider() -> None:
    tree = ast.parse(Path(verification.__file__).read_text())
    imported = {
        node.module.split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not imported & {"airflow", "boto3", "botocore", "mongoengine", "pymongo", "aiobotocore"}
    assert models.BackupStatus is status.BackupStatus  # one definition, in core; the records import it
    assert (status.BackupStatus.DONE, status.BackupStatus.IN_PROGRESS, status.BackupStatus.FAILED) == (
        "upload_done",
        "upload_in_progress",
        "upload_failed",
    )


# ------------------------------------------------------------------ verify_objects


def test_all_verified_quotes_and_case_ignored() -> None:
    expected = [("x.d/a", ETAG_A, 1, MD5_A), ("x.d/b", ETAG_B.upper(), 10, None)]
    found = {"x.d/a": (f'"{ETAG_A.upper()}"', 1, {META_MD5: MD5_A}), "x.d/b": (ETAG_B, 10, {})}
    result = verify_objects(expected, found)
    assert result.ok and result.problems == ()
    assert [(o.key, o.etag, o.size) for o in result.verified] == [("x.d/a", ETAG_A, 1), ("x.d/b", ETAG_B, 10)]


def test_every_kind_of_problem_names_key_expected_and_found() -> None:
    expected = [
        ("gone", ETAG_A, 1, None),
        ("other-etag", ETAG_A, 1, None),
        ("other-size", ETAG_A, 1, None),
        ("fine", ETAG_A, 1, MD5_A),
    ]
    found = {
        "gone": None,
        "other-etag": (ETAG_B, 1, {}),
        "other-size": (ETAG_A, 2, {}),
        "fine": RemoteObject(ETAG_A, 1, {}),  # no kraken-md5: ETag and size decide
    }
    result = verify_objects(expected, found)
    assert [o.key for o in result.verified] == ["fine"]
    assert [(p.kind, p.key, p.expected, p.found) for p in result.problems] == [
        (ProblemKind.MISSING, "gone", ETAG_A, None),
        (ProblemKind.ETAG, "other-etag", ETAG_A, ETAG_B),
        (ProblemKind.SIZE, "other-size", "1", "2"),
    ]
    text = result.describe()
    assert f"gone: object missing (expected ETag {ETAG_A})" in text
    assert f"other-etag: ETag expected {ETAG_A}, found {ETAG_B}" in text
    assert "other-size: size expected 1 bytes, found 2 bytes" in text
    assert not result.ok and not result.missing_only


def test_metadata_never_decides_it_is_only_noted() -> None:
    """Defect 2: the sensor decides like the upload: the ETag is proof, ``kraken-md5`` a hint."""
    found = {"k": (ETAG_A, 1, {"Kraken-MD5": MD5_B})}  # metadata names are case-insensitive
    result = verify_objects([("k", ETAG_A, 1, MD5_A)], found)
    assert result.ok and [o.key for o in result.verified] == ["k"]
    assert result.notes == (
        f"k: metadata {META_MD5}={MD5_B} contradicts the inventory MD5 {MD5_A}; ignored "
        "(metadata is a hint, the ETag is the proof)",
    )
    forged = {"k": (ETAG_B, 1, {META_MD5: MD5_A})}  # a forged claim next to other bytes proves nothing
    assert not verify_objects([("k", ETAG_A, 1, MD5_A)], forged).ok


def test_etag_and_size_both_wrong_are_both_reported_and_absent_key_is_missing() -> None:
    result = verify_objects([("k", ETAG_A, 1, None), ("absent", ETAG_A, 1, None)], {"k": (ETAG_B, 5, None)})
    assert [(p.kind, p.key) for p in result.problems] == [
        (ProblemKind.ETAG, "k"),
        (ProblemKind.SIZE, "k"),
        (ProblemKind.MISSING, "absent"),
    ]


def test_missing_only_and_unknown_size() -> None:
    result = verify_objects([("a", ETAG_A, None, None), ("b", ETAG_A, 1, None)], {"a": (ETAG_A, 99, {})})
    assert [o.size for o in result.verified] == [99]  # the size S3 reported is what was verified
    assert result.missing_only


def test_object_without_expected_etag_is_never_verified() -> None:
    result = verify_objects([ExpectedObject("k", None, 1)], {"k": (ETAG_A, 1, {})})
    assert result.verified == () and result.problems[0].kind is ProblemKind.RECORD


def test_accepts_remote_objects_and_rejects_garbage() -> None:
    assert verify_objects([("k", ETAG_A, 1, MD5_A)], {"k": RemoteObject(ETAG_A, 1, {META_MD5: MD5_A})}).ok
    with pytest.raises(InvalidInputError):
        verify_objects([("k", ETAG_A)], {})
    with pytest.raises(InvalidInputError):
        verify_objects([("k", ETAG_A, 1, None)], {"k": "not a head result"})


# ------------------------------------------------------------------ expected objects of a RawFile


def _entry(size: int, md5: str, etag: str | None) -> list:
    return [size, md5] if etag is None else [size, md5, f"{etag}__5"]


def _done_record(raw_file_id: str, file_info: dict, **fields) -> RawFileRecord:
    fields.setdefault("s3_bucket", None)
    fields.setdefault("project_id", "P1")
    return RawFileRecord(id=raw_file_id, backup_status="upload_done", file_info=file_info, **fields)


def test_a_record_without_a_manifest_is_read_from_s3_upload_path_as_alphakrakens_remover_reads_it() -> None:
    """Records alphakraken's own uploader made: no s3_bucket, s3_upload_path and file_info[2] only."""
    file_info = {"w.wiff": _entry(1, MD5_A, ETAG_A), "w.wiff.scan": _entry(2, MD5_B, ETAG_B)}
    expected = expected_from_record(
        _done_record("w.wiff", file_info, s3_upload_path="s3://kraken-lab-p1/w.wiff/")
    )
    assert expected.problems == () and expected.bucket == "kraken-lab-p1"
    layout = backup_objects("w.wiff", file_info, prefix="w.wiff/")
    assert (
        [o.key for o in expected.objects]
        == [o.key for o in layout]
        == ["w.wiff/w.wiff", "w.wiff/w.wiff.scan"]
    )
    assert [(o.etag, o.size, o.md5, o.path) for o in expected.objects] == [
        (ETAG_A, 1, MD5_A, "w.wiff"),
        (ETAG_B, 2, MD5_B, "w.wiff.scan"),
    ]


def test_a_manifest_wins_over_fields_that_changed_after_the_backup() -> None:
    """Issue 13: readers never re-derive keys from project_id/created_at once a manifest exists."""
    manifest = Manifest(
        bucket="kraken-lab-p1",
        prefix="",
        objects=(ManifestObject("x.raw", "x.raw", 1, MD5_A, ETAG_A, 5 << 20, version_id="v1"),),
    )
    record = _done_record(
        "x.raw",
        {"x.raw": [1, MD5_A]},
        project_id="_FALLBACK",  # reassigned after DONE: a re-derived layout would look elsewhere
        s3_bucket="kraken-lab--fallback",
        s3_upload_path="s3://kraken-lab--fallback/astral1/2024_01/",
        s3_manifest=manifest.as_document(),
    )
    expected = expected_from_record(record)
    assert expected.problems == () and expected.bucket == "kraken-lab-p1"
    assert [(o.key, o.etag, o.version_id) for o in expected.objects] == [("x.raw", ETAG_A, "v1")]


def test_a_manifest_that_no_longer_covers_the_inventory_is_a_record_problem() -> None:
    manifest = Manifest(bucket="b", prefix="", objects=(ManifestObject("x.d/a", "x.d/a", 1, MD5_A, ETAG_A),))
    grown = {"x.d/a": _entry(1, MD5_A, ETAG_A), "x.d/b": _entry(2, MD5_B, ETAG_B)}
    expected = expected_from_record(_done_record("x.d", grown, s3_manifest=manifest.as_document()))
    assert [str(p) for p in expected.problems] == [
        "the record no longer vouches for its inventory: x.d/b is in file_info but not in the backup"
    ]


def test_expected_from_record_is_strict() -> None:
    no_etag = expected_from_record(
        _done_record(
            "x.d", {"x.d/a": _entry(1, MD5_A, ETAG_A), "x.d/b": _entry(2, MD5_B, None)}, s3_bucket="b"
        )
    )
    assert [str(p) for p in no_etag.problems] == ["no ETag recorded for x.d/b"]
    assert len(no_etag.objects) == 2
    no_backup = expected_from_record(_done_record("x.raw", {"x.raw": _entry(1, MD5_A, ETAG_A)}))
    assert "records no backup" in str(no_backup.problems[0])
    broken = expected_from_record(
        _done_record("x.raw", {"../x.raw": _entry(1, MD5_A, ETAG_A)}, s3_bucket="b")
    )
    assert broken.objects == () and "'..' segment" in str(broken.problems[0])
    foreign = expected_from_record(_done_record("a.d", {"b.raw": _entry(1, MD5_A, ETAG_A)}, s3_bucket="b"))
    assert "not one of its files" in str(foreign.problems[0])
    empty = expected_from_record(_done_record("x.raw", {}, s3_bucket="b"))
    assert "empty file_info" in str(empty.problems[0])


# ------------------------------------------------------------------ explicit mode


def test_explicit_objects() -> None:
    objects = explicit_objects(["a", "b"], {"a": f'"{ETAG_A.upper()}"', "b": ETAG_B}, {"b": 7})
    assert [(o.key, o.etag, o.size, o.md5) for o in objects] == [
        ("a", ETAG_A, None, None),
        ("b", ETAG_B, 7, None),
    ]
    assert explicit_objects("a", {"a": ETAG_A})[0].key == "a"


@pytest.mark.parametrize(
    ("keys", "etags", "sizes", "message"),
    [
        ([], {}, None, "non-empty list"),
        (["a", "a"], {"a": ETAG_A}, None, "more than once"),
        (["a", "b"], {"a": ETAG_A}, None, r"no ETag for \['b'\]"),
        (["a"], {"a": ETAG_A, "z": ETAG_A}, None, r"not in keys: \['z'\]"),
        (["a"], {"a": ETAG_A}, {"z": 1}, r"expected_sizes names keys that are not in keys"),
        (["a"], {"a": ETAG_A}, {"a": -1}, "number of bytes"),
        ([""], {"": ETAG_A}, None, "non-empty string"),
        (["a"], "not-a-dict", None, "must be a dict"),
    ],
)
def test_explicit_objects_refuses(keys, etags, sizes, message) -> None:
    with pytest.raises(InvalidInputError, match=message):
        explicit_objects(keys, etags, sizes)


# ------------------------------------------------------------------ decisions


def _record(status: str | None, **fields) -> RawFileRecord:
    values = {
        "id": "x.raw",
        "backup_status": status,
        "s3_bucket": "kraken-lab-p1",
        "project_id": "P1",
        "file_info": {"x.raw": _entry(1, MD5_A, ETAG_A)},
        "s3_backup_details": "details of the last attempt",
    }
    values.update(fields)
    return RawFileRecord(**values)


@pytest.mark.parametrize(
    ("status", "fragment"),
    [
        (None, "has not started"),
        (BackupStatus.IN_PROGRESS, "in progress (details of the last attempt)"),
        (BackupStatus.COPYING_DONE, "'copying_done', not 'upload_done'"),
        (BackupStatus.FAILED, "a retry of the upload may still fix it"),
    ],
)
def test_records_not_done_mean_wait(status, fragment) -> None:
    outcome = assess_raw_file(_record(status))
    assert outcome.action is SensorStep.WAIT and fragment in outcome.message


def test_failed_record_fails_fast_when_asked() -> None:
    outcome = assess_raw_file(_record(BackupStatus.FAILED), fail_on_failed=True)
    assert outcome.action is SensorStep.FAIL
    assert "'upload_failed'" in outcome.message and "details of the last attempt" in outcome.message


def test_done_record_is_checked_or_refused() -> None:
    ready = assess_raw_file(_record(BackupStatus.DONE))
    assert ready.action is SensorStep.VERIFY and ready.expected.bucket == "kraken-lab-p1"
    unverifiable = assess_raw_file(_record(BackupStatus.DONE, file_info={"x.raw": [1, MD5_A]}))
    assert unverifiable.action is SensorStep.FAIL
    assert unverifiable.message == "record says DONE but it cannot be verified: no ETag recorded for x.raw"


def test_record_snapshot_of_a_document() -> None:
    class Doc:
        id, backup_status, s3_bucket, s3_backup_details = "x.raw", "upload_done", "b", None
        file_info = {"x.raw": (1, MD5_A, f"{ETAG_A}__5")}

    record = RawFileRecord.of(Doc())
    assert record.file_info == {"x.raw": [1, MD5_A, f"{ETAG_A}__5"]} and record.backup_status == "upload_done"


def test_conclude() -> None:
    good = verify_objects([ExpectedObject("x.raw", ETAG_A, 1, MD5_A, "x.raw")], {"x.raw": (ETAG_A, 1, {})})
    success = conclude(good, bucket="b", raw_file_id="x.raw", now=NOW)
    assert success.action is SensorStep.SUCCESS
    assert success.xcom == {
        "bucket": "b",
        "raw_file_id": "x.raw",
        "objects": [{"key": "x.raw", "etag": ETAG_A, "size": 1, "path": "x.raw"}],
        "verified_at": "2024-05-01T12:30:00+00:00",
    }
    missing = verify_objects([("x.raw", ETAG_A, 1, None)], {})
    done_but_missing = conclude(missing, bucket="b", raw_file_id="x.raw")
    assert done_but_missing.action is SensorStep.FAIL
    assert done_but_missing.message.startswith(DISAGREES_PREFIX)
    assert "x.raw: object missing" in done_but_missing.message and "(bucket b)" in done_but_missing.message
    explicit_waits = conclude(missing, bucket="b", raw_file_id=None)
    assert explicit_waits.action is SensorStep.WAIT and "0 of 1 object(s) verified" in explicit_waits.message
    wrong = verify_objects([("k", ETAG_A, 1, None)], {"k": (ETAG_B, 1, {})})
    explicit_wrong = conclude(wrong, bucket="b", raw_file_id=None)
    assert explicit_wrong.action is SensorStep.FAIL and explicit_wrong.message.startswith("S3 disagrees")


def test_xcom_value_is_utc_iso() -> None:
    local = datetime(2024, 5, 1, 14, 30, tzinfo=timezone.utc).astimezone()
    value = xcom_value("b", None, [ExpectedObject("k", ETAG_A, 3)], now=local)
    assert value["verified_at"] == "2024-05-01T14:30:00+00:00"
    assert value["objects"] == [{"key": "k", "etag": ETAG_A, "size": 3}] and value["raw_file_id"] is None
    assert datetime.fromisoformat(xcom_value("b", None, [])["verified_at"]).tzinfo is not None


def test_in_progress_with_an_expired_lease_says_the_worker_probably_died() -> None:
    """A SIGKILLed upload leaves upload_in_progress; the sensor says so instead of "in progress"."""
    record = RawFileRecord(
        id="k.raw",
        backup_status=BackupStatus.IN_PROGRESS,
        s3_bucket=None,
        file_info=None,
        s3_lease_owner="upload_to_s3/run/try1#ab",
        s3_lease_expires_at=datetime(2024, 5, 1, 12, 0),  # naive UTC, as pymongo returns it
    )
    stale = assess_raw_file(record, now=NOW)
    assert (
        stale.action is SensorStep.WAIT
        and "stopped renewing its lease at 2024-05-01 12:00:00 UTC" in stale.message
    )
    alive = assess_raw_file(record, now=datetime(2024, 5, 1, 11, 59, tzinfo=timezone.utc))
    assert alive.action is SensorStep.WAIT and "is in progress" in alive.message
