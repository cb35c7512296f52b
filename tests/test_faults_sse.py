"""Self-tests of the S3 behaviours :mod:`tests.faults_sse` emulates on the wire: a real boto3 client (with
awscrt, so CRC64NVME) → FaultProxy → a real moto_server.

The emulations are only worth something if they answer as S3 does and stay transparent otherwise: an
SSE-KMS bucket's opaque ETags (stable, everywhere, and accepted back), and S3's refusal of a declared checksum
the bytes do not have.
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Iterator
from typing import TYPE_CHECKING

import boto3
import botocore.config
import pytest
from awscrt import checksums
from botocore.exceptions import ClientError

from tests.faults import FaultProxy, flip_byte
from tests.faults_sse import KMS_KEY_ID, SseKms, ValidateChecksums, _combine, crc64nvme_b64, opaque_etag

if TYPE_CHECKING:
    from kraken_standins.s3 import MotoServer

PART = 256 * 1024  # moto_server allows 256-byte parts in the tests


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(moto_server.port)
    with fault_proxy.running():
        yield fault_proxy


def client_via(proxy: FaultProxy):
    return boto3.client(
        "s3",
        endpoint_url=proxy.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def split(data: bytes) -> list[bytes]:
    return [data[i : i + PART] for i in range(0, len(data), PART)]


def unquoted(etag: str) -> str:
    return etag.strip('"')


def test_crc_combination_of_the_emulation_is_s3s() -> None:
    """The proxy's own combination (independent of the provider's) equals awscrt's CRC of the whole."""
    data = data_of(3 * PART + 99, seed=5)
    parts = [(crc64nvme_b64(part), len(part)) for part in split(data)]
    assert _combine(parts) == crc64nvme_b64(data)
    assert crc64nvme_b64(data) == base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


def test_sse_kms_single_put_head_get_and_listing(proxy: FaultProxy, bucket: str) -> None:
    """Every ETag a client sees is the same opaque value, never the MD5; every object answer says aws:kms."""
    kms = proxy.add(SseKms())
    client = client_via(proxy)
    data = data_of(1000, seed=1)
    md5 = hashlib.md5(data).hexdigest()
    put = client.put_object(Bucket=bucket, Key="a.raw", Body=data, ChecksumAlgorithm="CRC64NVME")
    opaque = unquoted(put["ETag"])
    assert opaque == opaque_etag(md5) != md5 and len(opaque) == 32
    assert (put["ServerSideEncryption"], put["SSEKMSKeyId"]) == ("aws:kms", KMS_KEY_ID)
    head = client.head_object(Bucket=bucket, Key="a.raw", ChecksumMode="ENABLED")
    assert unquoted(head["ETag"]) == opaque and head["ServerSideEncryption"] == "aws:kms"
    assert head["ChecksumCRC64NVME"] == crc64nvme_b64(data)  # the checksum survives the encryption
    got = client.get_object(Bucket=bucket, Key="a.raw", IfMatch=head["ETag"])  # handed back: translated
    assert got["Body"].read() == data and unquoted(got["ETag"]) == opaque
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(item["Key"], unquoted(item["ETag"])) for item in listed] == [("a.raw", opaque)]
    assert kms.fired >= 4


def test_sse_kms_multipart_upload_parts_and_completion(proxy: FaultProxy, bucket: str) -> None:
    """Part ETags are opaque too (in UploadPart and ListParts); the client completes with them, as on S3."""
    proxy.add(SseKms())
    client = client_via(proxy)
    data = data_of(2 * PART + 77, seed=2)
    upload = client.create_multipart_upload(Bucket=bucket, Key="m.raw")
    assert upload["ServerSideEncryption"] == "aws:kms"
    etags = []
    for number, part in enumerate(split(data), start=1):
        answer = client.upload_part(
            Bucket=bucket, Key="m.raw", UploadId=upload["UploadId"], PartNumber=number, Body=part
        )
        assert unquoted(answer["ETag"]) == opaque_etag(hashlib.md5(part).hexdigest())
        assert answer["ServerSideEncryption"] == "aws:kms"
        etags.append(answer["ETag"])
    listed = client.list_parts(Bucket=bucket, Key="m.raw", UploadId=upload["UploadId"])["Parts"]
    assert [p["ETag"] for p in listed] == etags
    done = client.complete_multipart_upload(
        Bucket=bucket,
        Key="m.raw",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]},
    )
    opaque = unquoted(done["ETag"])
    assert opaque.endswith("-3") and done["ServerSideEncryption"] == "aws:kms"
    assert unquoted(client.head_object(Bucket=bucket, Key="m.raw")["ETag"]) == opaque
    assert client.get_object(Bucket=bucket, Key="m.raw")["Body"].read() == data


def test_sse_c_headers(proxy: FaultProxy, bucket: str) -> None:
    proxy.add(SseKms(encryption="SSE-C"))
    client = client_via(proxy)
    put = client.put_object(Bucket=bucket, Key="c.raw", Body=b"xyz")
    assert put["SSECustomerAlgorithm"] == "AES256" and "ServerSideEncryption" not in put
    assert unquoted(put["ETag"]) != hashlib.md5(b"xyz").hexdigest()


def test_without_the_emulation_the_proxy_stays_transparent(proxy: FaultProxy, bucket: str) -> None:
    client = client_via(proxy)
    put = client.put_object(Bucket=bucket, Key="p.raw", Body=b"abc")
    assert unquoted(put["ETag"]) == hashlib.md5(b"abc").hexdigest()
    assert "ServerSideEncryption" not in put


def test_a_declared_checksum_the_bytes_do_not_have_is_refused(proxy: FaultProxy, bucket: str) -> None:
    checks = proxy.add(ValidateChecksums())
    client = client_via(proxy)
    data = data_of(5000, seed=3)
    client.put_object(Bucket=bucket, Key="ok.raw", Body=data, ChecksumCRC64NVME=crc64nvme_b64(data))
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=bucket, Key="bad.raw", Body=data, ChecksumCRC64NVME=crc64nvme_b64(b"other"))
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert [r.key for r in checks.refused] == ["bad.raw"]
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 1  # nothing stored


def test_corruption_in_transit_meets_the_validation(proxy: FaultProxy, bucket: str) -> None:
    """botocore computes the CRC from the bytes it reads; a byte flipped on the way is refused."""
    checks = proxy.add(ValidateChecksums())
    proxy.add(flip_byte("PutObject", offset=17))  # added after: its damage is judged
    client = client_via(proxy)
    with pytest.raises(ClientError, match="BadDigest"):
        client.put_object(Bucket=bucket, Key="flip.raw", Body=data_of(1000), ChecksumAlgorithm="CRC64NVME")
    assert len(checks.refused) == 1


def test_full_object_completion_is_checked_against_the_parts(proxy: FaultProxy, bucket: str) -> None:
    checks = proxy.add(ValidateChecksums())
    client = client_via(proxy)
    data = data_of(2 * PART + 5, seed=4)

    def upload(key: str) -> tuple[str, list[dict]]:
        upload_id = client.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT"
        )["UploadId"]
        parts = []
        for number, part in enumerate(split(data), start=1):
            answer = client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=part,
                ChecksumAlgorithm="CRC64NVME",
            )
            parts.append(
                {"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC64NVME": crc64nvme_b64(part)}
            )
        return upload_id, parts

    def complete(key: str, upload_id: str, parts: list[dict], value: str, size: int) -> dict:
        return client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            ChecksumCRC64NVME=value,
            ChecksumType="FULL_OBJECT",
            MpuObjectSize=size,
        )

    upload_id, parts = upload("wrong.raw")
    # ListParts as S3 answers it (moto lists no checksums): the parts' CRCs and the upload's checksum type.
    listed = client.list_parts(Bucket=bucket, Key="wrong.raw", UploadId=upload_id)
    assert (listed["ChecksumAlgorithm"], listed["ChecksumType"]) == ("CRC64NVME", "FULL_OBJECT")
    assert [p["ChecksumCRC64NVME"] for p in listed["Parts"]] == [p["ChecksumCRC64NVME"] for p in parts]
    with pytest.raises(ClientError, match="BadDigest"):
        complete("wrong.raw", upload_id, parts, crc64nvme_b64(data[:-1]), len(data))
    with pytest.raises(ClientError, match="MpuObjectSize"):
        complete("wrong.raw", upload_id, parts, crc64nvme_b64(data), len(data) + 1)
    complete("wrong.raw", upload_id, parts, crc64nvme_b64(data), len(data))
    head = client.head_object(Bucket=bucket, Key="wrong.raw", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == crc64nvme_b64(data)
    assert len(checks.refused) == 2
