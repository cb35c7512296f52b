"""Every verification scenario through both modes: the poking sensor's round and the deferred trigger's round
must reach the same verdict, since they run the same read path (issue 13: they used to disagree)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from airflow_provider_kraken_s3.core.verdict import Outcome, SensorStep
from airflow_provider_kraken_s3.records.models import BackupStatus
from airflow_provider_kraken_s3.triggers.backup_verified import BackupVerifiedTrigger
from tests.conftest_mongo import set_record
from tests.sensors.test_backup_verified import PART, run_backup, sensor
from tests.staging import stage_with_bucket


def poke_round(**kwargs) -> Outcome:
    return sensor(**kwargs).check()


def deferred_round(**kwargs) -> Outcome:
    """The sensor's trigger as the triggerer gets it: serialised, through JSON, rebuilt from its classpath."""
    _, serialized = sensor(**kwargs).trigger().serialize()
    return asyncio.run(BackupVerifiedTrigger(**json.loads(json.dumps(serialized))).check_once())


def _done(s3_client, tmp_path) -> dict:
    stage_with_bucket(tmp_path, s3_client, "v.d", {"v.d/a": 10, "v.d/b": PART + 3})
    run_backup("v.d")
    return {"raw_file_id": "v.d"}


def _in_progress(s3_client, tmp_path) -> dict:
    stage_with_bucket(tmp_path, s3_client, "v.raw", {"v.raw": 10})
    set_record("v.raw", backup_status=BackupStatus.IN_PROGRESS)
    return {"raw_file_id": "v.raw"}


def _failed(s3_client, tmp_path, fail_on_failed: bool) -> dict:
    stage_with_bucket(tmp_path, s3_client, "v.raw", {"v.raw": 10})
    set_record("v.raw", backup_status=BackupStatus.FAILED, s3_backup_details="boom")
    return {"raw_file_id": "v.raw", "fail_on_failed": fail_on_failed}


def _tampered(s3_client, tmp_path) -> dict:
    staged = stage_with_bucket(tmp_path, s3_client, "v.raw", {"v.raw": 10})
    run_backup("v.raw")
    s3_client.put_object(Bucket=staged.bucket, Key="v.raw", Body=b"other bytes")
    return {"raw_file_id": "v.raw"}


def _set_in_a_missing_bucket(s3_client, tmp_path) -> dict:
    """The case the two modes disagreed on: FAIL when poking, WAIT when deferred."""
    staged = stage_with_bucket(tmp_path, s3_client, "v.d", {"v.d/a": 10, "v.d/b": 20})
    run_backup("v.d")
    for key in ("v.d/a", "v.d/b"):
        s3_client.delete_object(Bucket=staged.bucket, Key=key)
    for version in s3_client.list_object_versions(Bucket=staged.bucket).get("Versions", []):
        s3_client.delete_object(Bucket=staged.bucket, Key=version["Key"], VersionId=version["VersionId"])
    for marker in s3_client.list_object_versions(Bucket=staged.bucket).get("DeleteMarkers", []):
        s3_client.delete_object(Bucket=staged.bucket, Key=marker["Key"], VersionId=marker["VersionId"])
    s3_client.delete_bucket(Bucket=staged.bucket)
    return {"raw_file_id": "v.d"}


def _project_reassigned_after_done(s3_client, tmp_path) -> dict:
    """The manifest says where the objects are; a changed project_id must not send readers elsewhere."""
    stage_with_bucket(tmp_path, s3_client, "v.raw", {"v.raw": PART + 1})
    run_backup("v.raw")
    set_record("v.raw", project_id="_FALLBACK")
    return {"raw_file_id": "v.raw"}


def _explicit_missing(s3_client, tmp_path) -> dict:
    staged = stage_with_bucket(tmp_path, s3_client, "v.raw", {"v.raw": 10})
    return {
        "raw_file_id": None,
        "bucket": staged.bucket,
        "keys": ["v.raw"],
        "expected_etags": {"v.raw": "0" * 32},
    }


SCENARIOS: dict[str, tuple[Callable[..., dict], SensorStep, str]] = {
    "done": (_done, SensorStep.SUCCESS, "verified 2 object(s)"),
    "in-progress": (_in_progress, SensorStep.WAIT, "in progress"),
    "failed-waits": (lambda c, t: _failed(c, t, False), SensorStep.WAIT, "may still fix it"),
    "failed-fails-when-asked": (lambda c, t: _failed(c, t, True), SensorStep.FAIL, "fail_on_failed=True"),
    "tampered": (_tampered, SensorStep.FAIL, "record says DONE but S3 disagrees"),
    "set-in-a-missing-bucket": (_set_in_a_missing_bucket, SensorStep.FAIL, "does not exist"),
    "project-reassigned-after-done": (
        _project_reassigned_after_done,
        SensorStep.SUCCESS,
        "verified 1 object(s)",
    ),
    "explicit-missing": (_explicit_missing, SensorStep.WAIT, "waiting for"),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("run_round", [poke_round, deferred_round], ids=["poke", "deferred"])
def test_both_modes_reach_the_same_verdict(
    aws_conn, s3_client, tmp_path, kraken_mongo, scenario, run_round
) -> None:
    make, action, words = SCENARIOS[scenario]
    outcome = run_round(**make(s3_client, tmp_path))
    assert outcome.action is action, outcome.message
    assert words in outcome.message
