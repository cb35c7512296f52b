"""S3BackupVerifiedSensor on the Amazon provider's ``AwsBaseSensor``: the AWS arguments reach the client of
every round, poking and deferred (the trigger carries them), and ``deferrable`` defaults to Airflow's
``[operators] default_deferrable`` as on the Amazon provider's sensors.

Requests go to moto_server through the fault proxy, which records their headers (User-Agent, and the SigV4
credential scope naming the region the client signed for).
"""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest
from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.common.compat.sdk import PokeReturnValue, TaskDeferred

from airflow_provider_kraken_s3.core.verdict import SensorStep
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.sensors.backup_verified import S3BackupVerifiedSensor
from airflow_provider_kraken_s3.services.verify import VerificationRound
from airflow_provider_kraken_s3.triggers.backup_verified import CLASSPATH, BackupVerifiedTrigger
from tests.conftest import aws_connection_json
from tests.faults import FaultProxy, RequestRecord, respond
from tests.sensors.test_backup_verified import PART, etag_of, run_backup, sensor
from tests.staging import stage_with_bucket as stage_raw_file

MARK = "kraken-sensor-test/1"
AWS_ARGUMENTS = {
    "region_name": "eu-west-3",
    "verify": False,
    "botocore_config": {"user_agent_extra": MARK, "retries": {"mode": "standard", "max_attempts": 2}},
}


@pytest.fixture
def via_proxy(proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_VIA_PROXY", aws_connection_json(proxy.url))
    return "aws_via_proxy"


def signed_region(record: RequestRecord) -> str:
    credential = record.headers["authorization"].split("Credential=", 1)[1].split(",", 1)[0]
    return credential.split("/")[2]


def assert_configured(records: list[RequestRecord]) -> None:
    assert records, "no request reached S3"
    assert all(MARK in record.headers["user-agent"] for record in records)
    assert {signed_region(record) for record in records} == {"eu-west-3"}


def rebuilt(trigger: BackupVerifiedTrigger) -> BackupVerifiedTrigger:
    """The trigger as the triggerer gets it: serialised to JSON (the metadata DB) and rebuilt."""
    classpath, kwargs = trigger.serialize()
    assert classpath == CLASSPATH
    return BackupVerifiedTrigger(**json.loads(json.dumps(kwargs)))


def fire(trigger: BackupVerifiedTrigger) -> dict:
    async def first():
        async for event in trigger.run():
            return event.payload
        raise AssertionError("run() ended without an event")

    return asyncio.run(asyncio.wait_for(first(), 60))


def test_the_sensor_is_an_amazon_sensor_with_our_hook() -> None:
    assert issubclass(S3BackupVerifiedSensor, AwsBaseSensor)
    assert S3BackupVerifiedSensor.aws_hook_class is KrakenS3Hook
    check = sensor(aws_conn_id="aws_lab", **AWS_ARGUMENTS)
    assert isinstance(check.hook, KrakenS3Hook)
    assert (check.hook.aws_conn_id, check.hook.region_name, check.hook.verify) == (
        "aws_lab",
        "eu-west-3",
        False,
    )


def test_poking_rounds_use_region_verify_and_botocore_config(
    aws_conn, tmp_path, s3_client, kraken_mongo, proxy, via_proxy
) -> None:
    staged = stage_raw_file(tmp_path, s3_client, "p.d", {"p.d/a": 10, "p.d/b": PART + 1})
    run_backup("p.d")  # straight to moto: none of these requests pass the proxy

    returned = sensor("p.d", aws_conn_id=via_proxy, **AWS_ARGUMENTS).poke(context={})

    assert isinstance(returned, PokeReturnValue) and returned.is_done
    assert {o["key"]: o["etag"] for o in returned.xcom_value["objects"]} == {
        key: etag_of(s3_client, staged.bucket, key) for key in ("p.d/a", "p.d/b")
    }
    assert [r.operation for r in proxy.requests] == ["ListObjectsV2"]  # a set: one listing
    assert_configured(proxy.requests)


def test_deferred_rounds_use_the_same_aws_arguments(
    aws_conn, tmp_path, s3_client, kraken_mongo, proxy, via_proxy
) -> None:
    staged = stage_raw_file(tmp_path, s3_client, "d.raw", {"d.raw": PART + 7})
    check = sensor("d.raw", aws_conn_id=via_proxy, deferrable=True, poke_interval=0.1, **AWS_ARGUMENTS)
    with pytest.raises(TaskDeferred) as deferred:
        check.execute(context={})  # not backed up yet: the first round (poking) waits, then it defers
    trigger = rebuilt(deferred.value.trigger)
    assert trigger.serialize()[1] | {"verification": None} == {
        "verification": None,
        "mongo_conn_id": "kraken_mongo_default",
        "aws_conn_id": via_proxy,
        **AWS_ARGUMENTS,
        "poll_interval": 0.1,
    }
    run_backup("d.raw")
    before = len(proxy.requests)

    event = fire(trigger)

    assert event["status"] == "success"
    assert event["xcom"]["objects"][0]["etag"] == etag_of(s3_client, staged.bucket, "d.raw")
    deferred_requests = proxy.requests[before:]
    assert [r.operation for r in deferred_requests] == ["HeadObject"]
    assert_configured(deferred_requests)
    assert check.execute_complete(context={}, event=event) == event["xcom"]


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_botocore_retries_reach_the_client_in_both_modes(bucket, proxy, via_proxy, kraken_mongo) -> None:
    """S3 answers 503 to every HEAD: with ``max_attempts=2`` each round makes 3 attempts, then waits."""
    proxy.add(respond("HeadObject", 503, "SlowDown", times=None))
    etag = hashlib.md5(b"x").hexdigest()
    check = sensor(
        None, bucket=bucket, keys=["k"], expected_etags={"k": etag}, aws_conn_id=via_proxy, **AWS_ARGUMENTS
    )

    assert check.poke(context={}) is False
    assert len(proxy.records("HeadObject")) == 3  # botocore: the first call and max_attempts=2 retries

    outcome = asyncio.run(rebuilt(check.trigger()).check_once())
    assert outcome.action is SensorStep.WAIT and "S3 not answering properly" in outcome.message
    assert len(proxy.records("HeadObject")) == 6
    assert_configured(proxy.requests)


# ------------------------------------------------------------------ deferrable default


def test_deferrable_defaults_to_false_without_configuration(monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)
    assert sensor().deferrable is False


def test_deferrable_defaults_to_the_operators_default_deferrable_setting(
    monkeypatch, aws_conn, tmp_path, s3_client, kraken_mongo
) -> None:
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    stage_raw_file(tmp_path, s3_client, "c.raw", {"c.raw": 10})
    check = sensor("c.raw")
    assert check.deferrable is True
    with pytest.raises(TaskDeferred) as deferred:  # not backed up: it defers instead of poking on
        check.execute(context={})
    assert deferred.value.trigger.verification == VerificationRound(raw_file_id="c.raw")
    assert sensor("c.raw", deferrable=False).deferrable is False  # an explicit argument wins
