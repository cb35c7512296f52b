"""KrakenS3Hook against a real moto S3 server over HTTP."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re

import pytest

from airflow_provider_kraken_s3.core.decision import META_MD5, META_PART_SIZE, META_RCLONE_MD5
from airflow_provider_kraken_s3.core.errors import (
    BucketAccessDeniedError,
    BucketNotFoundError,
    IntegrityError,
    LocalFileChangedError,
    ObjectConflictError,
    S3TransientError,
)
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag, compute_s3_etag_and_md5
from kraken_standins.s3 import MotoServer
from tests.conftest import aws_connection_json
from tests.faults import CuttingProxy

PART = 5 * MIB


@pytest.fixture
def hook(aws_conn: str) -> KrakenS3Hook:
    return KrakenS3Hook(aws_conn_id=aws_conn)


def head(s3_client, bucket: str, key: str) -> dict:
    return s3_client.head_object(Bucket=bucket, Key=key)


def s3_etag(s3_client, bucket: str, key: str) -> str:
    return head(s3_client, bucket, key)["ETag"].strip('"')


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 3 * PART, 2 * PART + 4321, 7 * MIB + 3])
def test_upload_etag_equals_what_s3_reports(hook, s3_client, bucket, make_file, size: int) -> None:
    path = make_file("a.raw", size, seed=size)
    result = hook.upload_verified(path, bucket, "a.raw", part_size=PART)
    assert result.etag == s3_etag(s3_client, bucket, "a.raw") == compute_s3_etag(path, PART)
    assert result.size == size == head(s3_client, bucket, "a.raw")["ContentLength"]
    assert not result.skipped and result.bytes_sent == size
    assert result.parts_sent == max(1, -(-size // PART)) if size > PART else result.parts_sent == 1
    body = s3_client.get_object(Bucket=bucket, Key="a.raw")["Body"].read()
    assert body == path.read_bytes()


def test_metadata_carries_part_size_and_verified_md5(hook, s3_client, bucket, make_file) -> None:
    path = make_file("b.raw", 2 * PART + 10)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    result = hook.upload_verified(path, bucket, "b.raw", part_size=PART, expected_md5=md5.upper())
    assert result.md5 == md5
    metadata = head(s3_client, bucket, "b.raw")["Metadata"]
    rclone = base64.b64encode(bytes.fromhex(md5)).decode()  # what `rclone check` compares with
    assert metadata == {META_PART_SIZE: str(PART), META_MD5: md5, META_RCLONE_MD5: rclone}


def test_logs_progress_and_a_parseable_summary(hook, bucket, make_file, task_log) -> None:
    path = make_file("c.raw", 4 * PART)
    calls: list[tuple[int, int]] = []
    hook.upload_verified(path, bucket, "c.raw", part_size=PART, progress=lambda d, t: calls.append((d, t)))
    lines = task_log().splitlines()
    progress = [line for line in lines if "progress file=c.raw" in line]
    assert len(progress) >= 4 and "pct=100.00" in progress[-1] and "rate_mib_s=" in progress[0]
    summary = next(line for line in lines if "upload summary key=c.raw" in line)
    fields = dict(re.findall(r"(\w+)=(\S+)", summary))
    assert fields["key"] == "c.raw" and fields["size"] == str(4 * PART)
    assert fields["parts_sent"] == "4" and fields["parts_reused"] == "0" and fields["skipped"] == "false"
    assert calls[-1] == (4 * PART, 4 * PART)


def test_known_etag_skips_without_reading_the_file(hook, bucket, make_file) -> None:
    path = make_file("d.raw", 2 * PART + 1)
    first = hook.upload_verified(path, bucket, "d.raw", part_size=PART)
    # Same size, other bytes: had the hook read the file, the ETag check would fail.
    path.write_bytes(random.Random(99).randbytes(2 * PART + 1))
    second = hook.upload_verified(path, bucket, "d.raw", part_size=PART, expected_etag=first.etag)
    assert second.skipped and second.bytes_read == 0 and second.bytes_sent == 0
    assert second.etag == first.etag


def test_unknown_etag_skip_hashes_once_with_the_objects_part_size(hook, bucket, make_file) -> None:
    path = make_file("e.raw", 3 * PART)
    hook.upload_verified(path, bucket, "e.raw", part_size=PART)
    again = hook.upload_verified(path, bucket, "e.raw", part_size=6 * MIB)  # other default part size
    assert again.skipped and again.bytes_sent == 0 and again.bytes_read == 3 * PART
    assert again.part_size == PART


def test_our_metadata_is_a_hint_the_local_bytes_prove_the_skip(hook, bucket, make_file) -> None:
    """Defect 2: ``kraken-md5`` says which part size to hash with, never that the bytes are right."""
    path = make_file("f.raw", 2 * PART)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    hook.upload_verified(path, bucket, "f.raw", part_size=6 * MIB, expected_md5=md5)
    again = hook.upload_verified(path, bucket, "f.raw", part_size=PART, expected_md5=md5)
    assert again.skipped and again.bytes_read == 2 * PART and again.part_size == 6 * MIB
    assert "ETag of the local bytes at the object's part size" in again.reason


def test_upload_id_is_reported_before_any_part_is_sent(hook, s3_client, bucket, make_file) -> None:
    path = make_file("g.raw", 2 * PART + 1)
    seen: list[tuple[str | None, int]] = []

    def remember(upload_id: str | None, part_size: int) -> None:
        assert part_size == PART
        parts = []
        if upload_id:
            parts = s3_client.list_parts(Bucket=bucket, Key="g.raw", UploadId=upload_id).get("Parts", [])
        seen.append((upload_id, len(parts)))

    hook.upload_verified(path, bucket, "g.raw", part_size=PART, on_upload_id=remember)
    assert seen[0][0] and seen[0][1] == 0
    assert seen[-1] == (None, 0)  # cleared once completed


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_resume_after_a_cut_connection_sends_only_missing_parts(
    moto_server: MotoServer, monkeypatch, s3_client, bucket, make_file
) -> None:
    size = 6 * PART + 100
    path = make_file("h.raw", size)
    upload_ids: list[str | None] = []
    proxy = CuttingProxy(moto_server.port, cut_after=3 * PART + PART // 2)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_FLAKY",
        aws_connection_json(proxy.url, retries={"mode": "standard", "max_attempts": 2}),
    )
    with proxy.running(), pytest.raises(S3TransientError, match="retrying will resume"):
        KrakenS3Hook(aws_conn_id="aws_flaky", max_concurrency=1).upload_verified(
            path,
            bucket,
            "h.raw",
            part_size=PART,
            on_upload_id=lambda upload_id, _: upload_ids.append(upload_id),
        )
    upload_id = upload_ids[-1]
    assert upload_id, "the upload must be kept after a transient failure"
    in_s3 = s3_client.list_parts(Bucket=bucket, Key="h.raw", UploadId=upload_id)["Parts"]
    assert 1 <= len(in_s3) < 7

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json(moto_server.url))
    result = KrakenS3Hook().upload_verified(path, bucket, "h.raw", part_size=PART, upload_id=upload_id)
    assert result.parts_reused == len(in_s3)
    assert result.parts_sent == 7 - len(in_s3)
    assert result.bytes_sent == size - len(in_s3) * PART
    assert result.etag == s3_etag(s3_client, bucket, "h.raw") == compute_s3_etag(path, PART)


def test_resume_resends_parts_that_changed_locally(hook, s3_client, bucket, make_file) -> None:
    path = make_file("i.raw", 3 * PART)
    upload_id = s3_client.create_multipart_upload(Bucket=bucket, Key="i.raw")["UploadId"]
    stale = random.Random(5).randbytes(PART)  # same size as part 1, other bytes
    s3_client.upload_part(Bucket=bucket, Key="i.raw", UploadId=upload_id, PartNumber=1, Body=stale)
    good = path.read_bytes()[PART : 2 * PART]
    s3_client.upload_part(Bucket=bucket, Key="i.raw", UploadId=upload_id, PartNumber=2, Body=good)
    result = hook.upload_verified(path, bucket, "i.raw", part_size=PART, upload_id=upload_id)
    assert (result.parts_reused, result.parts_sent) == (1, 2)
    assert s3_client.get_object(Bucket=bucket, Key="i.raw")["Body"].read() == path.read_bytes()


def test_stale_upload_id_starts_a_new_upload(hook, s3_client, bucket, make_file, task_log) -> None:
    path = make_file("j.raw", 2 * PART)
    upload_id = s3_client.create_multipart_upload(Bucket=bucket, Key="j.raw")["UploadId"]
    s3_client.abort_multipart_upload(Bucket=bucket, Key="j.raw", UploadId=upload_id)
    result = hook.upload_verified(path, bucket, "j.raw", part_size=PART, upload_id=upload_id)
    assert result.parts_sent == 2 and "no longer exists" in task_log()


def test_file_changed_since_inventory_is_detected_and_not_completed(
    hook, s3_client, bucket, make_file
) -> None:
    path = make_file("k.raw", 2 * PART + 5)
    expected = compute_s3_etag(path, PART)
    data = bytearray(path.read_bytes())
    data[PART + 1] ^= 0xFF  # one flipped bit in part 2
    path.write_bytes(bytes(data))
    upload_ids: list[str | None] = []
    with pytest.raises(IntegrityError, match=r"differs from the inventory.*not completed"):
        hook.upload_verified(
            path,
            bucket,
            "k.raw",
            part_size=PART,
            expected_etag=expected,
            on_upload_id=lambda upload_id, _: upload_ids.append(upload_id),
        )
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    with pytest.raises(s3_client.exceptions.NoSuchUpload):
        s3_client.list_parts(Bucket=bucket, Key="k.raw", UploadId=upload_ids[0])  # aborted
    assert upload_ids[-1] is None


def test_wrong_expected_md5_is_not_completed(hook, s3_client, bucket, make_file) -> None:
    path = make_file("l.raw", 3 * PART + 1)
    with pytest.raises(IntegrityError, match="inventory says 0123"):
        hook.upload_verified(path, bucket, "l.raw", part_size=PART, expected_md5="0123" + "0" * 28)
    assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_expected_etag_with_other_part_count_means_local_file_differs(hook, bucket, make_file) -> None:
    path = make_file("m.raw", 2 * PART)
    with pytest.raises(IntegrityError, match="differs from the inventory"):
        hook.upload_verified(path, bucket, "m.raw", part_size=PART, expected_etag="a" * 32 + "-5")


def test_a_verified_backup_is_kept_when_the_local_copy_goes_bad(hook, s3_client, bucket, make_file) -> None:
    path = make_file("n.raw", 1000, seed=1)
    good_md5 = hashlib.md5(path.read_bytes()).hexdigest()
    hook.upload_verified(path, bucket, "n.raw", part_size=PART, expected_md5=good_md5)
    path.write_bytes(random.Random(2).randbytes(1000))  # the local copy went bad
    again = hook.upload_verified(path, bucket, "n.raw", part_size=PART, expected_md5=good_md5)
    assert again.skipped and again.bytes_sent == 0
    assert s3_etag(s3_client, bucket, "n.raw") == good_md5


@pytest.mark.parametrize("size", [1000, 2 * PART + 1])
@pytest.mark.parametrize("versioned", [True, False])
def test_a_bad_local_copy_never_replaces_an_object(
    hook, s3_client, bucket, make_file, size: int, versioned: bool
) -> None:
    if versioned:
        s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    path = make_file("p.raw", size, seed=1)
    good_etag, good_md5 = compute_s3_etag_and_md5(path, PART)
    s3_client.put_object(Bucket=bucket, Key="p.raw", Body=random.Random(3).randbytes(size))
    path.write_bytes(random.Random(2).randbytes(size))  # neither S3 nor the local copy is the acquired file
    before = s3_etag(s3_client, bucket, "p.raw")
    for expected in ({"expected_etag": good_etag}, {"expected_md5": good_md5}):
        # Versioned: the local copy is checked and refused. Unversioned: nothing is replaced at all.
        refusal = (IntegrityError, r"local (copy|file)") if versioned else (ObjectConflictError, "versioning")
        with pytest.raises(refusal[0], match=refusal[1]):
            hook.upload_verified(path, bucket, "p.raw", part_size=PART, **expected)
        assert s3_etag(s3_client, bucket, "p.raw") == before


def test_a_differing_object_is_replaced_when_the_local_file_verifies(
    hook, s3_client, bucket, make_file, task_log
) -> None:
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    path = make_file("o.raw", 2 * PART)
    s3_client.put_object(Bucket=bucket, Key="o.raw", Body=b"something else")
    etag, md5 = compute_s3_etag_and_md5(path, PART)
    result = hook.upload_verified(path, bucket, "o.raw", part_size=PART, expected_md5=md5)
    assert "REPLACING s3://" in task_log()
    assert result.etag == etag == s3_etag(s3_client, bucket, "o.raw")
    assert result.replaced_etag == hashlib.md5(b"something else").hexdigest()


def test_missing_local_file(hook, bucket, tmp_path) -> None:
    with pytest.raises(LocalFileChangedError, match="does not exist; nothing was uploaded"):
        hook.upload_verified(tmp_path / "nope.raw", bucket, "nope.raw")


def test_missing_bucket_is_named_with_region(hook) -> None:
    with pytest.raises(
        BucketNotFoundError, match=r"bucket 'no-such-bucket-x' \(region us-east-1.*does not exist"
    ):
        hook.check_bucket("no-such-bucket-x")


def test_existing_bucket_passes_and_connection_test_works(hook, bucket) -> None:
    hook.check_bucket(bucket)
    ok, message = hook.test_connection()
    assert ok and "bucket(s) visible" in message


@pytest.fixture(scope="module")
def iam_moto_server():
    """A moto server that enforces IAM after the first 4 unauthenticated calls (our setup below)."""
    with MotoServer.start(extra_env={"INITIAL_NO_AUTH_ACTION_COUNT": "4"}) as server:
        yield server


@pytest.mark.slow  # starts a Python (or a second moto_server) process
def test_denied_access_is_a_clear_error(iam_moto_server, monkeypatch) -> None:
    import boto3

    admin = dict(
        endpoint_url=iam_moto_server.url,
        region_name="us-east-1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
    )
    boto3.client("s3", **admin).create_bucket(Bucket="locked-bucket")
    iam = boto3.client("iam", **admin)
    iam.create_user(UserName="kraken")
    key = iam.create_access_key(UserName="kraken")["AccessKey"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::other/*"}],
    }
    iam.put_user_policy(UserName="kraken", PolicyName="p", PolicyDocument=json.dumps(policy))
    connection = {
        "conn_type": "aws",
        "login": key["AccessKeyId"],
        "password": key["SecretAccessKey"],
        "extra": {"endpoint_url": iam_moto_server.url, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_LIMITED", json.dumps(connection))
    with pytest.raises(
        BucketAccessDeniedError, match=r"access denied to bucket 'locked-bucket'.*aws_limited"
    ):
        KrakenS3Hook(aws_conn_id="aws_limited").check_bucket("locked-bucket")


def test_file_truncated_during_the_upload_aborts_it(hook, s3_client, bucket, make_file) -> None:
    path = make_file("t.raw", 4 * PART)
    upload_ids: list[str | None] = []

    def truncate_once(done: int, total: int) -> None:
        if done >= PART and path.stat().st_size == total:
            with open(path, "r+b") as handle:
                handle.truncate(PART + 10)

    with pytest.raises(LocalFileChangedError, match="became shorter"):
        hook.upload_verified(
            path,
            bucket,
            "t.raw",
            part_size=PART,
            progress=truncate_once,
            on_upload_id=lambda upload_id, _: upload_ids.append(upload_id),
            max_concurrency=2,
        )
    assert upload_ids[-1] is None  # aborted, and the caller was told
    with pytest.raises(s3_client.exceptions.NoSuchUpload):
        s3_client.list_parts(Bucket=bucket, Key="t.raw", UploadId=upload_ids[0])
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_file_rewritten_in_place_during_the_upload_is_detected(hook, s3_client, bucket, make_file) -> None:
    path = make_file("u.raw", 3 * PART)

    def touch_once(done: int, total: int) -> None:
        if done == total:
            with open(path, "r+b") as handle:  # in place, never shorter: same size, new content and mtime
                handle.write(random.Random(4).randbytes(total))

    # Caught by the part ETag check (bytes sent differ from bytes hashed) or by the final stat check,
    # depending on whether the rewrite lands before or after a part is sent: either way, nothing completes.
    with pytest.raises((IntegrityError, LocalFileChangedError), match="changed"):
        hook.upload_verified(path, bucket, "u.raw", part_size=PART, progress=touch_once)
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_an_inventory_etag_of_one_part_uploads_as_a_single_put(hook, s3_client, bucket, make_file) -> None:
    """A ``…-1`` ETag recorded from alphakraken's uploader must not make a re-upload look like a bad file."""
    path = make_file("w.raw", 1000)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    one_part = f"{hashlib.md5(bytes.fromhex(md5)).hexdigest()}-1"
    result = hook.upload_verified(
        path, bucket, "w.raw", part_size=PART, expected_etag=one_part, expected_md5=md5
    )
    assert result.etag == md5 == s3_etag(s3_client, bucket, "w.raw")


@pytest.mark.slow  # a 150 MiB upload
def test_progress_counts_acknowledged_parts_in_at_most_twenty_lines(
    hook, bucket, make_file, task_log
) -> None:
    """Issue 8: people read these logs; a long file gets ~20 lines, a one-part file none, all in a group."""
    big = make_file("many.raw", 30 * PART)
    hook.upload_verified(big, bucket, "many.raw", part_size=PART)
    small = make_file("one.raw", 1000)
    hook.upload_verified(small, bucket, "one.raw", part_size=PART)
    lines = task_log().splitlines()  # Airflow 2 shows each line twice here (logging and stderr): count values
    steps = {re.search(r"pct=(\S+)", line).group(1) for line in lines if "progress file=many.raw" in line}
    assert 1 <= len(steps) <= 20 and "100.00" in steps
    assert not any("progress file=one.raw" in line for line in lines)
    assert any("all 30 parts proven, completing" in line for line in lines)
    for name in ("many.raw", "one.raw"):
        assert any(f"::group::upload s3://{bucket}/{name}" in line for line in lines)
    assert any("::endgroup::" in line for line in lines)
