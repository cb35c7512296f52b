"""Self-tests of the fault-injecting proxy: a real boto3 client → FaultProxy → a real moto_server.

The proxy is only useful if it is transparent when idle and does exactly the advertised damage when armed;
these tests pin both, so a failing upload test can be blamed on the code under test, not on the proxy.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from kraken_standins.s3 import MotoServer
from tests.conftest import client_for, random_bytes
from tests.faults import (
    FaultProxy,
    FaultProxyError,
    RequestRecord,
    after,
    delay,
    flip_byte,
    hold,
    lose_response,
    respond,
    rewrite_etag,
)

PART = 256 * 1024  # moto_server runs with S3_UPLOAD_PART_MIN_SIZE=256, so small parts keep tests fast


def md5_etag(data: bytes) -> str:
    """The quoted ETag S3 gives a single-part object or one part: the MD5 of its bytes."""
    return f'"{hashlib.md5(data).hexdigest()}"'


def split(data: bytes) -> list[bytes]:
    return [data[i : i + PART] for i in range(0, len(data), PART)]


def upload_multipart(client, bucket: str, key: str, data: bytes) -> tuple[list[str], dict]:
    """Upload ``data`` in PART-sized parts, one after the other; return the part ETags and Complete's reply."""
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = [
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part)["ETag"]
        for number, part in enumerate(split(data), start=1)
    ]
    completed = client.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]},
    )
    return etags, completed


def test_idle_proxy_is_transparent(proxy: FaultProxy, bucket: str) -> None:
    """Without faults, objects, ETags and sizes are exactly what moto produces, single- and multipart."""
    client = client_for(proxy.url)
    small, large = random_bytes(300_000, seed=1), random_bytes(2 * PART + 1234, seed=2)

    assert client.put_object(Bucket=bucket, Key="small.raw", Body=small)["ETag"] == md5_etag(small)
    assert client.get_object(Bucket=bucket, Key="small.raw")["Body"].read() == small
    head = client.head_object(Bucket=bucket, Key="small.raw")
    assert (head["ContentLength"], head["ETag"]) == (len(small), md5_etag(small))

    etags, _ = upload_multipart(client, bucket, "large.raw", large)
    assert etags == [md5_etag(part) for part in split(large)]
    assert client.get_object(Bucket=bucket, Key="large.raw")["Body"].read() == large

    assert [r.operation for r in proxy.requests] == [
        "PutObject",
        "GetObject",
        "HeadObject",
        "CreateMultipartUpload",
        "UploadPart",
        "UploadPart",
        "UploadPart",
        "CompleteMultipartUpload",
        "GetObject",
    ]
    assert all(r.status == 200 and not r.fault_fired for r in proxy.requests)


def test_chunked_request_body_and_keep_alive(proxy: FaultProxy, bucket: str) -> None:
    """A chunked body is de-chunked on the way; HEAD and GET then reuse the same client connection."""
    data = random_bytes(100_000, seed=3)
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        chunks = (data[i : i + 7_000] for i in range(0, len(data), 7_000))
        # Unsigned requests: moto accepts them, and public-read lets the anonymous HEAD and GET through.
        headers = {"x-amz-acl": "public-read"}
        connection.request("PUT", f"/{bucket}/chunked.raw", body=chunks, headers=headers, encode_chunked=True)
        put = connection.getresponse()
        put.read()
        connection.request("HEAD", f"/{bucket}/chunked.raw")
        head = connection.getresponse()
        assert (head.status, head.read(), head.getheader("Content-Length")) == (200, b"", str(len(data)))
        connection.request("GET", f"/{bucket}/chunked.raw")
        get = connection.getresponse()
        assert (get.status, get.read()) == (200, data)
    finally:
        connection.close()
    assert put.status == 200 and put.getheader("ETag") == md5_etag(data)
    assert proxy.requests[0].headers["transfer-encoding"] == "chunked"


def test_flip_byte_corrupts_the_stored_part(proxy: FaultProxy, s3_client, bucket: str) -> None:
    """The flipped byte reaches moto, which stores it and reports the ETag of what it received."""
    data = random_bytes(3 * PART, seed=4)
    fault = proxy.add(flip_byte("UploadPart", part_number=2, offset=1000))

    etags, _ = upload_multipart(client_for(proxy.url), bucket, "flipped.raw", data)

    parts = split(data)
    assert etags[0] == md5_etag(parts[0]) and etags[2] == md5_etag(parts[2])
    assert etags[1] != md5_etag(parts[1])
    stored = s3_client.get_object(Bucket=bucket, Key="flipped.raw")["Body"].read()
    assert len(stored) == len(data)
    assert [i for i in range(len(data)) if stored[i] != data[i]] == [PART + 1000]
    assert etags[1] == md5_etag(stored[PART : 2 * PART])
    assert fault.fired == 1
    assert [r.faults for r in proxy.records("UploadPart")] == [[], ["FlipByte"], []]


def test_rewrite_etag_changes_the_reply_not_the_object(proxy: FaultProxy, s3_client, bucket: str) -> None:
    """The client is told a wrong ETag (header, and Complete's XML body) while moto keeps the right one."""
    client = client_for(proxy.url)
    data = random_bytes(10_000, seed=5)
    proxy.add(rewrite_etag("PutObject", "0" * 32))
    proxy.add(rewrite_etag("CompleteMultipartUpload", "f" * 32 + "-2"))

    assert client.put_object(Bucket=bucket, Key="single.raw", Body=data)["ETag"] == f'"{"0" * 32}"'
    _, completed = upload_multipart(client, bucket, "multi.raw", random_bytes(PART + 10, seed=6))

    assert completed["ETag"] == f'"{"f" * 32}-2"'
    assert s3_client.head_object(Bucket=bucket, Key="single.raw")["ETag"] == md5_etag(data)
    assert s3_client.get_object(Bucket=bucket, Key="single.raw")["Body"].read() == data
    assert s3_client.head_object(Bucket=bucket, Key="multi.raw")["ETag"].endswith('-2"')
    assert s3_client.head_object(Bucket=bucket, Key="multi.raw")["ETag"] != completed["ETag"]


def test_one_injected_slowdown_is_absorbed_by_a_retry(proxy: FaultProxy, s3_client, bucket: str) -> None:
    """``times=1``: botocore retries the 503 and the second attempt reaches moto."""
    data = random_bytes(5_000, seed=7)
    proxy.add(respond("PutObject", 503, "SlowDown"))

    client_for(proxy.url, attempts=3).put_object(Bucket=bucket, Key="retried.raw", Body=data)

    attempts = proxy.records("PutObject")
    assert [(r.status, r.faults) for r in attempts] == [(503, ["Respond"]), (200, [])]
    assert s3_client.get_object(Bucket=bucket, Key="retried.raw")["Body"].read() == data


def test_persistent_slowdown_surfaces_after_the_last_attempt(
    proxy: FaultProxy, s3_client, bucket: str
) -> None:
    """``times=None``: every attempt gets the error, so the client raises it; moto never saw the request."""
    proxy.add(respond("PutObject", 503, "SlowDown", message="Please reduce your request rate.", times=None))

    with pytest.raises(ClientError) as raised:
        client_for(proxy.url, attempts=2).put_object(Bucket=bucket, Key="refused.raw", Body=b"x")

    assert raised.value.response["Error"] == {
        "Code": "SlowDown",
        "Message": "Please reduce your request rate.",
    }
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert [r.status for r in proxy.records("PutObject")] == [503, 503]
    assert "Contents" not in s3_client.list_objects_v2(Bucket=bucket)


def test_non_retryable_error_surfaces_on_the_first_attempt(proxy: FaultProxy, bucket: str) -> None:
    """A 404 NoSuchUpload is final for botocore: one attempt, however many are allowed."""
    client = client_for(proxy.url, attempts=3)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="gone.raw")["UploadId"]
    proxy.add(respond("UploadPart", 404, "NoSuchUpload", times=None))

    with pytest.raises(ClientError, match="NoSuchUpload"):
        client.upload_part(Bucket=bucket, Key="gone.raw", UploadId=upload_id, PartNumber=1, Body=b"x" * 500)

    assert [r.status for r in proxy.records("UploadPart")] == [404]


def test_lost_complete_response_leaves_the_object_in_place(proxy: FaultProxy, s3_client, bucket: str) -> None:
    """The client sees a dropped connection, yet moto completed the upload: the ambiguous case to recover."""
    data = random_bytes(PART + 100, seed=8)
    proxy.add(lose_response("CompleteMultipartUpload"))

    with pytest.raises(ConnectionClosedError):
        upload_multipart(client_for(proxy.url, attempts=1), bucket, "lost.raw", data)

    assert [(r.status, r.faults) for r in proxy.records("CompleteMultipartUpload")] == [
        (None, ["LoseResponse"])
    ]
    assert s3_client.get_object(Bucket=bucket, Key="lost.raw")["Body"].read() == data


def test_hold_and_after_order_concurrent_parts(proxy: FaultProxy, bucket: str) -> None:
    """Part 1 is held at the proxy until part 2 has been acknowledged, so part 2 finishes first for sure."""
    client = client_for(proxy.url)
    upload_id = client.create_multipart_upload(Bucket=bucket, Key="ordered.raw")["UploadId"]
    parts = split(random_bytes(2 * PART, seed=9))
    part_1_acknowledged, part_2_acknowledged = threading.Event(), threading.Event()
    acknowledged: list[int | None] = []
    proxy.add(hold("UploadPart", part_2_acknowledged, part_number=1))
    proxy.add(after("UploadPart", lambda record: acknowledged.append(record.part_number), times=None))
    proxy.add(after("UploadPart", lambda record: part_2_acknowledged.set(), part_number=2))
    proxy.add(after("UploadPart", lambda record: part_1_acknowledged.set(), part_number=1))

    def upload(number: int) -> str:
        body = parts[number - 1]
        return client.upload_part(
            Bucket=bucket, Key="ordered.raw", UploadId=upload_id, PartNumber=number, Body=body
        )["ETag"]

    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(upload, 1)
        proxy.wait_for("UploadPart", part_number=1)  # part 1 is now at the proxy, held
        assert not first.done()
        second = pool.submit(upload, 2)
        etags = [first.result(timeout=30), second.result(timeout=30)]

    # The client may return before the proxy thread runs the callbacks: wait for the last one.
    assert part_1_acknowledged.wait(30)
    assert acknowledged == [2, 1]
    assert etags == [md5_etag(part) for part in parts]


def test_delay_slows_the_matching_request_only(proxy: FaultProxy, bucket: str) -> None:
    """A delay on one key's HeadObject leaves other operations at full speed (for timeout tests)."""
    client = client_for(proxy.url)
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    proxy.add(delay("HeadObject", 0.5, key="k"))

    client.head_bucket(Bucket=bucket)
    started = time.monotonic()
    client.head_object(Bucket=bucket, Key="k")

    assert time.monotonic() - started >= 0.5  # a lower bound: true however loaded the machine is
    assert [r.faults for r in proxy.records("HeadObject")] == [["Delay"]]
    assert [r.faults for r in proxy.records("HeadBucket")] == [[]]  # the other request was not delayed


def test_records_carry_operation_parts_and_headers(proxy: FaultProxy, bucket: str) -> None:
    """Tests assert on what was sent: part numbers, upload id, decoded keys, signed headers."""
    client = client_for(proxy.url)
    key = "run 1/file+name é.raw"
    client.put_object(Bucket=bucket, Key=key, Body=b"abc", ExpectedBucketOwner="123456789012")
    upload_multipart(client, bucket, key, random_bytes(PART + 1, seed=10))

    put = proxy.records("PutObject")[0]
    assert (put.bucket, put.key, put.method) == (bucket, key, "PUT")
    assert put.headers["x-amz-expected-bucket-owner"] == "123456789012"
    assert "authorization" in put.headers
    created, parts, completed = (
        proxy.records("CreateMultipartUpload")[0],
        proxy.records("UploadPart"),
        proxy.records("CompleteMultipartUpload")[0],
    )
    assert [p.part_number for p in parts] == [1, 2]
    assert created.upload_id is None and {p.upload_id for p in parts} == {completed.upload_id}
    assert all(r.key == key for r in [created, *parts, completed])


@pytest.mark.parametrize(
    ("method", "target", "headers", "operation", "part_number"),
    [
        ("PUT", "/b/k?partNumber=3&uploadId=u", {}, "UploadPart", 3),
        ("PUT", "/b/k?partNumber=3&uploadId=u", {"x-amz-copy-source": "b/o"}, "UploadPartCopy", 3),
        ("POST", "/b/k?uploads", {}, "CreateMultipartUpload", None),
        ("POST", "/b/k?uploadId=u", {}, "CompleteMultipartUpload", None),
        ("DELETE", "/b/k?uploadId=u", {}, "AbortMultipartUpload", None),
        ("GET", "/b/k?uploadId=u&max-parts=1000", {}, "ListParts", None),
        ("PUT", "/b/a/b.raw", {}, "PutObject", None),
        ("PUT", "/b/k", {"x-amz-copy-source": "b/o"}, "CopyObject", None),
        ("PUT", "/b/k?tagging", {}, "Other", None),
        ("HEAD", "/b/k", {}, "HeadObject", None),
        ("HEAD", "/b", {}, "HeadBucket", None),
        ("GET", "/b/k", {}, "GetObject", None),
        ("GET", "/b/k?versionId=v&response-content-type=x", {}, "GetObject", None),
        ("GET", "/b/k?tagging", {}, "Other", None),
        ("GET", "/b?list-type=2&prefix=a%2F", {}, "ListObjectsV2", None),
        ("GET", "/b?uploads", {}, "ListMultipartUploads", None),
        ("GET", "/b?versioning", {}, "Other", None),
        ("DELETE", "/b/k", {}, "DeleteObject", None),
        ("PUT", "/b", {}, "CreateBucket", None),
        ("PUT", "/b?versioning", {}, "Other", None),
    ],
)
def test_classify(
    method: str, target: str, headers: dict[str, str], operation: str, part_number: int | None
) -> None:
    """Faults aim at operations, so misnaming one (a copy as a PutObject, a tagging GET as a GetObject)
    would put a fault on the wrong request."""
    record = RequestRecord.classify(method, target, headers)
    assert (record.operation, record.part_number) == (operation, part_number)


def test_a_failing_callback_fails_the_running_block(moto_server: MotoServer, bucket: str) -> None:
    """An assertion inside ``after`` runs in a proxy thread; it must not be lost there."""
    proxy = FaultProxy(moto_server.port)

    def check(record: RequestRecord) -> None:
        assert record.status == 418

    proxy.add(after("HeadBucket", check))
    with pytest.raises(FaultProxyError) as raised, proxy.running():
        client_for(proxy.url).head_bucket(Bucket=bucket)
    assert isinstance(raised.value.__cause__, AssertionError)
