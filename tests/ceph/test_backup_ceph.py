"""Bucket provisioning, RawFileS3BackupOperator and S3BackupVerifiedSensor against Ceph RGW 16 (HTTP, HTTPS)."""

from __future__ import annotations

import hashlib
import random
import uuid

import pytest
from airflow.providers.common.compat.sdk import PokeReturnValue

from airflow_provider_kraken_s3.core.naming import bucket_name
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.sensors.backup_verified import S3BackupVerifiedSensor
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag
from tests.conftest_mongo import insert_raw_file

pytestmark = pytest.mark.ceph

PART = 5 * MIB
PREFIX = "kraken-ceph"


def test_create_backup_bucket_reports_what_ceph_refuses_and_the_owner_can_write(
    ceph_conn, s3, new_bucket_name, make_file, task_log
) -> None:
    """Ceph refuses PutBucketEncryption (InvalidArgument) and, with BlockPublicAcls, denies the owner's own
    writes. Neither stops provisioning; both are reported; the bucket is usable for backups."""
    name = new_bucket_name()
    hook = KrakenS3Hook(aws_conn_id=ceph_conn)
    hook.create_backup_bucket(name, tags={"project_id": "P1"})
    log = task_log()
    assert log.count("lacks default encryption (SSE-S3): the store refused put_bucket_encryption") == 1, log
    assert "(InvalidArgument)" in log and "InvalidArgument: None" not in log
    assert "right after public access was blocked" in log and "not missing IAM permissions" in log
    assert "grant s3:" not in log.lower()
    assert "LACKS: default encryption (SSE-S3)" in log

    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    assert s3.get_bucket_tagging(Bucket=name)["TagSet"] == [
        {"Key": "ManagedBy", "Value": "alphakraken"},
        {"Key": "project_id", "Value": "P1"},
    ]
    rules = s3.get_bucket_lifecycle_configuration(Bucket=name)["Rules"]
    assert rules[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": False,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    assert s3.list_multipart_uploads(Bucket=name).get("Uploads", []) == []  # the write check left nothing

    for size in (1000, 2 * PART + 1):  # the owner writes: single PUT and multipart
        path = make_file(f"o{size}.raw", size)
        result = hook.upload_verified(path, name, path.name, part_size=PART)
        assert result.etag == compute_s3_etag(path, PART)
    hook.check_bucket(name)


# ------------------------------------------------------------------ operator and sensor, end to end


@pytest.fixture
def raw_file(tmp_path, kraken_mongo, new_bucket_name):
    """A Bruker-like ``.d`` folder (single-PUT and multipart files) with its RawFile, in a new project."""
    project = f"p{uuid.uuid4().hex[:10]}"
    bucket = bucket_name(PREFIX, project)
    new_bucket_name(exact=bucket)  # cleaned up after the test
    base = tmp_path / "backup"
    sizes = {"e.d/analysis.tdf": 1000, "e.d/analysis.tdf_bin": 2 * PART + 7, "e.d/sub/empty": 0}
    file_info = {}
    for index, (relative, size) in enumerate(sizes.items()):
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = random.Random(index).randbytes(size)
        path.write_bytes(data)
        file_info[relative] = [size, hashlib.md5(data).hexdigest()]
    insert_raw_file(
        "e.d", size=sum(sizes.values()), project_id=project, backup_base_path=str(base), file_info=file_info
    )
    return bucket, sizes


def test_operator_backs_up_and_sensor_verifies(ceph_conn, s3, raw_file, task_log) -> None:
    bucket, sizes = raw_file
    operator = RawFileS3BackupOperator(
        task_id="upload_to_s3",
        raw_file_id="e.d",
        bucket_prefix=PREFIX,
        part_size=PART,
        create_bucket_if_missing=True,
    )
    result = operator.execute(context={})
    raw = RawFile.objects.get(id="e.d")
    assert raw.backup_status == BackupStatus.DONE, raw.s3_backup_details
    assert result["bucket"] == raw.s3_bucket == bucket and raw.s3_backup_key == "e.d/"
    assert result["bytes_uploaded"] == sum(sizes.values()) and result["files"] == 3
    for key in sizes:
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        assert raw.file_info[key][2] == f"{etag}__{PART // MIB}"
    assert "access denied" not in task_log().lower()

    sensor = S3BackupVerifiedSensor(
        task_id="verify_backup", raw_file_id="e.d", poke_interval=0.05, timeout=30
    )
    returned = sensor.poke(context={})
    assert isinstance(returned, PokeReturnValue) and returned.is_done
    assert sorted(o["key"] for o in returned.xcom_value["objects"]) == sorted(sizes)

    again = operator.execute(context={})  # everything proven from HEAD: nothing read, nothing sent
    assert again["files_skipped"] == 3 and again["bytes_uploaded"] == 0
