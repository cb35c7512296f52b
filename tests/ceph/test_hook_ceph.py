"""KrakenS3Hook against Ceph RADOS Gateway 16 over HTTP and HTTPS: a second S3 implementation next to moto."""

from __future__ import annotations

import hashlib
import threading

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    IntegrityError,
    ObjectConflictError,
    PermanentBackupError,
)
from airflow_provider_kraken_s3.core.etag import etag_part_count
from airflow_provider_kraken_s3.core.part_layouts import candidate_part_sizes
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.transfer import access as access_module
from airflow_provider_kraken_s3.transfer import remote
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag, compute_s3_etag_and_md5

pytestmark = pytest.mark.ceph

PART = 5 * MIB


@pytest.fixture
def hook(ceph_conn: str) -> KrakenS3Hook:
    return KrakenS3Hook(aws_conn_id=ceph_conn)


def etag_in_s3(s3, bucket: str, key: str) -> str:
    return s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def versions(s3, bucket: str, key: str) -> list[dict]:
    return [v for v in s3.list_object_versions(Bucket=bucket).get("Versions", []) if v["Key"] == key]


@pytest.mark.parametrize("size", [0, 1, PART, PART + 1, 3 * PART], ids=["0", "1", "5MiB", "5MiB+1", "3parts"])
def test_upload_is_verified_and_rerun_skips_without_reading(hook, s3, bucket, make_file, size: int) -> None:
    path = make_file("a.raw", size, seed=size)
    etag, md5 = compute_s3_etag_and_md5(path, PART)
    result = hook.upload_verified(path, bucket, "a.raw", part_size=PART, expected_etag=etag, expected_md5=md5)
    assert result.etag == etag == etag_in_s3(s3, bucket, "a.raw") == compute_s3_etag(path, PART)
    assert not result.skipped and result.bytes_sent == size
    assert result.parts_sent == max(1, -(-size // PART))
    assert s3.head_object(Bucket=bucket, Key="a.raw")["ContentLength"] == size
    assert s3.get_object(Bucket=bucket, Key="a.raw")["Body"].read() == path.read_bytes()

    again = hook.upload_verified(path, bucket, "a.raw", part_size=PART, expected_etag=etag, expected_md5=md5)
    assert again.skipped and again.bytes_read == 0 and again.bytes_sent == 0 and again.etag == etag


def test_interrupted_upload_resumes_with_its_upload_id(hook, s3, bucket, make_file) -> None:
    size = 4 * PART + 1
    path = make_file("r.raw", size, seed=7)
    etag, md5 = compute_s3_etag_and_md5(path, PART)
    cancel = threading.Event()
    seen: list[tuple[str | None, int]] = []

    def stop_in_part_3(done: int, _total: int) -> None:
        if done > 2 * PART:
            cancel.set()

    with pytest.raises(BackupInterrupted):
        hook.upload_verified(
            path,
            bucket,
            "r.raw",
            part_size=PART,
            expected_etag=etag,
            on_upload_id=lambda upload_id, part_size: seen.append((upload_id, part_size)),
            progress=stop_in_part_3,
            max_concurrency=1,
            cancel=cancel,
        )
    upload_id, part_size = seen[-1]
    assert upload_id and part_size == PART, "an interrupted upload is kept for a resume"
    in_s3 = s3.list_parts(Bucket=bucket, Key="r.raw", UploadId=upload_id).get("Parts", [])
    assert 1 <= len(in_s3) < 5

    result = KrakenS3Hook(aws_conn_id=hook.aws_conn_id).upload_verified(
        path, bucket, "r.raw", part_size=PART, expected_etag=etag, expected_md5=md5, upload_id=upload_id
    )
    assert (result.parts_reused, result.parts_sent) == (len(in_s3), 5 - len(in_s3))
    assert result.bytes_sent == size - len(in_s3) * PART
    assert result.etag == etag == etag_in_s3(s3, bucket, "r.raw")
    assert s3.get_object(Bucket=bucket, Key="r.raw")["Body"].read() == path.read_bytes()


def test_single_put_with_wrong_md5_is_refused_by_ceph(hook, s3, bucket, make_file) -> None:
    """Ceph checks Content-MD5 (moto stores the bytes): the inventory's MD5 keeps wrong bytes out."""
    path = make_file("bad.raw", 1000, seed=1)
    wrong_md5 = hashlib.md5(b"the acquired file").hexdigest()
    with pytest.raises(IntegrityError, match="Nothing was stored") as caught:
        hook.upload_verified(path, bucket, "bad.raw", part_size=PART, expected_md5=wrong_md5)
    assert "BadDigest" in str(caught.value.__cause__)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_ceph_errors_without_message_still_read_well(hook, bucket) -> None:
    """Ceph sends an empty ``<Message>``: botocore says ``InvalidArgument ...: None``, we say the code."""
    with pytest.raises(PermanentBackupError) as caught:
        hook.access().call(
            "put_bucket_encryption",
            "setting the encryption",
            Bucket=bucket,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
        )
    raw = caught.value.__cause__
    assert isinstance(raw, ClientError) and str(raw).endswith(": None")  # what Ceph gives botocore
    assert str(caught.value) == "S3 refused the request while setting the encryption (InvalidArgument)"


def test_https_falls_back_from_streamed_checksums_once_per_endpoint(
    ceph, monkeypatch, s3, bucket, make_file, task_log
) -> None:
    """Ceph 16 answers 411 MissingContentLength to botocore's aws-chunked CRC32 trailer (HTTPS only)."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CEPH_TLS", ceph.connection_json("https"))
    for index, size in enumerate((2 * PART + 1, 1000, 2 * PART + 1)):
        path = make_file(f"c{index}.raw", size, seed=index)
        result = KrakenS3Hook(aws_conn_id="aws_ceph_tls").upload_verified(
            path, bucket, path.name, part_size=PART
        )
        assert result.etag == etag_in_s3(s3, bucket, path.name) == compute_s3_etag(path, PART)
    log = task_log()
    assert log.count("refused botocore's streamed request checksums") == 1, log
    assert ceph.https_url in log and '"request_checksum_calculation": "when_required"' in log
    assert access_module.refuses_streamed_checksums(ceph.https_url)
    assert not access_module.refuses_streamed_checksums(ceph.http_url)


def test_https_with_when_required_in_the_connection_needs_no_probe(
    ceph, monkeypatch, s3, bucket, make_file, task_log
) -> None:
    connection = ceph.connection_json("https", request_checksum_calculation="when_required")
    monkeypatch.setenv("AIRFLOW_CONN_AWS_CEPH_TLS", connection)
    path = make_file("w.raw", 2 * PART + 1)
    result = KrakenS3Hook(aws_conn_id="aws_ceph_tls").upload_verified(path, bucket, "w.raw", part_size=PART)
    assert result.etag == etag_in_s3(s3, bucket, "w.raw")
    assert "streamed request checksums" not in task_log()
    assert not access_module.refuses_streamed_checksums(ceph.https_url)


# ------------------------------------------------------------------ objects uploaded by plain boto3


def boto3_multipart(s3, bucket: str, path, key: str, chunk: int = 8 * MIB) -> str:
    """Upload as boto3/the AWS CLI do (8 MiB parts, no metadata of ours); return the object's ETag."""
    config = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk)
    s3.upload_file(str(path), bucket, key, Config=config)
    return etag_in_s3(s3, bucket, key)


def test_ceph_ignores_head_part_number_so_the_part_size_stays_unknown(hook, s3, bucket, make_file) -> None:
    size = 2 * 8 * MIB + 5
    path = make_file("p.raw", size)
    etag = boto3_multipart(s3, bucket, path, "p.raw")
    assert etag == compute_s3_etag(path, 8 * MIB) and etag.endswith("-3")
    raw = s3.head_object(Bucket=bucket, Key="p.raw", PartNumber=1)
    assert raw["ContentLength"] == size and "PartsCount" not in raw  # the whole object, not part 1
    found = hook.head(bucket, "p.raw")
    assert found is not None and found.part_size_hint is None
    assert remote.part_size_from_s3(hook.access(), bucket, "p.raw", found) is None  # not fooled
    candidates = candidate_part_sizes(found.size, etag_part_count(found.etag))
    assert 8 * MIB in candidates and PART not in candidates


@pytest.mark.parametrize("versioned", [False, True], ids=["unversioned", "versioned"])
def test_boto3_multipart_object_is_never_called_different(
    hook, s3, bucket, make_file, task_log, versioned: bool
) -> None:
    """Part size unknown (no kraken-part-size, HEAD partNumber ignored) and not a common one (6 MiB: the
    5 MiB guess that fits the part count fails): the engine must not claim the bytes differ. Unversioned:
    refused as "cannot be compared", untouched. Versioned: replaced by a verified upload, the old version
    kept — never with a claim that the local file differs."""
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    path = make_file("q.raw", 2 * 6 * MIB + 5)
    before = boto3_multipart(s3, bucket, path, "q.raw", chunk=6 * MIB)
    _, md5 = compute_s3_etag_and_md5(path, PART)
    if not versioned:
        with pytest.raises(ObjectConflictError, match="cannot be compared") as caught:
            hook.upload_verified(path, bucket, "q.raw", part_size=PART, expected_md5=md5)
        assert "differs from the local" not in str(caught.value)
        assert etag_in_s3(s3, bucket, "q.raw") == before
    else:
        result = hook.upload_verified(path, bucket, "q.raw", part_size=PART, expected_md5=md5)
        assert "cannot be compared" in task_log() and result.replaced_etag == before
        assert len(versions(s3, bucket, "q.raw")) in (1, 2)
    assert "differs from the local" not in task_log()


def test_boto3_multipart_object_with_the_inventory_etag_is_proven_without_reading(
    hook, s3, bucket, make_file
) -> None:
    path = make_file("k.raw", 2 * 8 * MIB + 5)
    etag = boto3_multipart(s3, bucket, path, "k.raw")
    etag_8, md5 = compute_s3_etag_and_md5(path, 8 * MIB)
    result = hook.upload_verified(
        path, bucket, "k.raw", part_size=8 * MIB, expected_etag=etag_8, expected_md5=md5
    )
    assert result.skipped and result.bytes_read == 0 and result.etag == etag


def test_boto3_multipart_object_is_skipped_after_hashing_at_its_part_size(
    hook, s3, bucket, make_file
) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    size = 2 * 8 * MIB + 5
    path = make_file("s.raw", size)
    etag = boto3_multipart(s3, bucket, path, "s.raw")
    _, md5 = compute_s3_etag_and_md5(path, PART)
    result = hook.upload_verified(path, bucket, "s.raw", part_size=PART, expected_md5=md5)
    assert result.skipped and result.bytes_sent == 0 and result.bytes_read == size
    assert result.part_size == 8 * MIB and result.etag == etag
    assert len(versions(s3, bucket, "s.raw")) == 1
