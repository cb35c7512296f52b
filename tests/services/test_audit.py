"""The audit against real backups: the operator uploads to moto_server (HTTP), records live in mongomock."""

from __future__ import annotations

import hashlib
import json
import random
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_kraken_s3.core.audit import AuditFindingKind, AuditSummary, render_json_lines
from airflow_provider_kraken_s3.core.naming import bucket_name
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.records.queries import RecordFilter, done_records
from airflow_provider_kraken_s3.services.audit import iter_audit, run_audit
from tests.conftest import aws_connection_json
from tests.conftest_mongo import insert_raw_file
from tests.faults import FaultProxy, respond
from tests.staging import stage_raw_file

PART = 5 * MIB
JANUARY = datetime(2024, 1, 10, tzinfo=timezone.utc)


@pytest.fixture
def lab(aws_conn, s3_client, kraken_mongo, tmp_path: Path):
    """Raw files really backed up by the operator, each project in a bucket of this test's own prefix."""
    prefix = f"audit-{uuid.uuid4().hex[:8]}"
    buckets: set[str] = set()

    def bucket_of(project: str) -> str:
        name = bucket_name(prefix, project)
        if name not in buckets:
            s3_client.create_bucket(Bucket=name)
            buckets.add(name)
        return name

    def backed_up(
        raw_file_id: str,
        sizes: dict[str, int],
        *,
        project: str = "P1",
        instrument: str = "astral1",
        created_at: datetime = JANUARY,
    ) -> str:
        bucket = bucket_of(project)
        stage_raw_file(
            tmp_path / raw_file_id,
            raw_file_id,
            sizes,
            project_id=project,
            instrument_id=instrument,
            created_at=created_at,
        )
        RawFileS3BackupOperator(
            task_id="upload_to_s3", raw_file_id=raw_file_id, bucket_prefix=prefix, part_size=PART
        ).execute(context={})
        assert RawFile.objects.get(id=raw_file_id).backup_status == BackupStatus.DONE
        return bucket

    yield SimpleNamespace(backed_up=backed_up, bucket_of=bucket_of)
    for name in buckets:
        for item in s3_client.list_objects_v2(Bucket=name).get("Contents", []):
            s3_client.delete_object(Bucket=name, Key=item["Key"])
        s3_client.delete_bucket(Bucket=name)


def access(conn_id: str = "aws_default"):
    return KrakenS3Hook(aws_conn_id=conn_id).access()


def by_record(findings) -> dict[str, list[tuple[str, str | None]]]:
    grouped: dict[str, list[tuple[str, str | None]]] = {}
    for finding in findings:
        grouped.setdefault(finding.raw_file_id, []).append((finding.kind.value, finding.key))
    return grouped


def test_a_clean_backup_audits_ok(lab) -> None:
    lab.backed_up("c.raw", {"c.raw": 2 * PART + 3})  # a multipart object, HEAD
    lab.backed_up("c.d", {"c.d/analysis.tdf": 1000, "c.d/analysis.tdf_bin": PART + 7, "c.d/sub/x.method": 0})
    lab.backed_up("c.wiff", {"c.wiff": 100, "c.wiff.scan": 200})
    report = run_audit(access())
    assert report.ok and report.summary.records == 3
    assert by_record(report.findings) == {
        "c.d": [("ok", "c.d/analysis.tdf"), ("ok", "c.d/analysis.tdf_bin"), ("ok", "c.d/sub/x.method")],
        "c.raw": [("ok", "c.raw")],
        "c.wiff": [("ok", "c.wiff/c.wiff"), ("ok", "c.wiff/c.wiff.scan")],
    }
    multipart = next(f for f in report.findings if f.key == "c.raw")
    assert multipart.found_etag.endswith("-3") and multipart.found_size == 2 * PART + 3


def test_missing_different_and_extra_objects_are_found(lab, s3_client) -> None:
    bucket = lab.backed_up("m.d", {"m.d/a": 1000, "m.d/b": 2000, "m.d/sub/c": 3000})
    lab.backed_up("m.raw", {"m.raw": 500})
    lab.backed_up("o.raw", {"o.raw": 600})
    lab.backed_up("fine.raw", {"fine.raw": 10})
    s3_client.delete_object(Bucket=bucket, Key="m.d/a")
    s3_client.put_object(Bucket=bucket, Key="m.d/b", Body=random.Random(1).randbytes(2000))  # same size
    s3_client.put_object(Bucket=bucket, Key="m.d/extra.tmp", Body=b"left behind")
    s3_client.delete_object(Bucket=bucket, Key="m.raw")
    s3_client.put_object(Bucket=bucket, Key="o.raw", Body=random.Random(2).randbytes(600))

    report = run_audit(access())

    assert not report.ok
    assert by_record(report.findings) == {
        "fine.raw": [("ok", "fine.raw")],
        "m.d": [
            ("missing", "m.d/a"),
            ("different", "m.d/b"),
            ("ok", "m.d/sub/c"),
            ("extra", "m.d/extra.tmp"),
        ],
        "m.raw": [("missing", "m.raw")],
        "o.raw": [("different", "o.raw")],
    }
    assert report.summary.as_dict() == {
        "ok": False,
        "records": 4,
        "records_with_problems": 3,
        "objects_ok": 2,
        "missing": 2,
        "different": 2,
        "extra": 1,
        "record_problems": 0,
        "unchecked": 0,
    }
    overwritten = next(f for f in report.findings if f.key == "o.raw")
    assert overwritten.found_etag == hashlib.md5(random.Random(2).randbytes(600)).hexdigest()
    assert overwritten.expected_etag != overwritten.found_etag and overwritten.found_size == 600

    lines = [json.loads(line) for line in render_json_lines(report.findings, report.summary).splitlines()]
    problems = {(line["kind"], line["key"]) for line in lines[:-1] if line["kind"] != "ok"}
    assert problems == {
        ("missing", "m.d/a"),
        ("different", "m.d/b"),
        ("extra", "m.d/extra.tmp"),
        ("missing", "m.raw"),
        ("different", "o.raw"),
    }
    extra = next(line for line in lines if line["kind"] == "extra")
    assert (extra["bucket"], extra["found_size"], extra["path"]) == (bucket, len(b"left behind"), None)
    assert lines[-1] == {"kind": "summary", **report.summary.as_dict()}


def test_filters_by_project_instrument_and_creation_date(lab) -> None:
    lab.backed_up(
        "f1.raw", {"f1.raw": 10}, project="P1", created_at=datetime(2024, 1, 5, tzinfo=timezone.utc)
    )
    lab.backed_up(
        "f2.raw", {"f2.raw": 10}, project="P2", created_at=datetime(2024, 2, 5, tzinfo=timezone.utc)
    )
    lab.backed_up(
        "f3.raw",
        {"f3.raw": 10},
        project="P1",
        instrument="exploris1",
        created_at=datetime(2024, 3, 5, 23, 59),
    )
    insert_raw_file("f4.raw", project_id="P1", backup_status=BackupStatus.COPYING_DONE)  # not backed up

    def audited(**conditions) -> list[str]:
        seen: list[str] = []
        report = run_audit(
            access(),
            RecordFilter(**conditions),
            max_workers=2,
            batch_size=1,
            on_record=lambda a: seen.append(a.raw_file_id),
        )
        assert report.ok and report.summary.records == len(seen)
        return seen

    assert audited() == ["f1.raw", "f2.raw", "f3.raw"]
    assert audited(project_ids=("P1",)) == ["f1.raw", "f3.raw"]
    assert audited(project_ids=("P2", "P1")) == ["f1.raw", "f2.raw", "f3.raw"]
    assert audited(instrument_ids=("exploris1",)) == ["f3.raw"]
    assert audited(
        created_from=datetime(2024, 2, 1, tzinfo=timezone.utc), created_before=datetime(2024, 3, 1)
    ) == ["f2.raw"]
    assert audited(project_ids=("P1",), created_from=datetime(2024, 2, 1)) == ["f3.raw"]
    assert audited(project_ids=("P3",)) == []


def test_streaming_keeps_the_order_of_the_records(lab) -> None:
    for index in range(5):
        lab.backed_up(f"s{index}.raw", {f"s{index}.raw": 10 + index})
    summary = AuditSummary()
    order = []
    for audit in iter_audit(access(), done_records(batch_size=2), max_workers=1):  # 2 read ahead at most
        summary.add(audit)
        order.append(audit.raw_file_id)
    assert order == [f"s{index}.raw" for index in range(5)] and summary.ok and summary.records == 5


def test_a_transient_or_denied_answer_leaves_that_record_unchecked(lab, moto_server, monkeypatch) -> None:
    lab.backed_up("t.d", {"t.d/a": 10, "t.d/b": 20})  # a set: one listing
    lab.backed_up("u.raw", {"u.raw": 30})
    lab.backed_up("v.raw", {"v.raw": 40})
    proxy = FaultProxy(moto_server.port)
    proxy.add(
        respond("ListObjectsV2", 400, "ExpiredToken", message="The provided token has expired.", times=None)
    )
    proxy.add(respond("HeadObject", 403, "AccessDenied", key="v.raw", times=None))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_PROXY", aws_connection_json(proxy.url))
    with proxy.running():
        report = run_audit(access("aws_proxy"))
    assert by_record(report.findings) == {
        "t.d": [("unchecked", "t.d/")],
        "u.raw": [("ok", "u.raw")],
        "v.raw": [("unchecked", None)],
    }
    assert not report.ok and report.summary.counts[AuditFindingKind.UNCHECKED] == 2
    expired, denied = (f for f in report.findings if f.kind is AuditFindingKind.UNCHECKED)
    assert "ExpiredToken" in expired.detail and "retrying will resume" in expired.detail
    assert "access denied" in denied.detail


def test_a_missing_bucket_makes_every_object_missing(lab) -> None:
    insert_raw_file(
        "gone.d",
        project_id="P1",
        backup_status=BackupStatus.DONE,
        s3_bucket=f"audit-gone-{uuid.uuid4().hex[:8]}",
        file_info={"gone.d/a": [1, "0" * 32, f"{'0' * 32}__5"], "gone.d/b": [2, "1" * 32, f"{'1' * 32}__5"]},
    )
    report = run_audit(access())
    assert by_record(report.findings) == {"gone.d": [("missing", "gone.d/a"), ("missing", "gone.d/b")]}
    assert all("does not exist" in finding.detail for finding in report.findings)
