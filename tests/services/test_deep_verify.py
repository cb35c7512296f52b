"""services/deep_verify.py and records/deep_verify.py: real moto_server (through the FaultProxy), real mongomock."""

from __future__ import annotations

import hashlib
import threading
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_kraken_s3.core.deep_verify import DeepVerifyOutcome
from airflow_provider_kraken_s3.core.errors import InvalidInputError, PermanentBackupError
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.core.verdict import RawFileRecord, SensorStep, assess_raw_file, verify_objects
from airflow_provider_kraken_s3.records import deep_verify as records
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.records.models import BackupStatus
from airflow_provider_kraken_s3.services.deep_verify import deep_verify_raw_file, verify_sample
from airflow_provider_kraken_s3.transfer import remote
from tests.conftest import put_object, random_bytes
from tests.conftest_mongo import disconnect_kraken_alias, set_record
from tests.faults import after, flip_response_byte, hold

RANGE = MIB


def deep(access, raw_file_id: str, **kwargs):
    return deep_verify_raw_file(access, raw_file_id, range_size=RANGE, max_concurrency=3, **kwargs)


def head_check(access, raw_file_id: str) -> SensorStep:
    """What the sensor concludes from HEAD alone (ETag and size), with the same core functions."""
    assessed = assess_raw_file(RawFileRecord.of(store.get_raw_file(raw_file_id)))
    if assessed.action is not SensorStep.VERIFY:
        return assessed.action
    found = {o.key: remote.head(access, assessed.expected.bucket, o.key) for o in assessed.expected.objects}
    return SensorStep.SUCCESS if verify_objects(assessed.expected.objects, found).ok else SensorStep.FAIL


def fields(raw_file_id: str) -> dict:
    return store.read_fields(
        raw_file_id, "backup_status", "s3_verified_at", "s3_verify_outcome", "s3_backup_details"
    )


# ------------------------------------------------------------------ outcomes


def test_a_set_whose_bytes_match_is_ok_and_recorded(access, proxy, s3_backup, bucket) -> None:
    files = {
        "x.d/analysis.tdf": random_bytes(7 * MIB + 11, seed=1),
        "x.d/analysis.tdf_bin": random_bytes(1000, seed=2),
        "x.d/sub/meta.xml": b"<xml/>",
    }
    s3_backup("x.d", files)
    report = deep(access, "x.d")
    assert report.outcome is DeepVerifyOutcome.OK and report.recorded
    assert [(o.key, o.outcome, o.bytes) for o in report.objects] == [
        (path, DeepVerifyOutcome.OK, len(data)) for path, data in sorted(files.items())
    ]
    assert "is the ETag of those bytes at 5 MiB parts" in report.objects[0].detail
    stored = fields("x.d")
    assert stored["backup_status"] == BackupStatus.DONE and stored["s3_verify_outcome"] == "ok"
    assert stored["s3_verified_at"].replace(tzinfo=timezone.utc) == report.verified_at.replace(
        microsecond=report.verified_at.microsecond // 1000 * 1000
    )
    assert sum(len(d) for d in files.values()) == sum(
        int(g.headers["range"].split("-")[1]) - int(g.headers["range"].split("=")[1].split("-")[0]) + 1
        for g in proxy.records("GetObject")
    )  # every byte downloaded exactly once


def test_corrupted_bytes_are_caught_by_deep_verify_and_not_by_head(access, proxy, s3_backup) -> None:
    data = random_bytes(12 * MIB, seed=3)
    s3_backup("rot.raw", {"rot.raw": data})
    proxy.add(flip_response_byte("GetObject", offset=7 * MIB + 3, times=None))  # rotted behind S3's ETag
    assert head_check(access, "rot.raw") is SensorStep.SUCCESS  # HEAD: ETag and size still as recorded
    report = deep(access, "rot.raw")
    assert report.outcome is DeepVerifyOutcome.DIFFERS and report.recorded
    rotten = bytearray(data)
    rotten[7 * MIB + 3] ^= 0xFF
    detail = report.objects[0].detail
    assert f"have MD5 {hashlib.md5(bytes(rotten)).hexdigest()}" in detail
    assert f"the inventory says {hashlib.md5(data).hexdigest()}" in detail
    stored = fields("rot.raw")
    assert stored["backup_status"] == BackupStatus.FAILED  # the sensor and the remover no longer trust it
    assert stored["s3_verify_outcome"] == "differs" and stored["s3_verified_at"] is not None
    assert "deep verification" in stored["s3_backup_details"] and "s3://" in stored["s3_backup_details"]
    assert head_check(access, "rot.raw") is SensorStep.WAIT


def test_archived_objects_need_restore_and_nothing_fails(access, proxy, s3_backup) -> None:
    s3_backup(
        "cold.d",
        {"cold.d/a": random_bytes(2000, seed=4), "cold.d/b": random_bytes(3000, seed=5)},
        storage={"cold.d/b": "GLACIER"},
    )
    report = deep(access, "cold.d")
    assert report.outcome is DeepVerifyOutcome.NEEDS_RESTORE
    assert [o.outcome for o in report.objects] == [DeepVerifyOutcome.OK, DeepVerifyOutcome.NEEDS_RESTORE]
    assert "restore-object" in report.objects[1].detail and report.objects[1].bytes == 0
    assert {g.key for g in proxy.records("GetObject")} == {"cold.d/a"}  # the archived one was never read
    stored = fields("cold.d")
    assert stored["backup_status"] == BackupStatus.DONE and stored["s3_verify_outcome"] == "needs_restore"


def test_a_missing_object_downgrades_the_record(access, s3_backup, s3_client, bucket) -> None:
    s3_backup("gone.d", {"gone.d/a": b"aaa", "gone.d/b": b"bbb"})
    s3_client.delete_object(Bucket=bucket, Key="gone.d/b")
    report = deep(access, "gone.d")
    assert report.outcome is DeepVerifyOutcome.MISSING
    assert fields("gone.d")["backup_status"] == BackupStatus.FAILED
    assert "gone.d/b does not exist" in fields("gone.d")["s3_backup_details"]


def test_an_object_replaced_mid_download_is_unverified_and_not_recorded(
    access, proxy, s3_backup, s3_client, bucket
) -> None:
    s3_backup("swap.raw", {"swap.raw": random_bytes(4 * MIB, seed=6)})
    release = threading.Event()
    proxy.add(hold("GetObject", event=release))
    result: list = []
    worker = threading.Thread(target=lambda: result.append(deep(access, "swap.raw")))
    worker.start()
    proxy.wait_for("GetObject")
    s3_client.put_object(Bucket=bucket, Key="swap.raw", Body=random_bytes(4 * MIB, seed=7))
    release.set()
    worker.join(60)
    (report,) = result
    assert report.outcome is DeepVerifyOutcome.UNVERIFIED and not report.recorded
    assert "was replaced while it was being read" in report.objects[0].detail
    stored = fields("swap.raw")
    assert stored["backup_status"] == BackupStatus.DONE and stored.get("s3_verify_outcome") is None


def test_legacy_entries_are_verified_by_md5_at_the_objects_own_part_size(
    access, s3_client, bucket, make_raw_file
) -> None:
    data = random_bytes(17 * MIB, seed=8)
    put_object(s3_client, bucket, "old.raw", data, part_size=8 * MIB)  # an uploader with 8 MiB parts
    make_raw_file(
        "old.raw",
        backup_status=BackupStatus.DONE,
        s3_bucket=bucket,
        file_info={"old.raw": [len(data), hashlib.md5(data).hexdigest()]},
    )
    report = deep(access, "old.raw")
    assert report.outcome is DeepVerifyOutcome.OK and "at 8 MiB parts" in report.objects[0].detail


def test_a_record_without_bucket_is_refused(access, make_raw_file) -> None:
    make_raw_file("never.raw", backup_status=BackupStatus.COPYING_DONE)
    with pytest.raises(InvalidInputError, match="never backed up"):
        deep(access, "never.raw")


# ------------------------------------------------------------------ conditional writes


def test_a_live_lease_taken_during_the_download_refuses_the_write(access, proxy, s3_backup) -> None:
    s3_backup("busy.raw", {"busy.raw": random_bytes(3 * MIB, seed=9)})
    proxy.add(flip_response_byte("GetObject", offset=10, times=None))
    lease = {
        "s3_lease_owner": "upload#1",
        "s3_lease_expires_at": datetime.now(timezone.utc) + timedelta(minutes=5),
    }
    proxy.add(after("GetObject", callback=lambda _: set_record("busy.raw", **lease)))
    report = deep(access, "busy.raw")
    assert report.outcome is DeepVerifyOutcome.DIFFERS and not report.recorded
    assert "backup attempt 'upload#1' holds it" in report.record_note
    assert fields("busy.raw")["backup_status"] == BackupStatus.DONE  # the running upload's outcome stands


def test_a_changed_inventory_refuses_the_write(access, proxy, s3_backup) -> None:
    file_info = s3_backup("moved.raw", {"moved.raw": b"abc"})
    changed = {"moved.raw": [*file_info["moved.raw"][:2], "0" * 32 + "__5"]}
    proxy.add(after("GetObject", callback=lambda _: set_record("moved.raw", file_info=changed)))
    report = deep(access, "moved.raw")
    assert report.outcome is DeepVerifyOutcome.OK and not report.recorded
    assert "file_info changed" in report.record_note and fields("moved.raw").get("s3_verified_at") is None


def test_record_functions_check_status_inventory_and_lease(s3_backup) -> None:
    file_info = s3_backup("r.raw", {"r.raw": b"xyz"})
    bucket = store.read_fields("r.raw", "s3_bucket")["s3_bucket"]
    ok = {"bucket": bucket, "file_info": file_info, "outcome": DeepVerifyOutcome.OK}
    set_record(
        "r.raw", s3_lease_owner="a#1", s3_lease_expires_at=datetime.now(timezone.utc) + timedelta(minutes=1)
    )
    assert records.record_outcome("r.raw", **ok) is False
    set_record("r.raw", s3_lease_expires_at=datetime.now(timezone.utc) - timedelta(minutes=1))  # expired
    assert records.record_outcome("r.raw", **ok) is True
    assert records.record_outcome("r.raw", **{**ok, "bucket": "other"}) is False
    assert records.record_outcome("r.raw", **{**ok, "file_info": {"r.raw": [3, "0" * 32]}}) is False
    set_record("r.raw", backup_status=BackupStatus.IN_PROGRESS)
    wrong = {**ok, "outcome": DeepVerifyOutcome.DIFFERS, "details": "x"}
    assert records.record_proven_wrong("r.raw", **wrong) is False
    assert "no longer 'upload_done'" in records.why_not_recorded("r.raw", bucket=bucket, file_info=file_info)
    with pytest.raises(InvalidInputError):
        records.record_outcome("r.raw", **{**ok, "outcome": DeepVerifyOutcome.DIFFERS})
    with pytest.raises(InvalidInputError):
        records.record_proven_wrong("r.raw", **{**wrong, "outcome": DeepVerifyOutcome.OK})


# ------------------------------------------------------------------ sampling


def test_verify_sample_takes_the_never_and_oldest_verified_first(access, s3_backup, make_raw_file) -> None:
    now = datetime.now(timezone.utc)
    s3_backup("a.raw", {"a.raw": b"a" * 100}, s3_verified_at=now - timedelta(days=1), s3_verify_outcome="ok")
    s3_backup("b.raw", {"b.raw": b"b" * 100})
    s3_backup("c.raw", {"c.raw": b"c" * 100}, s3_verified_at=now - timedelta(days=60), s3_verify_outcome="ok")
    s3_backup("d.raw", {"d.raw": b"d" * 100}, project_id="OTHER")
    make_raw_file("e.raw", backup_status=BackupStatus.FAILED)
    sample = verify_sample(access, fraction=0.5, project_id="P1234", range_size=RANGE)
    assert sample.candidates == 3
    assert [r.raw_file_id for r in sample.reports] == ["b.raw", "c.raw"]
    assert sample.outcome is DeepVerifyOutcome.OK and "2 ok" in sample.summary()
    assert fields("a.raw")["s3_verified_at"].replace(tzinfo=timezone.utc) < now  # untouched
    assert fields("d.raw").get("s3_verified_at") is None  # another project
    assert all(
        fields(r)["s3_verified_at"].replace(tzinfo=timezone.utc) >= now.replace(microsecond=0)
        for r in ("b.raw", "c.raw")
    )
    again = verify_sample(access, byte_budget=150, range_size=RANGE)
    assert [r.raw_file_id for r in again.reports] == ["d.raw"]  # never verified comes first, then the budget


def test_verify_sample_goes_on_after_a_raw_file_it_cannot_verify(access, s3_backup, make_raw_file) -> None:
    s3_backup("good.raw", {"good.raw": b"g" * 10})
    make_raw_file(
        "bad.raw",
        backup_status=BackupStatus.DONE,
        s3_bucket="kraken-no-such-bucket-x",
        file_info={"bad.raw": [1, "0" * 32]},
    )
    sample = verify_sample(access, fraction=1.0, range_size=RANGE)
    outcomes = {r.raw_file_id: r.outcome for r in sample.reports}
    assert outcomes == {"bad.raw": DeepVerifyOutcome.UNVERIFIED, "good.raw": DeepVerifyOutcome.OK}
    assert "does not exist" in sample.of(DeepVerifyOutcome.UNVERIFIED)[0].record_note


def test_a_fallback_sciex_set_is_verified_at_its_prefixed_keys(access, s3_backup) -> None:
    files = {"s.wiff": random_bytes(2000, seed=10), "s.wiff2": random_bytes(3000, seed=11)}
    s3_backup("s.wiff", files, project_id="_FALLBACK")
    report = deep(access, "s.wiff")
    assert report.outcome is DeepVerifyOutcome.OK and report.recorded
    assert [o.key for o in report.objects] == [
        "astral1/2024_01/s.wiff/s.wiff",
        "astral1/2024_01/s.wiff/s.wiff2",
    ]


def test_verify_sample_without_a_mongodb_connection_says_what_to_do(access, kraken_mongo) -> None:
    disconnect_kraken_alias()  # as in a process that never called KrakenMongoHook(...).connect()
    with pytest.raises(PermanentBackupError) as raised:
        verify_sample(access, fraction=1.0)
    message = str(raised.value)
    assert (
        "is not connected while listing raw files to verify; call KrakenMongoHook(...).connect()" in message
    )
    assert "for raw file" not in message  # a query over all raw files names none (it said "'*'")
