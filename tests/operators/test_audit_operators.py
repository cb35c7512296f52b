"""S3BackupAuditOperator and S3BackupReconcileOperator on real backups (moto_server, mongomock)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_kraken_s3.operators.audit import S3BackupAuditOperator, S3BackupReconcileOperator
from airflow_provider_kraken_s3.records.models import RawFile
from tests.conftest import BACKED_UP_BUCKET, aws_connection_json
from tests.conftest_mongo import insert_raw_file
from tests.faults import FaultProxy, respond


def test_a_clean_audit_returns_the_counts(backed_up) -> None:
    backed_up("c1.raw", {"c1.raw": 1000})
    backed_up("c2.d", {"c2.d/a.tdf": 10, "c2.d/a.tdf_bin": 20})

    summary = S3BackupAuditOperator(task_id="audit").execute(context={})

    assert summary["ok"] is True and summary["records"] == 2 and summary["objects_ok"] == 3


def test_an_object_overwritten_behind_our_back_fails_the_audit_without_retry(
    backed_up, s3_client, task_log
) -> None:
    backed_up("o1.raw", {"o1.raw": 1000})
    key = RawFile.objects.get(id="o1.raw").s3_backup_key
    s3_client.put_object(Bucket=BACKED_UP_BUCKET, Key=key, Body=b"x" * 1000)

    with pytest.raises(AirflowFailException, match="do not delete its instrument copy"):
        S3BackupAuditOperator(task_id="audit").execute(context={})
    log = task_log()
    assert "different" in log and key in log


def test_filters_and_recent_window(backed_up) -> None:
    backed_up("f1.raw", {"f1.raw": 10})  # created 2024-01-01 (insert_raw_file's default)

    assert S3BackupAuditOperator(task_id="audit", project_ids=["P1234"]).execute(context={})["records"] == 1
    other = S3BackupAuditOperator(task_id="audit", instrument_ids=["other"], allow_empty=True)
    assert other.execute(context={})["records"] == 0
    recent = S3BackupAuditOperator(task_id="audit", created_within=timedelta(days=30), allow_empty=True)
    assert recent.execute(context={})["records"] == 0


def test_an_audit_that_matched_nothing_fails_unless_allowed(backed_up) -> None:
    backed_up("e1.raw", {"e1.raw": 10})  # created 2024-01-01: outside a 30-day window

    recent = S3BackupAuditOperator(task_id="audit", created_within=timedelta(days=30))
    with pytest.raises(AirflowFailException, match=r"NOTHING CHECKED.*allow_empty=True"):
        recent.execute(context={})


def test_s3_not_answering_is_retried_not_failed(backed_up, moto_server, monkeypatch) -> None:
    backed_up("t1.raw", {"t1.raw": 10})
    proxy = FaultProxy(moto_server.port)
    proxy.add(respond("HeadObject", 503, "SlowDown", times=None))
    with proxy.running():
        monkeypatch.setenv(
            "AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json(proxy.url, retries={"max_attempts": 1})
        )
        with pytest.raises(AirflowException, match="retrying") as raised:
            S3BackupAuditOperator(task_id="audit").execute(context={})
    assert not isinstance(raised.value, AirflowFailException)


def test_reconcile_fails_a_dead_attempt(aws_conn, kraken_mongo, bucket) -> None:
    insert_raw_file(
        "dead.raw",
        backup_status="upload_in_progress",
        s3_bucket=bucket,
        s3_lease_owner="upload_to_s3/run/try1#dead",
        s3_lease_expires_at=datetime.now(timezone.utc) - timedelta(minutes=5),
    )

    report = S3BackupReconcileOperator(task_id="reconcile", buckets=[bucket]).execute(context={})

    assert [(s["raw_file_id"], s["action"]) for s in report["stuck"]] == [("dead.raw", "failed")]
    assert RawFile.objects.get(id="dead.raw").backup_status == "upload_failed"
