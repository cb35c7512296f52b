"""Fixtures of the upload-side transfer tests: a verified upload, and a sender's shipment, through the proxy."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from airflow_provider_kraken_s3.core.parts import MIB, plan_parts
from airflow_provider_kraken_s3.transfer.progress import ProgressReporter
from airflow_provider_kraken_s3.transfer.shipment import Shipment
from airflow_provider_kraken_s3.transfer.upload import VerifiedUpload

#: The part size of these tests: S3's smallest, so a multipart file costs a few MiB.
PART = 5 * MIB
LOG = logging.getLogger("kraken.test.transfer")


@pytest.fixture
def verified_upload(access, bucket):
    """``verified_upload(path, key=path.name, **fields)`` → a :class:`VerifiedUpload` through the proxy."""

    def make(path: Path, key: str | None = None, **fields) -> VerifiedUpload:
        fields.setdefault("part_size", PART)
        fields.setdefault("bucket", bucket)
        return VerifiedUpload(access=access, path=path, key=key or path.name, log=LOG, **fields)

    return make


@pytest.fixture
def shipment(access, bucket):
    """``shipment(path, key=path.name, part_size=PART, **fields)`` → a :class:`Shipment` through the proxy,
    planned as the upload plans it (a fixed part size when an ETag is expected)."""

    def make(path: Path, key: str | None = None, *, part_size: int = PART, **fields) -> Shipment:
        stat = path.stat()
        plan = plan_parts(stat.st_size, part_size, fixed=fields.get("expected_etag") is not None)
        fields.setdefault("bucket", bucket)
        fields.setdefault("cancel", threading.Event())
        return Shipment(
            access=access,
            path=path,
            stat=stat,
            plan=plan,
            key=key or path.name,
            log=LOG,
            reporter=ProgressReporter(LOG, key or path.name, stat.st_size),
            **fields,
        )

    return make


def versioned(s3_client, bucket: str) -> str:
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def etag_in_s3(s3_client, bucket: str, key: str) -> str:
    return s3_client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def body_in_s3(s3_client, bucket: str, key: str) -> bytes:
    return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()


def uploads_in_s3(s3_client, bucket: str) -> list[str]:
    return [u["UploadId"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
