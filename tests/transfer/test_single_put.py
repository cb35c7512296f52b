"""transfer/single_put.py: one PUT, refused by Content-MD5 or proven by the ETag S3 returns.

Against moto through the FaultProxy. moto does not check Content-MD5, so the store that does is played by a
fault that compares the header with the bytes that arrived and answers ``400 BadDigest`` as S3 does.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass, field

import pytest

from airflow_provider_kraken_s3.core.errors import BackupInterrupted, IntegrityError
from airflow_provider_kraken_s3.transfer.single_put import put_single
from tests.faults import (
    ProxiedRequest,
    ProxiedResponse,
    RequestRecord,
    Respond,
    flip_byte,
    respond,
    rewrite_etag,
)
from tests.transfer.conftest import body_in_s3, etag_in_s3, versioned


@dataclass
class ChecksContentMd5(Respond):
    """A store that checks Content-MD5: ``400 BadDigest`` when the body arrived with another MD5."""

    status: int = 400
    code: str = "BadDigest"
    refused: list[str] = field(default_factory=list)
    _bad: bool = field(default=False, init=False)

    def on_request(self, request: ProxiedRequest) -> None:
        sent = dict((k.lower(), v) for k, v in request.headers).get("content-md5")
        arrived = base64.b64encode(hashlib.md5(bytes(request.body or b"")).digest()).decode()
        self._bad = sent is not None and sent != arrived
        if self._bad:
            self.refused.append(sent)  # type: ignore[arg-type]

    def reply(self, record: RequestRecord) -> ProxiedResponse | None:
        return super().reply(record) if self._bad else None


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_the_put_carries_content_md5_and_returns_what_s3_proved(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    versioned(s3_client, bucket)
    path = make_file("a.raw", 3000)
    md5 = md5_of(path.read_bytes())
    sent = put_single(shipment(path, expected_md5=md5, storage_class="STANDARD_IA"))
    assert sent.etag == sent.md5 == md5 and sent.parts_reused == 0 and sent.bytes_sent == 3000
    head = s3_client.head_object(Bucket=bucket, Key="a.raw")
    assert sent.version_id == head["VersionId"] and head["StorageClass"] == "STANDARD_IA"
    (put,) = proxy.records("PutObject")
    assert put.headers["content-md5"] == base64.b64encode(bytes.fromhex(md5)).decode()
    assert body_in_s3(s3_client, bucket, "a.raw") == path.read_bytes()


def test_s3_refuses_bytes_that_differ_from_the_inventory_md5_and_nothing_is_stored(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    path = make_file("b.raw", 2000)
    inventory = md5_of(b"the acquired bytes")
    checks = proxy.add(ChecksContentMd5("PutObject", times=None))
    with pytest.raises(IntegrityError, match=f"S3 refused .*expected MD5 {inventory}. Nothing was stored"):
        put_single(shipment(path, expected_md5=inventory))
    assert checks.refused and [r.status for r in proxy.records("PutObject")] == [400]  # not retried
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_a_store_that_ignores_content_md5_is_caught_after_the_put(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    path = make_file("c.raw", 2000)
    inventory = md5_of(b"the acquired bytes")
    with pytest.raises(IntegrityError, match=rf"read with MD5 {md5_of(path.read_bytes())}, but {inventory}"):
        put_single(shipment(path, expected_md5=inventory))
    assert body_in_s3(s3_client, bucket, "c.raw") == path.read_bytes()  # said so: it holds those bytes


@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
def test_a_5xx_is_retried_and_the_object_proven(
    proxy, s3_client, bucket, make_file, shipment, status, code
) -> None:
    path = make_file("d.raw", 5000)
    proxy.add(respond("PutObject", status, code))
    sent = put_single(shipment(path, expected_md5=md5_of(path.read_bytes())))
    assert [r.status for r in proxy.records("PutObject")] == [status, 200]
    assert (
        sent.etag == md5_of(path.read_bytes()) and body_in_s3(s3_client, bucket, "d.raw") == path.read_bytes()
    )


def test_a_byte_corrupted_in_transit_gives_an_etag_that_proves_nothing(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    """No Content-MD5 to check (no inventory MD5): S3 stores the bad bytes; its ETag says so."""
    path = make_file("e.raw", 4000)
    proxy.add(flip_byte("PutObject", offset=1234))
    with pytest.raises(
        IntegrityError, match=r"ETag [0-9a-f]{32}, but the bytes read .* corrupted in transit"
    ):
        put_single(shipment(path))
    corrupted = bytearray(path.read_bytes())
    corrupted[1234] ^= 0xFF
    assert etag_in_s3(s3_client, bucket, "e.raw") == md5_of(bytes(corrupted))  # S3 holds the damaged bytes


def test_an_etag_that_lies_is_not_believed(proxy, s3_client, bucket, make_file, shipment) -> None:
    path = make_file("f.raw", 4000)
    proxy.add(rewrite_etag("PutObject", "0" * 32))
    with pytest.raises(IntegrityError, match=f"ETag {'0' * 32}"):
        put_single(shipment(path, expected_md5=md5_of(path.read_bytes())))


def test_a_cancelled_put_is_an_interruption_and_stores_nothing(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    path = make_file("g.raw", 4000)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(BackupInterrupted, match="interrupted"):
        put_single(shipment(path, cancel=cancel))
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_an_empty_file_is_one_put_of_nothing(proxy, s3_client, bucket, make_file, shipment) -> None:
    path = make_file("h.raw", 0)
    sent = put_single(shipment(path, expected_md5=md5_of(b"")))
    assert sent.etag == md5_of(b"") and sent.bytes_sent == 0 and body_in_s3(s3_client, bucket, "h.raw") == b""
