"""transfer/upload.py: look, decide, hash first, send, check — each path against moto through the FaultProxy.

What is asserted is what S3 holds afterwards (read back with a boto3 client straight to moto), the requests
the proxy saw, and what the caller was told; never a mocked call.
"""

from __future__ import annotations

import hashlib

import pytest

from airflow_provider_kraken_s3.core.errors import IntegrityError, ObjectConflictError
from airflow_provider_kraken_s3.core.etag import one_part_etag
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag, compute_s3_etag_and_md5
from tests.conftest import put_object
from tests.transfer.conftest import PART, body_in_s3, etag_in_s3, versioned

WRITES = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")


def md5_of(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def writes(proxy) -> list[str]:
    return [r.operation for r in proxy.requests if r.operation in WRITES]


def versions(s3_client, bucket: str, key: str) -> list[str]:
    found = s3_client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    return [v["ETag"].strip('"') for v in found if v["Key"] == key]


def test_a_single_put_object_proven_by_its_md5_is_skipped_without_reading(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    path = make_file("a.raw", 1000)
    put_object(s3_client, bucket, "a.raw", path.read_bytes())
    result = verified_upload(path, expected_md5=md5_of(path)).run()
    assert result.skipped and result.bytes_read == 0 and result.bytes_sent == 0
    assert result.etag == md5_of(path) and result.reason.startswith("already in S3")
    assert writes(proxy) == [] and [r.operation for r in proxy.requests] == ["HeadObject"]


def test_a_multipart_object_proven_by_the_inventory_etag_is_skipped_without_reading(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    path = make_file("b.raw", 2 * PART + 17)
    etag = put_object(s3_client, bucket, "b.raw", path.read_bytes(), part_size=PART)
    result = verified_upload(path, expected_etag=etag, expected_md5=md5_of(path)).run()
    assert result.skipped and result.bytes_read == 0 and result.etag == etag and result.part_size == PART
    assert writes(proxy) == []


def test_an_object_at_another_part_size_is_hashed_first_and_then_skipped(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    """No hint in metadata: HEAD ``partNumber=1`` tells the part size, one read proves the same bytes."""
    path = make_file("c.raw", 17 * MIB + 5)
    put_object(s3_client, bucket, "c.raw", path.read_bytes(), part_size=8 * MIB)
    result = verified_upload(path, expected_md5=md5_of(path)).run()
    assert result.skipped and result.part_size == 8 * MIB and result.bytes_read == path.stat().st_size
    assert result.etag == compute_s3_etag(path, 8 * MIB) == etag_in_s3(s3_client, bucket, "c.raw")
    assert [r.part_number for r in proxy.records("HeadObject")] == [None, 1]
    assert writes(proxy) == []


def test_hashed_first_and_different_in_a_versioned_bucket_is_replaced(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    versioned(s3_client, bucket)
    path = make_file("d.raw", 2 * PART + 3, seed=1)
    other = bytearray(path.read_bytes())
    other[PART + 9] ^= 0xFF
    old = put_object(s3_client, bucket, "d.raw", bytes(other), part_size=PART)
    result = verified_upload(path, expected_md5=md5_of(path)).run()
    assert not result.skipped and result.reason == "replaced" and result.replaced_etag == old
    assert body_in_s3(s3_client, bucket, "d.raw") == path.read_bytes()
    assert versions(s3_client, bucket, "d.raw") == [result.etag, old]  # the old bytes are kept
    assert result.version_id == s3_client.head_object(Bucket=bucket, Key="d.raw")["VersionId"]
    assert sorted(r.part_number for r in proxy.records("UploadPart")) == [1, 2, 3]


def test_hashed_first_and_different_in_an_unversioned_bucket_is_refused(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    path = make_file("e.raw", 2 * PART + 3, seed=2)
    other = bytearray(path.read_bytes())
    other[0] ^= 0xFF
    old = put_object(s3_client, bucket, "e.raw", bytes(other), part_size=PART)
    with pytest.raises(ObjectConflictError, match="does not keep old versions"):
        verified_upload(path, expected_md5=md5_of(path)).run()
    assert etag_in_s3(s3_client, bucket, "e.raw") == old and writes(proxy) == []


def test_an_object_of_another_size_is_replaced_by_a_single_put_proven_first(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    versioned(s3_client, bucket)
    path = make_file("f.raw", 4321)
    old = put_object(s3_client, bucket, "f.raw", b"an older, other object")
    result = verified_upload(path, expected_md5=md5_of(path)).run()
    assert result.reason == "replaced" and result.replaced_etag == old and result.etag == md5_of(path)
    assert body_in_s3(s3_client, bucket, "f.raw") == path.read_bytes()
    assert versions(s3_client, bucket, "f.raw") == [md5_of(path), old]
    assert writes(proxy) == ["PutObject"]


def test_an_object_of_another_size_in_an_unversioned_bucket_is_refused(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    path = make_file("g.raw", 4321)
    old = put_object(s3_client, bucket, "g.raw", b"an older, other object")
    with pytest.raises(ObjectConflictError, match=r"it has 22 bytes, the inventory 4321"):
        verified_upload(path, expected_md5=md5_of(path)).run()
    assert etag_in_s3(s3_client, bucket, "g.raw") == old and writes(proxy) == []


def test_a_corrupt_local_copy_hashed_first_is_refused_and_the_backup_kept(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    """S3 holds the acquired bytes at another part size; the local copy has rotted since: never replaced."""
    versioned(s3_client, bucket)
    path = make_file("h.raw", 11 * MIB, seed=3)
    good = path.read_bytes()
    etag = put_object(s3_client, bucket, "h.raw", good, part_size=8 * MIB)
    rotten = bytearray(good)
    rotten[MIB] ^= 0x01
    path.write_bytes(bytes(rotten))
    with pytest.raises(IntegrityError, match="the local copy is not the acquired file"):
        verified_upload(path, expected_md5=hashlib.md5(good).hexdigest()).run()
    assert versions(s3_client, bucket, "h.raw") == [etag] and writes(proxy) == []


def test_a_corrupt_local_copy_never_replaces_an_object_by_a_single_put(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    versioned(s3_client, bucket)
    path = make_file("i.raw", 3000)
    good_md5 = md5_of(path)
    old = put_object(s3_client, bucket, "i.raw", b"an older, other object")
    path.write_bytes(b"X" + path.read_bytes()[1:])
    with pytest.raises(IntegrityError, match="must not replace"):
        verified_upload(path, expected_md5=good_md5).run()
    assert versions(s3_client, bucket, "i.raw") == [old] and writes(proxy) == []


def test_a_distrusted_object_is_replaced_although_its_etag_matches(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    versioned(s3_client, bucket)
    path = make_file("j.raw", 2000)
    old = put_object(s3_client, bucket, "j.raw", path.read_bytes())
    result = verified_upload(path, expected_md5=md5_of(path), distrusted="deep verification failed").run()
    assert result.reason == "replaced" and result.replaced_etag == old == result.etag
    assert len(versions(s3_client, bucket, "j.raw")) == 2 and writes(proxy) == ["PutObject"]


def test_an_inventory_etag_of_another_part_count_fails_before_any_request(
    proxy, make_file, verified_upload
) -> None:
    path = make_file("k.raw", 2 * PART)
    with pytest.raises(IntegrityError, match=r"does not give the 3 part\(s\)"):
        verified_upload(path, expected_etag="0" * 32 + "-3").run()
    assert proxy.requests == []


def test_a_listed_absent_key_is_not_headed_and_check_after_is_the_caller_s(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    path = make_file("l.raw", 100)
    verified_upload(path, known_absent=True, check_after=False).run()
    assert [r.operation for r in proxy.requests] == ["PutObject"]
    verified_upload(path, key="l2.raw").run()
    assert [r.operation for r in proxy.requests[1:]] == ["HeadObject", "PutObject", "HeadObject"]
    assert body_in_s3(s3_client, bucket, "l.raw") == body_in_s3(s3_client, bucket, "l2.raw")


def test_running_changes_none_of_the_upload_s_inputs(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    """A one-part inventory ETag (``…-1``) is proven through the MD5 by a single PUT; the job keeps it."""
    path = make_file("m.raw", 1234)
    etag, md5 = compute_s3_etag_and_md5(path, PART)
    one_part = one_part_etag(md5)
    job = verified_upload(path, expected_etag=one_part, expected_md5=md5)
    before = dict(job.__dict__)
    first = job.run()
    assert job.__dict__ == before and job.expected_etag == one_part
    assert first.etag == md5 == etag and writes(proxy) == ["PutObject"]
    second = job.run()  # the same job again: S3 now proves it
    assert second.skipped and writes(proxy) == ["PutObject"]
