"""SSE-C: the key comes from the aws connection's extra, travels on every object request and nowhere else.

moto 5.2 neither enforces nor echoes SSE-C (it stores the bytes in the clear and answers without the key), so
what is tested here is what the client does: the three SSE-C headers on every object-level request the
provider makes (read from the FaultProxy's request records), none on bucket-level requests and listings, and
the key in no log line and no error. That S3 refuses a request without the key, and decrypts with it, is
AWS's part and not tested against moto.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.transfer.access import SSE_C_OPERATIONS, S3Access, SseCustomerKey
from airflow_provider_kraken_s3.transfer.attributes import object_attributes
from airflow_provider_kraken_s3.transfer.download import download_object, head_object
from airflow_provider_kraken_s3.transfer.listing import list_prefix
from tests.faults import FaultProxy

PART = 5 * 1024**2
KEY = bytes(range(32))
KEY_TEXT = base64.b64encode(KEY).decode()
KEY_MD5 = base64.b64encode(hashlib.md5(KEY).digest()).decode()

#: The wire names of the operations that must carry the key (S3Access names them as boto3 methods).
OBJECT_OPERATIONS = {
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "ListParts",
    "HeadObject",
    "GetObject",
    "GetObjectAttributes",
}


def connection(url: str, **extra: object) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": url, "region_name": "us-east-1", **extra},
        }
    )


def carries_key(headers: dict[str, str]) -> bool:
    return (
        headers.get("x-amz-server-side-encryption-customer-algorithm") == "AES256"
        and headers.get("x-amz-server-side-encryption-customer-key") == KEY_TEXT
        and headers.get("x-amz-server-side-encryption-customer-key-md5") == KEY_MD5
    )


def redact(text: str) -> str:
    try:
        from airflow.sdk.log import redact as airflow_redact
    except ImportError:  # Airflow 2.11
        from airflow.utils.log.secrets_masker import redact as airflow_redact
    return str(airflow_redact(text))


def test_the_boto3_names_of_the_object_operations_are_the_ones_tested() -> None:
    snake = {
        "".join(f"_{c.lower()}" if c.isupper() else c for c in name).lstrip("_") for name in OBJECT_OPERATIONS
    }
    assert snake == set(SSE_C_OPERATIONS)


def test_every_object_request_carries_the_key_and_nothing_else_does(
    proxy: FaultProxy, s3_client, bucket, make_file, monkeypatch, task_log
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection(proxy.url, sse_customer_key=KEY_TEXT))
    hook = KrakenS3Hook(aws_conn_id="aws_default")
    access = hook.access()
    assert access.sse_customer_key == SseCustomerKey(KEY)
    path = make_file("run.d/analysis.tdf", 2 * PART + 100)
    small = make_file("run.d/small.bin", 1000)
    hook.upload_verified(path, bucket, "run.d/analysis.tdf", part_size=PART)
    hook.upload_verified(small, bucket, "run.d/small.bin", part_size=PART)
    head = head_object(access, bucket, "run.d/analysis.tdf")
    assert head is not None
    result = download_object(access, bucket, head, range_size=PART, max_concurrency=2)
    assert result.md5 == hashlib.md5(path.read_bytes()).hexdigest()
    assert object_attributes(access, bucket, "run.d/small.bin") is not None
    assert set(list_prefix(access, bucket, "run.d/")) == {"run.d/analysis.tdf", "run.d/small.bin"}

    seen = {record.operation for record in proxy.requests}
    assert {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"} <= seen
    assert {"HeadObject", "GetObject", "GetObjectAttributes", "ListObjectsV2"} <= seen
    for record in proxy.requests:
        if record.operation in OBJECT_OPERATIONS:
            assert carries_key(record.headers), record
        else:
            assert not any("customer-key" in name for name in record.headers), record
    # The key is in no log line, no repr, and the masker hides it wherever it would show.
    assert KEY_TEXT not in task_log()
    assert KEY_TEXT not in repr(access) and KEY_TEXT not in repr(access.sse_customer_key)
    assert KEY_TEXT not in redact(f"x-amz-server-side-encryption-customer-key: {KEY_TEXT}")


@pytest.mark.parametrize("content", [KEY, f"{KEY_TEXT}\n".encode()], ids=["raw bytes", "base64 text"])
def test_the_key_may_come_from_a_file_on_the_worker(tmp_path, monkeypatch, proxy, content: bytes) -> None:
    key_file = tmp_path / "sse-c.key"
    key_file.write_bytes(content)
    os.chmod(key_file, 0o600)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection(proxy.url, sse_customer_key_file=str(key_file)))
    assert KrakenS3Hook(aws_conn_id="aws_default").access().sse_customer_key == SseCustomerKey(KEY)


@pytest.mark.parametrize(
    "extra",
    [
        {"sse_customer_key": "not base64!"},
        {"sse_customer_key": base64.b64encode(b"short").decode()},
        {"sse_customer_key": KEY_TEXT, "sse_customer_key_file": "/etc/key"},
        {"sse_customer_key_file": "/nonexistent/sse-c.key"},
    ],
    ids=["not base64", "16 bytes", "both", "no such file"],
)
def test_a_bad_key_setting_is_refused_without_showing_the_key(monkeypatch, proxy, extra) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", connection(proxy.url, **extra))
    with pytest.raises(InvalidInputError) as caught:
        KrakenS3Hook(aws_conn_id="aws_default").access()
    assert "aws_default" in str(caught.value)
    assert KEY_TEXT not in str(caught.value) and "not base64!" not in str(caught.value)


def test_without_a_key_no_request_names_one(access: S3Access, proxy: FaultProxy, s3_client, bucket) -> None:
    s3_client.put_object(Bucket=bucket, Key="a.raw", Body=b"x")
    assert head_object(access, bucket, "a.raw") is not None
    assert not any("customer-key" in name for r in proxy.requests for name in r.headers)
