"""Issue 17 on the wire: every new upload declares its full-object CRC64NVME, S3's answer is compared with
ours, and under SSE-KMS/SSE-C (emulated by the fault proxy, :mod:`tests.faults_sse`) the checksum alone
proves — against moto (with awscrt) over real HTTP.

What the client declared is read from the proxy's request records; what S3 stored, by HEAD with
``ChecksumMode=ENABLED``. moto does not validate checksums: where S3's refusal matters, the proxy's
:class:`~tests.faults_sse.ValidateChecksums` answers as S3 does.
"""

from __future__ import annotations

import base64
import threading

import pytest
from awscrt import checksums

from airflow_provider_kraken_s3.core.checksum import ALGORITHM, Checksum, Encryption
from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    IntegrityError,
    ObjectConflictError,
    UnprovableObjectError,
)
from airflow_provider_kraken_s3.transfer import access as access_module
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag_and_md5
from airflow_provider_kraken_s3.transfer.upload import VerifiedUpload
from tests.conftest import client_for
from tests.faults import flip_byte, respond
from tests.faults_sse import KeepNoChecksums, SseKms, ValidateChecksums, opaque_etag
from tests.transfer.conftest import LOG, PART, body_in_s3, uploads_in_s3, versioned


def crc(data: bytes) -> str:
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


def stored_checksum(s3_client, bucket: str, key: str) -> tuple[str | None, str | None]:
    head = s3_client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    return head.get("ChecksumCRC64NVME"), head.get("ChecksumType")


def header(record, name: str) -> str | None:
    return record.headers.get(name)


def parts_of(data: bytes) -> list[bytes]:
    return [data[i : i + PART] for i in range(0, len(data), PART)]


# ------------------------------------------------------------------ declared on every new upload


def test_a_single_put_declares_the_files_crc64nvme(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    path = make_file("a.raw", 3000)
    data = path.read_bytes()
    _, md5 = compute_s3_etag_and_md5(path, PART)
    result = verified_upload(path, expected_md5=md5).run()
    (put,) = proxy.records("PutObject")
    assert header(put, "x-amz-sdk-checksum-algorithm") == ALGORITHM
    assert header(put, "x-amz-checksum-crc64nvme") == crc(data)
    assert stored_checksum(s3_client, bucket, "a.raw")[0] == crc(data)
    assert result.checksum == Checksum(ALGORITHM, crc(data)) and result.encryption is Encryption.NONE


def test_a_multipart_upload_is_full_object_crc64nvme(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    """Created FULL_OBJECT; each part declares its own CRC; the completion declares the whole file's
    (combined from the part CRCs read on the way) and its size; HEAD shows S3 kept exactly that."""
    path = make_file("m.raw", 3 * PART + 123)
    data = path.read_bytes()
    etag, md5 = compute_s3_etag_and_md5(path, PART)
    result = verified_upload(path, expected_etag=etag, expected_md5=md5).run()
    (create,) = proxy.records("CreateMultipartUpload")
    assert (header(create, "x-amz-checksum-algorithm"), header(create, "x-amz-checksum-type")) == (
        ALGORITHM,
        "FULL_OBJECT",
    )
    declared = {r.part_number: header(r, "x-amz-checksum-crc64nvme") for r in proxy.records("UploadPart")}
    assert declared == {n: crc(part) for n, part in enumerate(parts_of(data), start=1)}
    (complete,) = proxy.records("CompleteMultipartUpload")
    assert header(complete, "x-amz-checksum-crc64nvme") == crc(data)
    assert header(complete, "x-amz-checksum-type") == "FULL_OBJECT"
    assert header(complete, "x-amz-mp-object-size") == str(len(data))
    assert stored_checksum(s3_client, bucket, "m.raw") == (crc(data), "FULL_OBJECT")
    assert result.checksum == Checksum(ALGORITHM, crc(data)) and result.etag == etag


@pytest.mark.parametrize("lists_checksums", [True, False], ids=["s3-lists-part-checksums", "moto-lists-none"])
def test_a_resumed_upload_keeps_the_checksums_of_its_earlier_parts(
    proxy, s3_client, bucket, make_file, verified_upload, lists_checksums: bool
) -> None:
    """The retry reuses the parts S3 holds: by the CRC ListParts shows (S3), or by the ETag with the CRC
    recomputed from the local read (moto lists none). The completion declares every part's CRC and the whole
    file's, and S3 (the proxy's validation, as S3 combines them) accepts it."""
    if lists_checksums:
        checks = proxy.add(ValidateChecksums())
    path = make_file("r.raw", 4 * PART + 1)
    data = path.read_bytes()
    etag, md5 = compute_s3_etag_and_md5(path, PART)
    cancel = threading.Event()
    seen: list = []

    def stop_in_part_3(done: int, _total: int) -> None:
        if done > 2 * PART:
            cancel.set()

    with pytest.raises(BackupInterrupted):
        verified_upload(
            path,
            expected_etag=etag,
            on_upload_id=lambda upload_id, _size: seen.append(upload_id),
            progress=stop_in_part_3,
            max_concurrency=1,
            cancel=cancel,
        ).run()
    upload_id = seen[-1]
    in_s3 = s3_client.list_parts(Bucket=bucket, Key="r.raw", UploadId=upload_id)["Parts"]
    assert 1 <= len(in_s3) < 5
    sent_before = len(proxy.records("UploadPart"))

    result = verified_upload(path, expected_etag=etag, expected_md5=md5, upload_id=upload_id).run()
    assert (result.parts_reused, result.parts_sent) == (len(in_s3), 5 - len(in_s3))
    assert len(proxy.records("UploadPart")) - sent_before == 5 - len(in_s3)
    (complete,) = proxy.records("CompleteMultipartUpload")
    assert header(complete, "x-amz-checksum-crc64nvme") == crc(data)
    assert stored_checksum(s3_client, bucket, "r.raw")[0] == crc(data)
    assert result.checksum == Checksum(ALGORITHM, crc(data))
    if lists_checksums:
        assert checks.refused == []


def test_a_rerun_skips_by_the_checksum_at_another_part_size(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    """An object of ours at 6 MiB parts, an inventory planned at 5: one read (MD5 and CRC) proves it."""
    path = make_file("s.raw", 3 * PART)
    _, md5 = compute_s3_etag_and_md5(path, PART)
    verified_upload(path, part_size=6 * 1024**2, expected_md5=md5).run()
    writes_before = len([r for r in proxy.requests if r.method in ("PUT", "POST")])
    again = verified_upload(path, expected_md5=md5).run()
    assert again.skipped and again.bytes_sent == 0 and again.bytes_read == 3 * PART
    assert again.checksum == Checksum(ALGORITHM, crc(path.read_bytes()))
    assert "CRC64NVME" in again.reason
    assert len([r for r in proxy.requests if r.method in ("PUT", "POST")]) == writes_before


# ------------------------------------------------------------------ corruption in transit


@pytest.mark.parametrize("size", [3000, 3 * PART], ids=["single-put", "multipart"])
def test_corruption_in_transit_is_refused_by_s3s_validation(
    proxy, s3_client, bucket, make_file, verified_upload, size: int
) -> None:
    proxy.add(ValidateChecksums())
    operation = "PutObject" if size < PART else "UploadPart"
    proxy.add(flip_byte(operation, offset=7, **({} if size < PART else {"part_number": 2})))
    path = make_file("c.raw", size)
    with pytest.raises(IntegrityError, match="corrupted in transit"):
        verified_upload(path).run()
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert uploads_in_s3(s3_client, bucket) == []  # the multipart upload was aborted


def test_corruption_under_sse_kms_is_refused_by_our_comparison(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    """moto stores the flipped part (it validates nothing) and the part ETags prove nothing under KMS; the
    full-object CRC64NVME S3 computed from what it holds is not ours: never recorded as a backup."""
    proxy.add(SseKms())
    proxy.add(flip_byte("UploadPart", offset=11, part_number=2))
    path = make_file("k.raw", 3 * PART)
    with pytest.raises(IntegrityError, match="CRC64NVME"):
        verified_upload(path).run()


# ------------------------------------------------------------------ SSE-KMS and SSE-C: the checksum proves


@pytest.mark.parametrize("encryption", ["aws:kms", "SSE-C"])
@pytest.mark.parametrize("size", [3000, 3 * PART + 5], ids=["single-put", "multipart"])
def test_uploads_under_encryption_are_proven_by_the_checksum(
    proxy, s3_client, bucket, make_file, verified_upload, encryption: str, size: int
) -> None:
    proxy.add(SseKms(encryption=encryption))
    path = make_file("e.raw", size)
    data = path.read_bytes()
    etag, md5 = compute_s3_etag_and_md5(path, PART)
    result = verified_upload(path, expected_md5=md5, **({"expected_etag": etag} if size > PART else {})).run()
    assert result.etag == opaque_etag(etag) != etag  # S3's answer is recorded, never our MD5
    assert result.checksum == Checksum(ALGORITHM, crc(data))
    assert result.encryption is (Encryption.SSE_KMS if encryption == "aws:kms" else Encryption.SSE_C)
    assert body_in_s3(s3_client, bucket, "e.raw") == data


def test_a_rerun_under_sse_kms_skips_by_the_checksum(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    proxy.add(SseKms())
    path = make_file("k.raw", 2 * PART + 9)
    etag, md5 = compute_s3_etag_and_md5(path, PART)
    verified_upload(path, expected_etag=etag, expected_md5=md5).run()
    writes_before = len([r for r in proxy.requests if r.method in ("PUT", "POST")])
    again = verified_upload(path, expected_etag=etag, expected_md5=md5).run()
    assert again.skipped and again.bytes_sent == 0 and again.bytes_read == path.stat().st_size
    assert "CRC64NVME" in again.reason and again.encryption is Encryption.SSE_KMS
    assert len([r for r in proxy.requests if r.method in ("PUT", "POST")]) == writes_before


@pytest.mark.parametrize("bucket_versioned", [True, False], ids=["versioned", "unversioned"])
def test_an_encrypted_object_whose_checksum_differs_is_replaced_or_refused(
    proxy, s3_client, bucket, make_file, verified_upload, bucket_versioned: bool
) -> None:
    if bucket_versioned:
        versioned(s3_client, bucket)
    proxy.add(SseKms())
    path = make_file("d.raw", 4000)
    _, md5 = compute_s3_etag_and_md5(path, PART)
    other = bytes(4000)
    s3_client.put_object(Bucket=bucket, Key="d.raw", Body=other, ChecksumAlgorithm=ALGORITHM)
    job = verified_upload(path, expected_md5=md5)
    if not bucket_versioned:
        with pytest.raises(ObjectConflictError, match=r"CRC64NVME .* differs"):
            job.run()
        assert body_in_s3(s3_client, bucket, "d.raw") == other
        return
    result = job.run()
    assert result.reason == "replaced" and result.checksum == Checksum(ALGORITHM, crc(path.read_bytes()))
    assert body_in_s3(s3_client, bucket, "d.raw") == path.read_bytes()


def test_an_encrypted_object_on_a_store_without_checksums_is_refused_in_those_words(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    proxy.add(SseKms())
    proxy.add(KeepNoChecksums())
    path = make_file("n.raw", 3000)
    with pytest.raises(UnprovableObjectError, match="S3 returned no checksum for it"):
        verified_upload(path).run()
    # and an object already there is refused before anything is read or sent
    with pytest.raises(ObjectConflictError, match=r"encrypted with SSE-KMS.*S3 returned no checksum"):
        verified_upload(path).run()


# ------------------------------------------------------------------ the Ceph rule


def test_once_the_store_refused_streamed_checksums_nothing_more_declares_one(
    proxy, s3_client, bucket, make_file
) -> None:
    """Ceph 16 over HTTPS answers 411 to botocore's streamed checksum: the refused part is sent again without
    one, and no later request of the upload (or of that endpoint) declares a checksum; the ETags prove."""
    access_module.forget_checksum_fallbacks()
    proxy.add(respond("UploadPart", 411, "MissingContentLength", part_number=1))
    fallback = client_for(proxy.url)
    fallback.meta.config.request_checksum_calculation = "when_required"
    access = S3Access(
        client=client_for(proxy.url), conn_id="test", without_streamed_checksums=lambda: fallback
    )
    path = make_file("ceph.raw", 3 * PART + 1)
    etag, md5 = compute_s3_etag_and_md5(path, PART)

    try:
        result = VerifiedUpload(
            access=access,
            path=path,
            bucket=bucket,
            key="ceph.raw",
            part_size=PART,
            log=LOG,
            expected_etag=etag,
            expected_md5=md5,
            max_concurrency=1,
        ).run()
        later = [r for r in proxy.requests if r.operation in ("UploadPart", "CompleteMultipartUpload")][1:]
        assert later and all(not any(h.startswith("x-amz-checksum") for h in r.headers) for r in later)
        assert (result.etag == etag and result.checksum is None) or result.checksum is not None
        put = S3Access(client=client_for(proxy.url), conn_id="test").declares_checksums()
        assert put is False  # the endpoint is remembered for the process
    finally:
        access_module.forget_checksum_fallbacks()
