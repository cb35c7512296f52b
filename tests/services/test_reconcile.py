"""Reconcile against moto_server (HTTP) and mongomock: stuck records, orphan multipart uploads, denied listings."""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_kraken_s3.core.errors import InvalidInputError, S3TransientError
from airflow_provider_kraken_s3.core.naming import bucket_name
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from airflow_provider_kraken_s3.records import lease, queries
from airflow_provider_kraken_s3.records.models import BackupStatus
from airflow_provider_kraken_s3.services.reconcile import (
    LIST_UPLOADS_PERMISSION,
    OrphanAction,
    StuckAction,
    reconcile,
)
from tests.conftest import aws_connection_json
from tests.conftest_mongo import insert_raw_file, set_record
from tests.faults import CuttingProxy, Fault, FaultProxy, ProxiedResponse, RequestRecord, Respond

PART = 5 * MIB
DEAD = "upload_to_s3/scheduled__2024-01-01/try1#0123456789ab"


def access(conn_id: str = "aws_default"):
    return KrakenS3Hook(aws_conn_id=conn_id).access()


def now() -> datetime:
    return datetime.now(timezone.utc)


def document(kraken_db, raw_file_id: str) -> dict:
    return kraken_db.raw_file.find_one({"_id": raw_file_id})


def in_progress(raw_file_id: str, **fields) -> None:
    """A record as an attempt leaves it while uploading (or when its worker is killed mid-way)."""
    insert_raw_file(raw_file_id, backup_status=BackupStatus.IN_PROGRESS, **fields)


# --------------------------------------------------------------------------- stuck records


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_a_killed_workers_record_is_failed_with_the_reason_and_the_next_run_resumes(
    moto_server, monkeypatch, aws_conn, s3_client, kraken_db, tmp_path: Path
) -> None:
    prefix = f"rec-{uuid.uuid4().hex[:8]}"
    bucket = bucket_name(prefix, "P1234")
    s3_client.create_bucket(Bucket=bucket)
    data = random.Random(5).randbytes(6 * PART)
    (tmp_path / "k.raw").write_bytes(data)
    insert_raw_file(
        "k.raw",
        size=len(data),
        project_id="P1234",
        backup_base_path=str(tmp_path),
        file_info={"k.raw": [len(data), hashlib.md5(data).hexdigest()]},
    )

    def backup(conn_id: str, **context) -> dict:
        return RawFileS3BackupOperator(
            task_id="upload_to_s3", raw_file_id="k.raw", bucket_prefix=prefix, part_size=PART,
            aws_conn_id=conn_id, retries=2, max_concurrency=1,
        ).execute(context=context)  # fmt: skip

    # The first attempt's connection goes down mid-upload: a real multipart upload with some parts stays.
    proxy = CuttingProxy(moto_server.port, cut_after=3 * PART)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_FLAKY", aws_connection_json(proxy.url, retries={"max_attempts": 2}))
    with proxy.running(), pytest.raises(S3TransientError):
        backup("aws_flaky", ti=SimpleNamespace(try_number=1))
    (entry,) = document(kraken_db, "k.raw")["s3_uploads"]
    kept_parts = len(s3_client.list_parts(Bucket=bucket, Key="k.raw", UploadId=entry["upload_id"])["Parts"])
    assert kept_parts >= 1
    # What a SIGKILLed worker leaves instead of its FAILED: in progress, a lease nobody renews any more.
    expired = (now() - timedelta(minutes=3)).replace(microsecond=0)
    set_record(
        "k.raw", backup_status=BackupStatus.IN_PROGRESS, s3_lease_owner=DEAD, s3_lease_expires_at=expired
    )

    report = reconcile(access(), buckets=[bucket])

    doc = document(kraken_db, "k.raw")
    assert doc["backup_status"] == BackupStatus.FAILED
    assert "s3_lease_owner" not in doc and "s3_lease_expires_at" not in doc  # released
    assert doc["s3_uploads"] == [entry]  # kept for the next attempt
    details = doc["s3_backup_details"]
    assert DEAD in details and f"expired at {expired:%Y-%m-%d %H:%M:%S} UTC" in details
    assert "1 multipart upload(s) are kept and the next backup run resumes them" in details
    assert [(s.raw_file_id, s.action) for s in report.stuck] == [("k.raw", StuckAction.FAILED)]
    assert report.stuck[0].details == details
    # Its upload is referenced by the record: kept, though moto dates every upload 2010.
    assert report.orphans == [] and report.kept_uploads == 1 and report.ok

    result = backup("aws_default")
    assert result["status"] == BackupStatus.DONE and result["bytes_uploaded"] == 6 * PART - kept_parts * PART


def test_a_live_lease_is_never_touched(make_raw_file, kraken_db, aws_conn) -> None:
    in_progress(
        "live.raw", s3_lease_owner="t/run/try1#live", s3_lease_expires_at=now() + timedelta(minutes=8)
    )
    in_progress("recent.raw", s3_backup_updated_at=now() - timedelta(hours=2))  # no lease, but recent
    before = [document(kraken_db, "live.raw"), document(kraken_db, "recent.raw")]
    report = reconcile(access())
    assert [document(kraken_db, "live.raw"), document(kraken_db, "recent.raw")] == before
    assert report.stuck == [] and report.ok


def test_a_live_lease_is_never_touched_by_a_host_whose_clock_runs_ahead(
    make_raw_file, kraken_db, aws_conn, monkeypatch
) -> None:
    """Defect 10: reconcile judges a lease by the database server's clock, 11 minutes behind this host's."""
    import mongomock

    monkeypatch.setattr(mongomock, "utcnow", lambda: datetime.utcnow() - timedelta(minutes=11))
    server_now = mongomock.utcnow().replace(tzinfo=timezone.utc)
    in_progress(
        "live.raw", s3_lease_owner="t/run/try1#live", s3_lease_expires_at=server_now + timedelta(minutes=5)
    )
    before = document(kraken_db, "live.raw")
    report = reconcile(access())
    assert document(kraken_db, "live.raw") == before
    assert report.stuck == [] and report.ok


def test_reconcile_loses_the_race_to_a_renewal(make_raw_file, kraken_db, aws_conn, monkeypatch) -> None:
    """The attempt was only frozen: it renews its lease between reconcile's read and its write, and wins."""
    in_progress(
        "slow.raw", s3_lease_owner="t/run/try1#slow", s3_lease_expires_at=now() - timedelta(seconds=30)
    )
    read = queries.stuck_uploads

    def read_then_the_attempt_wakes_up(**kwargs):
        found = read(**kwargs)
        lease.renew("slow.raw", lease.Attempt("t/run/try1#slow"))
        return found

    monkeypatch.setattr(queries, "stuck_uploads", read_then_the_attempt_wakes_up)
    report = reconcile(access())
    doc = document(kraken_db, "slow.raw")
    assert doc["backup_status"] == BackupStatus.IN_PROGRESS and doc["s3_lease_owner"] == "t/run/try1#slow"
    assert doc["s3_lease_expires_at"] > now().replace(tzinfo=None) and "s3_backup_details" not in doc
    assert [(s.raw_file_id, s.action) for s in report.stuck] == [("slow.raw", StuckAction.ALIVE)]


def test_the_conditional_write_matches_only_the_record_as_read(make_raw_file, kraken_db) -> None:
    in_progress("c.raw", s3_lease_owner="t/run/try1#c", s3_lease_expires_at=now() - timedelta(minutes=1))
    (stale,) = queries.stuck_uploads(unleased_older_than=timedelta(days=1))
    lease.claim("c.raw", lease.Attempt("t/run/try2#new"))  # the next attempt took over meanwhile
    assert queries.fail_stuck(stale, "should not be written") is False
    assert document(kraken_db, "c.raw")["s3_lease_owner"] == "t/run/try2#new"
    live = queries.StuckRecord("c.raw", "t/run/try2#new", now() + timedelta(minutes=5), None, 0)
    with pytest.raises(InvalidInputError, match="has not expired"):
        queries.fail_stuck(live, "never")


def test_unleased_records_fail_by_age_and_undated_ones_are_left_alone(
    make_raw_file, kraken_db, aws_conn
) -> None:
    in_progress("old.raw", s3_backup_updated_at=now() - timedelta(days=3))
    in_progress("undated.raw")  # alphakraken's own uploader leaves this; nothing says whether it still runs
    report = reconcile(access(), unleased_age=timedelta(days=2))
    assert [(s.raw_file_id, s.action) for s in report.stuck] == [
        ("old.raw", StuckAction.FAILED),
        ("undated.raw", StuckAction.UNKNOWN_AGE),
    ]
    old = document(kraken_db, "old.raw")
    assert old["backup_status"] == BackupStatus.FAILED and "without a lease" in old["s3_backup_details"]
    assert "the next backup run starts it again" in old["s3_backup_details"]
    assert document(kraken_db, "undated.raw")["backup_status"] == BackupStatus.IN_PROGRESS
    assert "of unknown age (left alone)" in report.describe()


# --------------------------------------------------------------------------- orphan multipart uploads


@dataclass
class InitiatedAt(Fault):
    """Report ``when`` as the initiation time of one upload (moto reports one constant date in 2010)."""

    upload_id: str
    when: datetime

    def on_response(self, record: RequestRecord, response: ProxiedResponse) -> None:
        stamp = self.when.strftime("%Y-%m-%dT%H:%M:%S.000Z").encode()
        pattern = rb"(<UploadId>" + re.escape(self.upload_id.encode()) + rb"</UploadId>.*?<Initiated>)[^<]*"
        response.body = re.sub(pattern, lambda m: m.group(1) + stamp, response.body, count=1, flags=re.DOTALL)


@dataclass
class DenyBucket(Respond):
    """Answer one bucket's requests of the operation with an error, let the other buckets' through."""

    bucket: str = ""

    def armed_for(self, record: RequestRecord) -> bool:
        return super().armed_for(record) and record.bucket == self.bucket


def start_upload(s3_client, bucket: str, key: str) -> str:
    upload_id = s3_client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    s3_client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1000)
    return upload_id


def open_uploads(s3_client, bucket: str) -> set[str]:
    return {u["UploadId"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}


@pytest.fixture
def uploads(s3_client, bucket, make_raw_file, moto_server, monkeypatch):
    """Three incomplete uploads in a bucket a RawFile names: an old orphan, a referenced one, a young one."""
    ids = SimpleNamespace(
        orphan=start_upload(s3_client, bucket, "lost.raw"),
        referenced=start_upload(s3_client, bucket, "resumed.raw"),
        young=start_upload(s3_client, bucket, "starting.raw"),
    )
    entry = {"path": "resumed.raw", "key": "resumed.raw", "upload_id": ids.referenced, "part_size": PART}
    insert_raw_file(
        "resumed.raw",
        backup_status=BackupStatus.FAILED,
        s3_bucket=bucket,
        s3_uploads=[{**entry, "expect": "md5:0"}],
    )
    proxy = FaultProxy(moto_server.port)
    proxy.add(InitiatedAt("ListMultipartUploads", ids.young, now() - timedelta(hours=1), times=None))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_PROXY", aws_connection_json(proxy.url))
    with proxy.running():
        yield ids


def test_an_old_unreferenced_upload_is_listed_not_aborted(uploads, s3_client, bucket) -> None:
    report = reconcile(access("aws_proxy"), orphan_age=timedelta(days=7))  # the bucket comes from the RawFile
    assert report.buckets == [bucket]
    assert [(o.bucket, o.key, o.upload_id, o.action) for o in report.orphans] == [
        (bucket, "lost.raw", uploads.orphan, OrphanAction.LISTED)
    ]
    assert report.orphans[0].initiated == datetime(2010, 11, 10, 20, 48, 33, tzinfo=timezone.utc)
    assert report.kept_uploads == 2 and report.ok
    assert open_uploads(s3_client, bucket) == {uploads.orphan, uploads.referenced, uploads.young}
    assert "abort=True (--abort-orphans) aborts them" in report.describe()


def test_orphans_are_aborted_only_when_asked(uploads, s3_client, bucket) -> None:
    dry = reconcile(access("aws_proxy"), abort=True, dry_run=True)
    assert [(o.upload_id, o.action) for o in dry.orphans] == [(uploads.orphan, OrphanAction.WOULD_ABORT)]
    assert dry.describe().startswith("reconcile (DRY RUN: nothing was changed)")
    assert open_uploads(s3_client, bucket) == {uploads.orphan, uploads.referenced, uploads.young}

    report = reconcile(access("aws_proxy"), abort=True)
    assert [(o.upload_id, o.action) for o in report.orphans] == [(uploads.orphan, OrphanAction.ABORTED)]
    assert open_uploads(s3_client, bucket) == {uploads.referenced, uploads.young}
    assert report.as_dict()["orphans"][0] == {
        "bucket": bucket,
        "key": "lost.raw",
        "upload_id": uploads.orphan,
        "initiated": "2010-11-10T20:48:33+00:00",
        "action": "aborted",
        "detail": "",
    }


def test_a_dry_run_changes_no_record(make_raw_file, kraken_db, aws_conn) -> None:
    in_progress("d.raw", s3_lease_owner=DEAD, s3_lease_expires_at=now() - timedelta(minutes=1))
    before = document(kraken_db, "d.raw")
    report = reconcile(access(), dry_run=True)
    assert document(kraken_db, "d.raw") == before
    assert [(s.raw_file_id, s.action) for s in report.stuck] == [("d.raw", StuckAction.WOULD_FAIL)]
    assert "1 record(s) would be marked upload_failed" in report.describe()


def test_a_denied_listing_names_the_permission_and_the_rest_goes_on(
    s3_client, make_raw_file, kraken_db, moto_server, monkeypatch
) -> None:
    denied, allowed = (f"kraken-test-{uuid.uuid4().hex[:12]}" for _ in range(2))
    for name in (denied, allowed):
        s3_client.create_bucket(Bucket=name)
    start_upload(s3_client, denied, "a.raw")
    orphan = start_upload(s3_client, allowed, "b.raw")
    in_progress("s.raw", s3_lease_owner=DEAD, s3_lease_expires_at=now() - timedelta(minutes=1))
    proxy = FaultProxy(moto_server.port)
    proxy.add(DenyBucket("ListMultipartUploads", 403, "AccessDenied", bucket=denied, times=None))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_PROXY", aws_connection_json(proxy.url))
    with proxy.running():
        report = reconcile(access("aws_proxy"), buckets=[denied, allowed])
    assert not report.ok and len(report.problems) == 1
    (problem,) = report.problems
    assert denied in problem and LIST_UPLOADS_PERMISSION in problem and "s3:AbortMultipartUpload" in problem
    assert report.buckets == [allowed]
    assert [(o.bucket, o.upload_id) for o in report.orphans] == [(allowed, orphan)]
    assert document(kraken_db, "s.raw")["backup_status"] == BackupStatus.FAILED
    assert report.describe().splitlines()[-2:] == [f"problem: {problem}", "NOT OK: 1 problem(s)"]
