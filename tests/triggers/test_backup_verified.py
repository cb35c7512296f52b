"""BackupVerifiedTrigger: serialisation, and run() driven by asyncio against moto server and mongomock."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import Callable

import pytest
from airflow.triggers.base import BaseTrigger

import airflow_provider_kraken_s3.services.verify as verify_service
from airflow_provider_kraken_s3.core.verdict import DISAGREES_PREFIX, Outcome, SensorStep
from airflow_provider_kraken_s3.records.models import BackupStatus
from airflow_provider_kraken_s3.services.verify import VerificationRound
from airflow_provider_kraken_s3.triggers.backup_verified import CLASSPATH, BackupVerifiedTrigger
from tests.conftest_mongo import set_record
from tests.sensors.test_backup_verified import PART, etag_of, run_backup
from tests.staging import stage_with_bucket


def _import(classpath: str):
    module, _, name = classpath.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


async def _first_event(trigger: BaseTrigger, timeout: float = 60) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload
        raise AssertionError("run() ended without an event")

    return await asyncio.wait_for(first(), timeout)


def fire(trigger: BaseTrigger) -> dict:
    return asyncio.run(_first_event(trigger))


def fire_counting_rounds(
    trigger: BackupVerifiedTrigger, between: dict[int, Callable[[], object]] | None = None
) -> tuple[dict, list[Outcome]]:
    """Run the trigger to its event, recording the outcome of every round it polled.

    ``between[n]`` runs right after round ``n`` decided (before the trigger acts on that outcome), so round
    ``n + 1`` is the first to see its effect: the test says in which round the world changes instead of
    sleeping and hoping the trigger polled in between. Use ``poll_interval=0``: the rounds then follow each
    other at once.
    """
    outcomes: list[Outcome] = []
    real_check = trigger.check_once

    async def counted_check() -> Outcome:
        outcome = await real_check()
        outcomes.append(outcome)
        step = (between or {}).get(len(outcomes))
        if step is not None:
            step()  # blocks the loop briefly; the trigger is between rounds meanwhile
        return outcome

    trigger.check_once = counted_check  # type: ignore[method-assign]
    return fire(trigger), outcomes


@pytest.fixture
def staged(tmp_path, s3_client, kraken_mongo):
    return stage_with_bucket(tmp_path, s3_client, "t.raw", {"t.raw": PART + 11})


# ------------------------------------------------------------------ serialisation


@pytest.mark.parametrize(
    "kwargs",
    [
        {
            "verification": {"raw_file_id": "x.raw", "fail_on_failed": True},
            "mongo_conn_id": "kraken_mongo_prod",
            "aws_conn_id": "aws_backup",
            "region_name": "eu-central-1",
            "verify": "/etc/ssl/lab-ca.pem",
            "botocore_config": {"retries": {"mode": "standard", "max_attempts": 3}},
            "poll_interval": 120.0,
        },
        {
            "verification": {
                "bucket": "b",
                "keys": ["x.d/a", "x.d/b"],
                "expected_etags": {"x.d/a": "a" * 32, "x.d/b": "b" * 32 + "-2"},
                "expected_sizes": {"x.d/b": 12},
            },
            "aws_conn_id": "aws_default",
            "region_name": None,
            "verify": False,
            "botocore_config": None,
            "poll_interval": 5.0,
        },
    ],
)
def test_serialize_round_trip(kwargs) -> None:
    classpath, serialized = BackupVerifiedTrigger(**kwargs).serialize()
    assert (
        classpath == CLASSPATH == "airflow_provider_kraken_s3.triggers.backup_verified.BackupVerifiedTrigger"
    )
    assert serialized == kwargs
    rebuilt = _import(classpath)(**json.loads(json.dumps(serialized)))  # survives JSON, as in the metadata DB
    assert rebuilt.serialize() == (classpath, serialized)
    assert isinstance(rebuilt.verification, VerificationRound)
    assert rebuilt.verification == VerificationRound.from_dict(kwargs["verification"])


def test_serialize_carries_the_round_as_one_dict_of_its_modes_fields() -> None:
    _, kwargs = BackupVerifiedTrigger(verification=VerificationRound(raw_file_id="x.raw")).serialize()
    assert kwargs["verification"] == {"raw_file_id": "x.raw", "fail_on_failed": False}
    assert set(kwargs) == {
        "verification",
        "mongo_conn_id",
        "aws_conn_id",
        "region_name",
        "verify",
        "botocore_config",
        "poll_interval",
    }
    _, explicit = BackupVerifiedTrigger(
        verification=VerificationRound(bucket="b", keys=("k",), expected_etags={"k": "e" * 32})
    ).serialize()
    assert "mongo_conn_id" not in explicit  # explicit mode never reads MongoDB
    assert explicit["verification"] == {
        "bucket": "b",
        "keys": ["k"],
        "expected_etags": {"k": "e" * 32},
        "expected_sizes": None,
    }


#: What the trigger of the previous release serialised (one argument per field of the round): a task
#: deferred before an upgrade resumes in the upgraded triggerer from these.
OLD_RAW_FILE_KWARGS = {
    "raw_file_id": "t.raw",
    "mongo_conn_id": "kraken_mongo_default",
    "aws_conn_id": "aws_default",
    "poll_interval": 0.1,
    "fail_on_failed": False,
}


def test_a_trigger_serialised_by_the_previous_release_still_resumes(aws_conn, s3_client, staged) -> None:
    run_backup("t.raw")
    trigger = _import(CLASSPATH)(**json.loads(json.dumps(OLD_RAW_FILE_KWARGS)))
    assert trigger.verification == VerificationRound(raw_file_id="t.raw", fail_on_failed=False)
    event = fire(trigger)
    assert event["status"] == "success"
    assert event["xcom"]["objects"][0]["etag"] == etag_of(s3_client, staged.bucket, "t.raw")
    assert trigger.serialize()[1]["verification"] == {"raw_file_id": "t.raw", "fail_on_failed": False}


def test_an_old_explicit_mode_trigger_still_resumes(aws_conn, s3_client, bucket) -> None:
    s3_client.put_object(Bucket=bucket, Key="e/k", Body=b"old")
    etag = hashlib.md5(b"old").hexdigest()
    old = {
        "bucket": bucket,
        "keys": ["e/k"],
        "expected_etags": {"e/k": etag},
        "expected_sizes": None,
        "aws_conn_id": "aws_default",
        "poll_interval": 0.1,
    }
    event = fire(_import(CLASSPATH)(**json.loads(json.dumps(old))))
    assert event["status"] == "success"
    assert event["xcom"]["objects"] == [{"key": "e/k", "etag": etag, "size": 3}]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, ValueError),
        ({"raw_file_id": "x", "bucket": "b"}, ValueError),
        ({"bucket": "b", "keys": ["k"], "expected_etags": {}}, ValueError),
        ({"verification": {"raw_file_id": "x"}, "raw_file_id": "y"}, TypeError),
        ({"verification": {"raw_file_id": "x", "colour": "red"}}, TypeError),
        ({"raw_file": "x"}, TypeError),
    ],
)
def test_refuses_bad_arguments(kwargs, error) -> None:
    with pytest.raises(error):
        BackupVerifiedTrigger(**kwargs)


# ------------------------------------------------------------------ run(): RawFile mode


def test_success_event_carries_the_xcom(aws_conn, s3_client, staged, kraken_db) -> None:
    run_backup("t.raw")
    before = kraken_db.raw_file.find_one({"_id": "t.raw"})
    event = fire(
        BackupVerifiedTrigger(verification=VerificationRound(raw_file_id="t.raw"), poll_interval=0.1)
    )
    assert event["status"] == "success"
    assert event["xcom"]["objects"] == [
        {
            "key": "t.raw",
            "etag": etag_of(s3_client, staged.bucket, "t.raw"),
            "size": PART + 11,
            "path": "t.raw",
        }
    ]
    assert event["xcom"]["bucket"] == staged.bucket and event["xcom"]["raw_file_id"] == "t.raw"
    json.dumps(event)
    assert kraken_db.raw_file.find_one({"_id": "t.raw"}) == before


def test_waits_while_not_done_then_succeeds(aws_conn, staged) -> None:
    def failed_once() -> None:  # FAILED: still waiting by default
        set_record("t.raw", backup_status=BackupStatus.FAILED, s3_backup_details="transient, try 1 of 3")

    trigger = BackupVerifiedTrigger(raw_file_id="t.raw", poll_interval=0)
    event, rounds = fire_counting_rounds(trigger, {3: failed_once, 5: lambda: run_backup("t.raw")})
    assert event["status"] == "success" and event["xcom"]["raw_file_id"] == "t.raw"
    assert len(rounds) == 6  # rounds 1-3: not DONE yet; 4-5: FAILED; 6: backed up, so the event
    assert [r.action for r in rounds[:5]] == [SensorStep.WAIT] * 5
    assert all("FAILED" not in r.message.upper() for r in rounds[:3])
    assert all("transient, try 1 of 3" in r.message for r in rounds[3:5])


def test_tampered_after_done_gives_error_event(aws_conn, s3_client, staged) -> None:
    run_backup("t.raw")
    recorded = etag_of(s3_client, staged.bucket, "t.raw")
    s3_client.put_object(Bucket=staged.bucket, Key="t.raw", Body=b"x" * 10)
    event = fire(
        BackupVerifiedTrigger(verification=VerificationRound(raw_file_id="t.raw"), poll_interval=0.1)
    )
    assert event["status"] == "error" and event["retryable"] is False
    assert event["message"].startswith(DISAGREES_PREFIX)
    assert f"t.raw: ETag expected {recorded}, found {hashlib.md5(b'x' * 10).hexdigest()}" in event["message"]
    assert f"size expected {PART + 11} bytes, found 10 bytes" in event["message"]


def test_failed_with_fail_on_failed_gives_error_event(aws_conn, staged) -> None:
    set_record(
        "t.raw", backup_status=BackupStatus.FAILED, s3_backup_details="BucketAccessDeniedError: access denied"
    )
    event = fire(
        BackupVerifiedTrigger(
            verification=VerificationRound(raw_file_id="t.raw", fail_on_failed=True), poll_interval=0.1
        )
    )
    assert event["status"] == "error" and "access denied" in event["message"] and not event["retryable"]


def test_unknown_raw_file_gives_error_event(aws_conn, kraken_mongo) -> None:
    event = fire(
        BackupVerifiedTrigger(verification=VerificationRound(raw_file_id="typo.raw"), poll_interval=0.1)
    )
    assert event["status"] == "error" and "No RawFile 'typo.raw'" in event["message"]


def test_unexpected_exception_gives_retryable_error_event(aws_conn, staged, monkeypatch) -> None:
    def broken(connect, mongo_conn_id, raw_file_id):
        raise RuntimeError("driver bug")

    monkeypatch.setattr(verify_service, "read_raw_file_record", broken)
    event = fire(
        BackupVerifiedTrigger(verification=VerificationRound(raw_file_id="t.raw"), poll_interval=0.1)
    )
    assert event == {
        "status": "error",
        "message": "backup verification trigger failed: RuntimeError: driver bug",
        "retryable": True,
    }


def test_mongo_reads_do_not_block_the_event_loop(aws_conn, staged, monkeypatch) -> None:
    """The blocking store read runs in a thread: the event loop runs other work while it is in progress.

    The read does not return until the loop has run a callback scheduled from inside it. Were the read run
    on the loop's own thread, that callback could only run after the read returned: the wait times out and
    the trigger reports the error instead of success.
    """
    real = verify_service.read_raw_file_record
    loop_ran_meanwhile = threading.Event()
    loops: list[asyncio.AbstractEventLoop] = []

    def read_needing_the_loop(connect, mongo_conn_id, raw_file_id):
        loops[0].call_soon_threadsafe(loop_ran_meanwhile.set)
        if not loop_ran_meanwhile.wait(timeout=30):
            raise AssertionError("the event loop did not run while the RawFile was being read")
        return real(connect, mongo_conn_id, raw_file_id)

    monkeypatch.setattr(verify_service, "read_raw_file_record", read_needing_the_loop)
    run_backup("t.raw")

    async def scenario():
        loops.append(asyncio.get_running_loop())
        return await _first_event(BackupVerifiedTrigger(raw_file_id="t.raw", poll_interval=0))

    event = asyncio.run(scenario())
    assert event["status"] == "success", event
    assert loop_ran_meanwhile.is_set()


# ------------------------------------------------------------------ run(): explicit mode


def test_explicit_mode_waits_for_missing_objects_then_succeeds(aws_conn, s3_client, bucket) -> None:
    data = b"explicit"
    etag = hashlib.md5(data).hexdigest()

    trigger = BackupVerifiedTrigger(
        bucket=bucket,
        keys=["e/k"],
        expected_etags={"e/k": etag},
        expected_sizes={"e/k": 8},
        poll_interval=0,
    )
    event, rounds = fire_counting_rounds(
        trigger, {3: lambda: s3_client.put_object(Bucket=bucket, Key="e/k", Body=data)}
    )
    assert [r.action for r in rounds] == [SensorStep.WAIT] * 3 + [SensorStep.SUCCESS]  # missing, then there
    assert event["status"] == "success"
    assert event["xcom"]["objects"] == [{"key": "e/k", "etag": etag, "size": 8}]
    assert event["xcom"]["raw_file_id"] is None


def test_explicit_mode_wrong_object_gives_error_event(aws_conn, s3_client, bucket) -> None:
    s3_client.put_object(Bucket=bucket, Key="e/k", Body=b"other")
    trigger = BackupVerifiedTrigger(
        verification=VerificationRound(bucket=bucket, keys=["e/k"], expected_etags={"e/k": "0" * 32}),
        poll_interval=0.1,
    )
    event = fire(trigger)
    assert event["status"] == "error"
    assert event["message"].startswith(
        "S3 disagrees with the expected objects: e/k: ETag expected " + "0" * 32
    )


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_s3_outage_means_wait(moto_server, monkeypatch, bucket) -> None:
    from tests.conftest import aws_connection_json

    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DOWN", aws_connection_json("http://127.0.0.1:9", retries={"max_attempts": 1})
    )
    trigger = BackupVerifiedTrigger(
        verification=VerificationRound(bucket=bucket, keys=["k"], expected_etags={"k": "0" * 32}),
        aws_conn_id="aws_down",
        poll_interval=0.1,
    )
    outcome = asyncio.run(trigger.check_once())
    assert outcome.action.value == "wait" and "S3 not answering properly" in outcome.message
