"""Deep verification, restore and audit against Ceph RGW 16 (HTTP, HTTPS), after a real backup by the operator.

Ceph is a second S3 implementation: its ranged GETs, If-Match answers and multipart ETags must give the same
conclusions as moto's. Not covered here: a same-size, same-ETag forgery (the object rotted behind S3's ETag).
Through the plain S3 API a client can only store bytes whose ETag Ceph computes itself, so such a forgery
cannot be produced on Ceph; the moto lane covers it with the FaultProxy
(``tests/services/test_deep_verify.py``).
"""

from __future__ import annotations

import hashlib
import random
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_kraken_s3.core.deep_verify import DeepVerifyOutcome
from airflow_provider_kraken_s3.core.errors import BackupInterrupted
from airflow_provider_kraken_s3.core.naming import bucket_name
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.records.models import BackupStatus
from airflow_provider_kraken_s3.records.queries import RecordFilter
from airflow_provider_kraken_s3.services.audit import run_audit
from airflow_provider_kraken_s3.services.deep_verify import deep_verify_raw_file
from airflow_provider_kraken_s3.services.restore import RestoreOutcome, restore_raw_file
from airflow_provider_kraken_s3.transfer.placement import partial_path
from tests.conftest_mongo import insert_raw_file

pytestmark = pytest.mark.ceph

PART = 5 * MIB
RANGE = MIB
PREFIX = "kraken-ceph"
SET = {"e.d/analysis.tdf": 1000, "e.d/analysis.tdf_bin": PART + 7, "e.d/sub/empty": 0}
SINGLE = {"m.raw": 2 * PART + 5}  # three parts: a multipart ETag computed by Ceph


@pytest.fixture
def lab(ceph_conn, kraken_mongo, new_bucket_name, tmp_path: Path):
    """Back up raw files through the operator into one new project's bucket (removed after the test)."""
    project = f"p{uuid.uuid4().hex[:10]}"
    bucket = bucket_name(PREFIX, project)
    new_bucket_name(exact=bucket)
    written: dict[str, bytes] = {}

    def backed_up(raw_file_id: str, sizes: dict[str, int]) -> dict[str, bytes]:
        base = tmp_path / "instrument" / raw_file_id
        file_info = {}
        for relative, size in sizes.items():
            data = random.Random(f"{raw_file_id}/{relative}").randbytes(size)
            path = base / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            file_info[relative] = [size, hashlib.md5(data).hexdigest()]
            written[relative] = data
        insert_raw_file(
            raw_file_id,
            size=sum(sizes.values()),
            project_id=project,
            backup_base_path=str(base),
            file_info=file_info,
        )
        RawFileS3BackupOperator(
            task_id="upload_to_s3",
            raw_file_id=raw_file_id,
            bucket_prefix=PREFIX,
            part_size=PART,
            create_bucket_if_missing=True,
        ).execute(context={})
        assert fields(raw_file_id)["backup_status"] == BackupStatus.DONE
        return {relative: written[relative] for relative in sizes}

    return SimpleNamespace(
        bucket=bucket,
        project=project,
        backed_up=backed_up,
        access=KrakenS3Hook(aws_conn_id=ceph_conn).access(),
    )


def fields(raw_file_id: str) -> dict:
    return store.read_fields(
        raw_file_id, "backup_status", "s3_verified_at", "s3_verify_outcome", "s3_backup_details"
    )


def deep(lab, raw_file_id: str):
    return deep_verify_raw_file(lab.access, raw_file_id, range_size=RANGE, max_concurrency=3)


def test_deep_verify_of_a_multipart_file_and_a_d_set_is_ok_and_recorded(lab, s3) -> None:
    lab.backed_up("m.raw", SINGLE)
    lab.backed_up("e.d", SET)
    assert s3.head_object(Bucket=lab.bucket, Key="m.raw")["ETag"].strip('"').endswith("-3")

    for raw_file_id, sizes in (("m.raw", SINGLE), ("e.d", SET)):
        report = deep(lab, raw_file_id)
        assert report.outcome is DeepVerifyOutcome.OK and report.recorded, report.summary()
        assert [(o.key, o.outcome, o.bytes) for o in report.objects] == [
            (key, DeepVerifyOutcome.OK, size) for key, size in sorted(sizes.items())
        ]
        stored = fields(raw_file_id)
        assert stored["backup_status"] == BackupStatus.DONE and stored["s3_verify_outcome"] == "ok"
        assert stored["s3_verified_at"] is not None
    multipart = deep(lab, "m.raw").objects[0]
    assert "is the ETag of those bytes at 5 MiB parts" in multipart.detail


def test_an_object_overwritten_behind_our_back_is_caught_by_the_audit_and_deep_verify_reads_the_recorded_version(
    lab, s3
) -> None:
    """The bucket keeps versions: audit reports the key's new content, while deep verify (like restore) reads the
    version the record vouches for, which still holds the instrument's bytes (issue 13)."""
    data = lab.backed_up("e.d", SET)
    forged = random.Random("forged").randbytes(len(data["e.d/analysis.tdf_bin"]))  # same size, other bytes
    s3.put_object(Bucket=lab.bucket, Key="e.d/analysis.tdf_bin", Body=forged)

    audit = run_audit(lab.access, RecordFilter(project_ids=(lab.project,)))  # first: it audits upload_done
    assert not audit.ok
    assert sorted((f.kind.value, f.key) for f in audit.findings) == [
        ("different", "e.d/analysis.tdf_bin"),
        ("ok", "e.d/analysis.tdf"),
        ("ok", "e.d/sub/empty"),
    ]
    different = next(f for f in audit.findings if f.kind.value == "different")
    assert different.found_etag == hashlib.md5(forged).hexdigest() and different.found_size == len(forged)

    report = deep(lab, "e.d")
    assert report.outcome is DeepVerifyOutcome.OK and report.recorded, report.summary()
    assert {o.key: o.outcome for o in report.objects} == {
        "e.d/analysis.tdf": DeepVerifyOutcome.OK,
        "e.d/analysis.tdf_bin": DeepVerifyOutcome.OK,
        "e.d/sub/empty": DeepVerifyOutcome.OK,
    }
    stored = fields("e.d")
    assert stored["backup_status"] == BackupStatus.DONE and stored["s3_verify_outcome"] == "ok"


def test_a_restored_set_is_byte_identical(lab, tmp_path) -> None:
    data = lab.backed_up("e.d", SET)
    dest = tmp_path / "restored"
    report = restore_raw_file(lab.access, "e.d", dest, range_size=RANGE, max_concurrency=3)
    assert report.ok and {f.outcome for f in report.files} == {RestoreOutcome.RESTORED}, report.summary()
    for relative, content in data.items():
        assert (dest / relative).read_bytes() == content
    assert report.bytes == sum(SET.values())
    assert sorted(dest.rglob("*.kraken-restore")) == []


def test_an_interrupted_restore_resumes_from_its_partial_file(lab, s3, tmp_path) -> None:
    data = lab.backed_up("m.raw", SINGLE)["m.raw"]
    dest = tmp_path / "restored"
    cancel = threading.Event()
    ranges: list[int] = []

    def stop_after_two(count: int) -> None:
        ranges.append(count)
        if len(ranges) == 2:
            cancel.set()

    with pytest.raises(BackupInterrupted):
        restore_raw_file(
            lab.access,
            "m.raw",
            dest,
            range_size=RANGE,
            max_concurrency=1,
            cancel=cancel,
            progress=stop_after_two,
        )
    etag = s3.head_object(Bucket=lab.bucket, Key="m.raw")["ETag"].strip('"')
    partial = partial_path(dest / "m.raw", etag)
    assert not (dest / "m.raw").exists() and partial.stat().st_size == 2 * RANGE

    report = restore_raw_file(lab.access, "m.raw", dest, range_size=RANGE, max_concurrency=3)
    (item,) = report.files
    assert item.outcome is RestoreOutcome.RESTORED and item.resumed_from == 2 * RANGE, item.detail
    assert item.bytes == len(data) - 2 * RANGE
    assert (dest / "m.raw").read_bytes() == data and not partial.exists()
