"""S3BackupVerifiedSensor against moto server (real HTTP) and mongomock, with DONE rows made by the operator.

``run_backup`` is also used by the trigger and example-DAG tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta

import pytest
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    PokeReturnValue,
    TaskDeferred,
)

from airflow_provider_kraken_s3.core.decision import META_MD5
from airflow_provider_kraken_s3.core.errors import MongoUnavailableError
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.core.verdict import DISAGREES_PREFIX
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.records.models import BackupStatus
from airflow_provider_kraken_s3.sensors.backup_verified import S3BackupVerifiedSensor
from airflow_provider_kraken_s3.triggers.backup_verified import BackupVerifiedTrigger
from tests.conftest import aws_connection_json
from tests.conftest_mongo import insert_raw_file, set_record
from tests.staging import PREFIX, Staged, stage_with_bucket

PART = 5 * MIB


def run_backup(raw_file_id: str) -> dict:
    """Back the raw file up with the real operator: the RawFile ends DONE with recorded ETags."""
    operator = RawFileS3BackupOperator(
        task_id="upload_to_s3", raw_file_id=raw_file_id, bucket_prefix=PREFIX, part_size=PART
    )
    return operator.execute(context={})


def sensor(raw_file_id: str | None = "s.raw", **kwargs) -> S3BackupVerifiedSensor:
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("timeout", 30)
    return S3BackupVerifiedSensor(task_id="verify_backup", raw_file_id=raw_file_id, **kwargs)


def stored(kraken_db, raw_file_id: str) -> dict:
    return kraken_db.raw_file.find_one({"_id": raw_file_id})


def etag_of(s3_client, bucket: str, key: str) -> str:
    return s3_client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


@pytest.fixture
def staged(tmp_path, s3_client, kraken_mongo) -> Staged:
    """``s.raw``: one multipart-sized file (3 parts), not yet backed up."""
    return stage_with_bucket(tmp_path, s3_client, "s.raw", {"s.raw": 2 * PART + 3})


# ------------------------------------------------------------------ success


def test_done_and_in_s3_succeeds_with_what_was_verified(
    aws_conn, s3_client, staged, kraken_db, task_log
) -> None:
    run_backup("s.raw")
    before = stored(kraken_db, "s.raw")
    returned = sensor().poke(context={})
    etag = etag_of(s3_client, staged.bucket, "s.raw")
    assert isinstance(returned, PokeReturnValue) and returned.is_done and etag.endswith("-3")
    value = returned.xcom_value
    assert value["bucket"] == staged.bucket and value["raw_file_id"] == "s.raw"
    assert value["objects"] == [{"key": "s.raw", "etag": etag, "size": 2 * PART + 3, "path": "s.raw"}]
    assert value["verified_at"].endswith("+00:00")
    json.dumps(value)  # XCom-serialisable as plain JSON
    assert stored(kraken_db, "s.raw") == before  # never modifies the RawFile
    assert "verified 1 object(s)" in task_log()


def test_folder_raw_file_every_object_verified(aws_conn, s3_client, tmp_path, kraken_mongo) -> None:
    sizes = {"b.d/analysis.tdf": 1000, "b.d/analysis.tdf_bin": PART + 7, "b.d/sub/x.method": 0}
    staged = stage_with_bucket(tmp_path, s3_client, "b.d", sizes)
    run_backup("b.d")
    value = sensor("b.d").execute(context={})  # the normal poke loop (mode="poke")
    assert [o["key"] for o in value["objects"]] == sorted(sizes)
    assert {o["key"]: o["etag"] for o in value["objects"]} == {
        key: etag_of(s3_client, staged.bucket, key) for key in sizes
    }


def test_waits_until_the_upload_finishes(aws_conn, staged, kraken_db, task_log) -> None:
    check = sensor()
    assert check.poke(context={}) is False
    assert "'copying_done', not 'upload_done'" in task_log()
    set_record("s.raw", backup_status=BackupStatus.IN_PROGRESS, s3_backup_details="uploading 1 file(s)")
    assert check.poke(context={}) is False
    assert "in progress (uploading 1 file(s))" in task_log()
    run_backup("s.raw")
    returned = check.poke(context={})
    assert returned and returned.xcom_value["raw_file_id"] == "s.raw"
    assert stored(kraken_db, "s.raw")["backup_status"] == BackupStatus.DONE


def test_not_started_times_out(aws_conn, staged) -> None:
    with pytest.raises(AirflowSensorTimeout):
        sensor(timeout=0.3, poke_interval=0.05).execute(context={})


# ------------------------------------------------------------------ DONE but S3 disagrees


def test_tampered_object_fails_without_retry(aws_conn, s3_client, staged, kraken_db) -> None:
    run_backup("s.raw")
    recorded = etag_of(s3_client, staged.bucket, "s.raw")
    s3_client.put_object(Bucket=staged.bucket, Key="s.raw", Body=b"someone else's bytes")
    before = stored(kraken_db, "s.raw")
    with pytest.raises(AirflowFailException) as failure:
        sensor().poke(context={})
    message = str(failure.value)
    tampered = etag_of(s3_client, staged.bucket, "s.raw")
    assert message.startswith(DISAGREES_PREFIX)
    assert f"s.raw: ETag expected {recorded}, found {tampered}" in message
    assert f"s.raw: size expected {2 * PART + 3} bytes, found 20 bytes" in message
    assert staged.bucket in message
    assert stored(kraken_db, "s.raw") == before


def test_deleted_object_fails(aws_conn, s3_client, tmp_path, kraken_mongo) -> None:
    sizes = {"d.d/a": 10, "d.d/b": 20}
    staged = stage_with_bucket(tmp_path, s3_client, "d.d", sizes)
    run_backup("d.d")
    s3_client.delete_object(Bucket=staged.bucket, Key="d.d/b")
    with pytest.raises(
        AirflowFailException, match=r"^record says DONE but S3 disagrees: .*d\.d/b: object missing"
    ):
        sensor("d.d").execute(context={})  # fails on the first poke, not after the timeout


def test_metadata_contradicting_the_inventory_is_noted_never_decisive(
    aws_conn, s3_client, tmp_path, kraken_mongo, task_log
) -> None:
    """Defect 2: sensor and operator decide alike; the ETag is proof, ``kraken-md5`` a hint."""
    staged = stage_with_bucket(tmp_path, s3_client, "m.raw", {"m.raw": 100})
    run_backup("m.raw")
    head = s3_client.head_object(Bucket=staged.bucket, Key="m.raw")
    assert META_MD5 not in head["Metadata"]  # a single-part object's ETag already is its MD5
    s3_client.copy_object(
        Bucket=staged.bucket,
        Key="m.raw",
        CopySource={"Bucket": staged.bucket, "Key": "m.raw"},
        Metadata={META_MD5: "0" * 32},
        MetadataDirective="REPLACE",
    )
    assert etag_of(s3_client, staged.bucket, "m.raw") == head["ETag"].strip('"')  # same bytes, same ETag
    assert sensor("m.raw").poke(context={}).is_done
    assert f"metadata {META_MD5}={'0' * 32} contradicts the inventory MD5" in task_log()
    assert run_backup("m.raw")["bytes_uploaded"] == 0  # the operator agrees: nothing to upload


def test_done_without_recorded_etag_is_refused(aws_conn, s3_client, kraken_mongo) -> None:
    insert_raw_file(
        "old.raw",
        backup_status=BackupStatus.DONE,
        s3_bucket="kraken-lab-whatever",
        file_info={"old.raw": [1024, "d41d8cd98f00b204e9800998ecf8427e"]},
    )
    with pytest.raises(
        AirflowFailException, match=r"DONE but it cannot be verified: no ETag recorded for old\.raw$"
    ):
        sensor("old.raw").poke(context={})


# ------------------------------------------------------------------ FAILED, unknown ids, outages


def test_failed_keeps_waiting_by_default(aws_conn, staged, task_log) -> None:
    set_record(
        "s.raw",
        backup_status=BackupStatus.FAILED,
        s3_backup_details="LocalFileChangedError: s.raw has 3 bytes but the inventory says 4",
    )
    assert sensor().poke(context={}) is False
    log = task_log()
    assert "inventory says 4" in log and "may still fix it" in log
    run_backup("s.raw")  # a retry of the upload fixed it
    assert sensor().poke(context={})


def test_failed_fails_fast_when_asked(aws_conn, staged) -> None:
    set_record(
        "s.raw",
        backup_status=BackupStatus.FAILED,
        s3_backup_details="BucketNotFoundError: bucket 'kraken-lab-x' does not exist",
    )
    with pytest.raises(
        AirflowFailException, match=r"fail_on_failed=True.*bucket 'kraken-lab-x' does not exist"
    ):
        sensor(fail_on_failed=True).execute(context={})


def test_unknown_raw_file_fails_clearly(aws_conn, kraken_mongo) -> None:
    with pytest.raises(
        AirflowFailException, match=r"cannot verify raw file 'typo\.raw': No RawFile 'typo\.raw'"
    ):
        sensor("typo.raw").execute(context={})


def test_mongo_outage_means_wait(aws_conn, staged, monkeypatch, task_log) -> None:
    def unavailable(raw_file_id):
        raise MongoUnavailableError("MongoDB unavailable while reading the document")

    monkeypatch.setattr(store, "get_raw_file", unavailable)
    assert sensor().poke(context={}) is False
    assert "cannot read the RawFile right now" in task_log()


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_s3_unreachable_means_wait(moto_server, monkeypatch, s3_client, staged, task_log) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json(moto_server.url))
    run_backup("s.raw")
    closed = aws_connection_json("http://127.0.0.1:9", retries={"max_attempts": 1}, connect_timeout=1)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DOWN", closed)
    assert sensor(aws_conn_id="aws_down").poke(context={}) is False
    assert "S3 not answering properly" in task_log()


# ------------------------------------------------------------------ explicit mode


def test_explicit_keys_mode(aws_conn, s3_client, bucket, kraken_mongo, kraken_db) -> None:
    s3_client.put_object(Bucket=bucket, Key="a/one", Body=b"one")
    etag_one = etag_of(s3_client, bucket, "a/one")
    etag_two = hashlib.md5(b"two").hexdigest()
    check = sensor(
        None,
        bucket=bucket,
        keys=["a/one", "a/two"],
        expected_etags={"a/one": f'"{etag_one.upper()}"', "a/two": etag_two},
        expected_sizes={"a/one": 3},
    )
    assert check.poke(context={}) is False  # a/two not there yet: wait
    s3_client.put_object(Bucket=bucket, Key="a/two", Body=b"two")
    returned = check.poke(context={})
    assert returned.xcom_value["raw_file_id"] is None and returned.xcom_value["bucket"] == bucket
    assert returned.xcom_value["objects"] == [
        {"key": "a/one", "etag": etag_one, "size": 3},
        {"key": "a/two", "etag": etag_two, "size": 3},
    ]
    s3_client.put_object(Bucket=bucket, Key="a/two", Body=b"changed")
    with pytest.raises(
        AirflowFailException, match=r"^S3 disagrees with the expected objects: a/two: ETag expected"
    ):
        check.poke(context={})
    assert kraken_db.raw_file.count_documents({}) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, r"missing \['bucket', 'expected_etags', 'keys'\]"),
        ({"raw_file_id": "x.raw", "bucket": "b"}, r"not both \(also got \['bucket'\]\)"),
        ({"raw_file_id": "x.raw", "expected_sizes": {"k": 1}}, "not both"),
        ({"bucket": "b", "keys": ["k"]}, r"missing \['expected_etags'\]"),
        ({"bucket": "b", "keys": ["k", "j"], "expected_etags": {"k": "e"}}, r"no ETag for \['j'\]"),
    ],
)
def test_arguments_are_validated_at_init(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        S3BackupVerifiedSensor(task_id="v", **kwargs)


def test_templated_arguments_are_validated_after_rendering() -> None:
    check = S3BackupVerifiedSensor(
        task_id="v", bucket="{{ params.bucket }}", keys="{{ params.keys }}", expected_etags={"k": "e"}
    )
    assert set(check.template_fields) == {
        *("raw_file_id", "bucket", "keys", "expected_etags", "expected_sizes"),
        *("aws_conn_id", "region_name", "verify"),  # the Amazon provider's, as on its own sensors
    }
    check.keys = "{{ not rendered }}"
    check.expected_etags = {}
    with pytest.raises(AirflowFailException, match="invalid expected objects"):
        check.poke(context={})


# ------------------------------------------------------------------ deferrable


def _fire(trigger: BackupVerifiedTrigger) -> dict:
    """Run a trigger the way the triggerer does (first event only) and return the event payload."""

    async def first():
        async for event in trigger.run():
            return event.payload
        return None

    return asyncio.run(asyncio.wait_for(first(), 60))


def test_deferrable_defers_then_completes_with_the_triggers_event(aws_conn, s3_client, staged) -> None:
    check = sensor(deferrable=True, poke_interval=0.1, timeout=600)
    with pytest.raises(TaskDeferred) as deferred:
        check.execute(context={})
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout == timedelta(seconds=600)
    trigger = deferred.value.trigger
    assert trigger.serialize()[1] == {
        "verification": {"raw_file_id": "s.raw", "fail_on_failed": False},
        "mongo_conn_id": "kraken_mongo_default",
        "aws_conn_id": "aws_default",
        "region_name": None,
        "verify": None,
        "botocore_config": None,
        "poll_interval": 0.1,
    }
    run_backup("s.raw")  # the upload finishes while the task is deferred
    event = _fire(trigger)
    assert event["status"] == "success"
    value = check.execute_complete(context={}, event=event)
    assert value["objects"][0]["etag"] == etag_of(s3_client, staged.bucket, "s.raw")


def test_deferrable_trigger_error_fails_the_task(aws_conn, s3_client, staged) -> None:
    check = sensor(deferrable=True, poke_interval=0.1)
    with pytest.raises(TaskDeferred) as deferred:
        check.execute(context={})
    run_backup("s.raw")
    s3_client.delete_object(Bucket=staged.bucket, Key="s.raw")
    event = _fire(deferred.value.trigger)
    assert event["status"] == "error" and event["retryable"] is False
    with pytest.raises(
        AirflowFailException, match=r"^record says DONE but S3 disagrees: .*s\.raw: object missing"
    ):
        check.execute_complete(context={}, event=event)


def test_deferrable_returns_at_once_when_already_verified(aws_conn, staged) -> None:
    run_backup("s.raw")
    value = sensor(deferrable=True).execute(context={})  # no TaskDeferred
    assert value["raw_file_id"] == "s.raw"


def test_deferrable_explicit_mode_hands_its_objects_to_the_trigger(aws_conn, bucket) -> None:
    check = sensor(None, bucket=bucket, keys=["k"], expected_etags={"k": "e" * 32}, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        check.execute(context={})
    assert deferred.value.trigger.serialize()[1] == {
        "verification": {
            "bucket": bucket,
            "keys": ["k"],
            "expected_etags": {"k": "e" * 32},
            "expected_sizes": None,
        },
        "aws_conn_id": "aws_default",
        "region_name": None,
        "verify": None,
        "botocore_config": None,
        "poll_interval": 0.05,
    }


def test_execute_complete_maps_events() -> None:
    check = sensor()
    assert check.execute_complete({}, {"status": "success", "xcom": {"bucket": "b"}}) == {"bucket": "b"}
    with pytest.raises(AirflowFailException, match="S3 disagrees"):
        check.execute_complete({}, {"status": "error", "message": "S3 disagrees", "retryable": False})
    with pytest.raises(AirflowException, match="trigger failed") as retryable:
        check.execute_complete({}, {"status": "error", "message": "trigger failed", "retryable": True})
    assert not isinstance(retryable.value, AirflowFailException)
    with pytest.raises(AirflowSensorTimeout, match=r"not verified within 30\.0 s"):
        check.execute_complete({}, {"status": "timeout", "message": "gave up"})
    with pytest.raises(AirflowException, match="without an event"):
        check.execute_complete({}, None)
    with pytest.raises(AirflowException, match="unexpected event"):
        check.execute_complete({}, {"status": "running"})
