"""Fixtures for the Ceph RADOS Gateway tests (marker ``ceph``): a second, independent S3 implementation.

Start the gateway with ``scripts/ceph-rgw start`` and source what it prints (``source .ceph/env``). The
fixtures read ``KRAKEN_CEPH_HTTP_URL``, ``KRAKEN_CEPH_HTTPS_URL``, ``KRAKEN_CEPH_ACCESS_KEY``,
``KRAKEN_CEPH_SECRET_KEY`` and ``KRAKEN_CEPH_CA_BUNDLE``; without them every Ceph test is skipped, unless
``KRAKEN_REQUIRE_CEPH=1`` (CI), which turns the skip into a failure.

Each test gets Airflow ``aws`` connections pointing at Ceph (over HTTP, or over HTTPS with ``verify`` set to
the test CA), a plain boto3 client for arranging and checking, and buckets unique to the test, emptied
(every version, every unfinished upload) and deleted afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import boto3
import pytest
from botocore.config import Config

from airflow_provider_kraken_s3.transfer import access as access_module

ENV = ("KRAKEN_CEPH_HTTP_URL", "KRAKEN_CEPH_HTTPS_URL", "KRAKEN_CEPH_ACCESS_KEY", "KRAKEN_CEPH_SECRET_KEY")
SCHEMES = ("http", "https")


@dataclass(frozen=True)
class CephGateway:
    http_url: str
    https_url: str
    access_key: str
    secret_key: str
    ca_bundle: str

    def url(self, scheme: str) -> str:
        return self.http_url if scheme == "http" else self.https_url

    def connection_json(self, scheme: str, **config_kwargs: object) -> str:
        """An ``aws`` Airflow connection for this gateway; HTTPS verifies against the test CA (``verify``)."""
        extra: dict[str, object] = {"endpoint_url": self.url(scheme), "region_name": "us-east-1"}
        if scheme == "https":
            extra["verify"] = self.ca_bundle
        if config_kwargs:
            extra["config_kwargs"] = config_kwargs
        return json.dumps(
            {"conn_type": "aws", "login": self.access_key, "password": self.secret_key, "extra": extra}
        )

    def client(self, scheme: str = "http"):
        """A plain boto3 client for arranging and checking (not the code under test). It sends no
        streamed checksums, which Ceph 16 cannot read over HTTPS."""
        return boto3.client(
            "s3",
            endpoint_url=self.url(scheme),
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            verify=self.ca_bundle if scheme == "https" else None,
            config=Config(request_checksum_calculation="when_required", retries={"max_attempts": 5}),
        )


@pytest.fixture(scope="session")
def ceph() -> CephGateway:
    missing = [name for name in (*ENV, "KRAKEN_CEPH_CA_BUNDLE") if not os.environ.get(name)]
    if missing:
        reason = (
            f"Ceph RGW not configured ({', '.join(missing)} unset): run `scripts/ceph-rgw start` and "
            "`source .ceph/env` to run the Ceph tests"
        )
        if os.environ.get("KRAKEN_REQUIRE_CEPH") == "1":
            pytest.fail(f"KRAKEN_REQUIRE_CEPH=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    gateway = CephGateway(
        http_url=os.environ["KRAKEN_CEPH_HTTP_URL"],
        https_url=os.environ["KRAKEN_CEPH_HTTPS_URL"],
        access_key=os.environ["KRAKEN_CEPH_ACCESS_KEY"],
        secret_key=os.environ["KRAKEN_CEPH_SECRET_KEY"],
        ca_bundle=os.environ["KRAKEN_CEPH_CA_BUNDLE"],
    )
    try:
        gateway.client("http").list_buckets()
    except Exception as error:  # a stale env file: say so instead of failing every test obscurely
        pytest.fail(f"Ceph RGW at {gateway.http_url} does not answer ({error}); scripts/ceph-rgw start")
    return gateway


@pytest.fixture(autouse=True)
def _fresh_checksum_probe() -> Iterator[None]:
    """Each test starts as a fresh process would: no endpoint is yet known to refuse streamed checksums."""
    forget = getattr(access_module, "forget_checksum_fallbacks", None)
    if forget is not None:
        forget()
    yield
    if forget is not None:
        forget()


@pytest.fixture(params=SCHEMES)
def scheme(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def ceph_conn(ceph: CephGateway, scheme: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``aws_default`` (and ``aws_ceph_<scheme>``) → Ceph over the test's scheme, as production configures it."""
    connection = ceph.connection_json(scheme)
    monkeypatch.setenv(f"AIRFLOW_CONN_AWS_CEPH_{scheme.upper()}", connection)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection)
    return f"aws_ceph_{scheme}"


@pytest.fixture
def s3(ceph: CephGateway):
    """Plain boto3 client (HTTP) for arranging and checking."""
    return ceph.client("http")


def empty_and_delete(client, bucket: str) -> None:
    """Remove every version, delete marker and unfinished upload, then the bucket (best effort: a cleanup
    failure must not hide the test's own outcome). The public access block goes first: on Ceph 16 it can
    deny the owner's own requests."""
    from botocore.exceptions import ClientError

    with contextlib.suppress(ClientError):
        client.delete_public_access_block(Bucket=bucket)
    try:
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                client.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
        client.delete_bucket(Bucket=bucket)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NoSuchBucket":
            print(f"cleanup of bucket {bucket} failed: {error}")


@pytest.fixture
def new_bucket_name(s3) -> Iterator[Callable[[], str]]:
    """Factory of bucket names unique to the test; every bucket named is emptied and deleted afterwards."""
    names: list[str] = []

    def make(prefix: str = "kraken-ceph", *, exact: str | None = None) -> str:
        names.append(exact or f"{prefix}-{uuid.uuid4().hex[:12]}")
        return names[-1]

    yield make
    for name in names:
        empty_and_delete(s3, name)


@pytest.fixture
def bucket(s3, new_bucket_name) -> str:
    """A plain (unversioned) bucket unique to the test."""
    name = new_bucket_name()
    s3.create_bucket(Bucket=name)
    return name
