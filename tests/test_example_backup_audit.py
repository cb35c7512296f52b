"""example_dags/backup_audit.py under ``airflow dags test`` (a subprocess), on real backups.

The raw files are backed up in this process (moto_server + mongomock) and handed to the DAG run as a
mongomock seed (tests/dag_runner.py); S3 is the same moto server for both processes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import BACKED_UP_BUCKET
from tests.conftest_mongo import insert_raw_file
from tests.dag_runner import load_mongo_dump, mongo_snapshot, run_dag, task_states, xcom_return_value

pytestmark = pytest.mark.slow  # full DAG runs (airflow dags test in a subprocess)

DAG_ID = "backup_audit"


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("backup-audit-home")


@pytest.fixture
def archive(backed_up, kraken_db):
    """Two recent verified backups and one record a killed worker left in progress; the seed for the run."""
    backed_up("good.d", {"good.d/analysis.tdf": 1500, "good.d/analysis.tdf_bin": 6 * 1024**2 + 5})
    backed_up("good.raw", {"good.raw": 4096})
    now = datetime.now(timezone.utc)
    insert_raw_file(
        "dead.raw",
        backup_status="upload_in_progress",
        s3_bucket=BACKED_UP_BUCKET,
        s3_lease_owner="upload_to_s3/run/try1#dead",
        s3_lease_expires_at=now - timedelta(minutes=10),
    )
    kraken_db.raw_file.update_many({}, {"$set": {"created_at": now - timedelta(days=1)}})
    return lambda: mongo_snapshot(kraken_db)


def documents(dump: Path) -> dict[str, dict]:
    [database] = load_mongo_dump(dump).values()
    return {doc["_id"]: doc for doc in database["raw_file"]}


def test_a_healthy_archive_passes_every_check_and_records_the_fixity(archive, airflow_home, tmp_path) -> None:
    dump = tmp_path / "after.json"
    done = run_dag(
        DAG_ID, {"deep_verify": "always"}, airflow_home=airflow_home, mongo_seed=archive(), mongo_dump=dump
    )
    output = (done.stdout + done.stderr)[-6000:]

    assert task_states(airflow_home, DAG_ID) == {
        ("reconcile", -1): "success",
        ("audit_recent", -1): "success",
        ("is_deep_verify_day", -1): "success",
        ("deep_verify_sample", -1): "success",
    }, output
    assert xcom_return_value(airflow_home, DAG_ID, "audit_recent")["objects_ok"] == 3
    records = documents(dump)
    assert (
        records["dead.raw"]["backup_status"] == "upload_failed"
        and "#dead" in records["dead.raw"]["s3_backup_details"]
    )
    for raw_file_id in ("good.d", "good.raw"):
        assert records[raw_file_id]["backup_status"] == "upload_done"
        assert records[raw_file_id]["s3_verify_outcome"].startswith("ok"), records[raw_file_id]
        assert records[raw_file_id]["s3_verified_at"]


def test_bytes_changed_behind_our_back_fail_audit_and_deep_verify(
    archive, s3_client, airflow_home, tmp_path
) -> None:
    seed = archive()
    key = "good.raw"
    s3_client.put_object(Bucket=BACKED_UP_BUCKET, Key=key, Body=b"y" * 4096)  # same size, other bytes
    dump = tmp_path / "after.json"
    done = run_dag(
        DAG_ID, {"deep_verify": "always"}, airflow_home=airflow_home, mongo_seed=seed, mongo_dump=dump
    )
    output = done.stdout + done.stderr

    states = task_states(airflow_home, DAG_ID)
    assert states[("audit_recent", -1)] == "failed" and states[("deep_verify_sample", -1)] == "failed", (
        output[-6000:]
    )
    assert "do not delete its instrument copy" in output
    records = documents(dump)
    assert records["good.raw"]["backup_status"] == "upload_failed"
    assert "deep verification" in records["good.raw"]["s3_backup_details"]
    assert records["good.d"]["backup_status"] == "upload_done"


def test_deep_verify_waits_for_its_day(archive, airflow_home) -> None:
    done = run_dag(DAG_ID, {"deep_verify": "never"}, airflow_home=airflow_home, mongo_seed=archive())
    states = task_states(airflow_home, DAG_ID)
    assert states[("deep_verify_sample", -1)] == "skipped", (done.stdout + done.stderr)[-4000:]
    assert states[("audit_recent", -1)] == "success"


def test_an_audit_with_nothing_to_read_is_not_green(aws_conn, kraken_mongo, airflow_home) -> None:
    """As under a scheduler with an embedded (so, in each task, empty) store: the audit checked nothing."""
    done = run_dag(DAG_ID, {"deep_verify": "never"}, airflow_home=airflow_home)
    output = (done.stdout + done.stderr)[-6000:]

    assert task_states(airflow_home, DAG_ID)[("audit_recent", -1)] == "failed", output
    assert "NOTHING CHECKED" in output and "allow_empty=True" in output
