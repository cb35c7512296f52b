"""The verified upload under faults on the wire: a real boto3 client, the FaultProxy, a real moto server.

Each scenario is one way the world breaks a backup. The outcome asserted is what S3 holds afterwards (and
what the caller was told), never a mocked call.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading

import pytest

from airflow_provider_kraken_s3.core.errors import (
    IntegrityError,
    LocalFileChangedError,
    MongoUnavailableError,
    S3TransientError,
)
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag, compute_s3_etag_and_md5
from tests.conftest import aws_connection_json
from tests.faults import FaultProxy, LoseResponse, after, flip_byte, hold, respond, rewrite_etag

PART = 5 * MIB


@pytest.fixture
def proxy(moto_server, monkeypatch):
    """``aws_faulty`` → the FaultProxy → moto; two botocore attempts per request."""
    faults = FaultProxy(moto_server.port)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_FAULTY",
        aws_connection_json(faults.url, retries={"mode": "standard", "max_attempts": 2}),
    )
    with faults.running():
        yield faults


def hook(**kwargs) -> KrakenS3Hook:
    return KrakenS3Hook(aws_conn_id="aws_faulty", **kwargs)


def uploads_of(s3_client, bucket: str) -> list[str]:
    return [u["UploadId"] for u in s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_a_part_corrupted_in_transit_is_caught_and_never_completed(
    proxy, s3_client, bucket, make_file
) -> None:
    path = make_file("a.raw", 3 * PART)
    proxy.add(flip_byte("UploadPart", part_number=2, offset=123))
    with pytest.raises(IntegrityError, match=r"part 2 .*corrupted in transit"):
        hook().upload_verified(
            path, bucket, "a.raw", part_size=PART, expected_md5=hashlib.md5(path.read_bytes()).hexdigest()
        )
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert uploads_of(s3_client, bucket) == []  # an integrity failure aborts the upload


def test_a_single_put_corrupted_in_transit_leaves_no_claim_of_ours(
    proxy, s3_client, bucket, make_file
) -> None:
    """moto does not check Content-MD5: the bad object is stored. It must carry no ``kraken-md5``."""
    path = make_file("b.raw", 1000)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    proxy.add(flip_byte("PutObject", offset=5))
    with pytest.raises(IntegrityError, match="corrupted in transit"):
        hook().upload_verified(path, bucket, "b.raw", part_size=PART, expected_md5=md5)
    head = s3_client.head_object(Bucket=bucket, Key="b.raw")
    assert head["Metadata"] == {} and head["ETag"].strip('"') != md5
    s3_client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    again = hook().upload_verified(path, bucket, "b.raw", part_size=PART, expected_md5=md5)
    assert not again.skipped and again.reason == "replaced" and again.etag == md5


def test_a_rewritten_part_etag_is_not_believed(proxy, s3_client, bucket, make_file) -> None:
    path = make_file("c.raw", 2 * PART + 1)
    proxy.add(rewrite_etag("UploadPart", "0" * 32, part_number=1))
    with pytest.raises(IntegrityError, match=r"part 1 .*ETag 0{32}"):
        hook().upload_verified(path, bucket, "c.raw", part_size=PART)
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
@pytest.mark.parametrize(("status", "code"), [(503, "SlowDown"), (500, "InternalError")])
def test_one_transient_answer_is_retried_inside_the_task(
    proxy, s3_client, bucket, make_file, status, code
) -> None:
    path = make_file("d.raw", 2 * PART)
    proxy.add(respond("UploadPart", status, code, part_number=2))
    result = hook().upload_verified(path, bucket, "d.raw", part_size=PART)
    assert result.etag == compute_s3_etag(path, PART)
    assert [r.status for r in proxy.records("UploadPart", part_number=2)] == [status, 200]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "ExpiredToken"),
        (403, "RequestTimeTooSkewed"),
        (429, "TooManyRequests"),
        (409, "OperationAborted"),
    ],
)
def test_lasting_transient_answers_keep_the_upload_for_a_resume(
    proxy, s3_client, bucket, make_file, status, code
) -> None:
    """Defect 8: these clear up; the upload must be kept and the error transient, not "access denied"."""
    path = make_file("e.raw", 2 * PART)
    proxy.add(respond("UploadPart", status, code, part_number=2, times=None))
    with pytest.raises(S3TransientError, match=code):
        hook(max_concurrency=1).upload_verified(path, bucket, "e.raw", part_size=PART)
    assert len(uploads_of(s3_client, bucket)) == 1


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_a_lost_completion_response_ends_in_a_verified_object(
    proxy, s3_client, bucket, make_file, task_log
) -> None:
    """Defect 8: the retried Complete answers NoSuchUpload although the object is complete and correct."""
    path = make_file("f.raw", 2 * PART + 7)

    class LoseThenForget(LoseResponse):
        """The completion lands but its answer is lost; the retry is told the upload is gone (as S3 does)."""

        def on_request(self, request) -> None:
            proxy.add(respond("CompleteMultipartUpload", 404, "NoSuchUpload"))

    proxy.add(LoseThenForget("CompleteMultipartUpload"))
    result = hook().upload_verified(path, bucket, "f.raw", part_size=PART)
    assert (
        result.etag
        == compute_s3_etag(path, PART)
        == s3_client.head_object(Bucket=bucket, Key="f.raw")["ETag"].strip('"')
    )
    assert "response was lost" in task_log()


def test_a_vanished_upload_is_never_aborted_by_us_and_is_forgotten(
    proxy, s3_client, bucket, make_file
) -> None:
    path = make_file("g.raw", 2 * PART)
    proxy.add(respond("UploadPart", 404, "NoSuchUpload", part_number=1, times=None))
    told: list[str | None] = []
    with pytest.raises(S3TransientError, match="no longer exists"):
        hook(max_concurrency=1).upload_verified(
            path, bucket, "g.raw", part_size=PART, on_upload_id=lambda upload_id, _: told.append(upload_id)
        )
    assert told[-1] is None and not proxy.records("AbortMultipartUpload")


def test_the_file_fixed_in_place_after_a_bad_part_was_sent_is_never_completed(
    proxy, s3_client, bucket, make_file
) -> None:
    """Defect 3, end to end: part 2 goes out with a bad byte, then the file is fixed in place and its mtime
    restored (``cp -p``, ``rsync -t --inplace``) before the whole-file MD5 gets to part 2. S3 must never
    complete an object whose bytes differ from the inventory."""
    path = make_file("h.raw", 8 * PART, seed=3)
    good = path.read_bytes()
    md5 = hashlib.md5(good).hexdigest()
    bad = bytearray(good)
    bad[PART + 10] ^= 0xFF
    path.write_bytes(bytes(bad))
    stat = path.stat()
    part_2_sent = threading.Event()

    def fix_file(_record) -> None:
        with open(path, "r+b") as handle:
            handle.write(good)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        part_2_sent.set()

    proxy.add(hold("UploadPart", part_2_sent, part_number=1))
    proxy.add(after("UploadPart", fix_file, part_number=2))
    with pytest.raises((IntegrityError, LocalFileChangedError)):
        hook(max_concurrency=8).upload_verified(path, bucket, "h.raw", part_size=PART, expected_md5=md5)
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_the_expected_bucket_owner_goes_with_every_request(proxy, bucket, make_file) -> None:
    path = make_file("i.raw", PART + 1)
    # moto ignores the header (real S3 refuses a bucket of another account); what matters is that it is sent.
    hook(expected_bucket_owner="111122223333").upload_verified(path, bucket, "i.raw", part_size=PART)
    sent = [r for r in proxy.requests if r.operation != "Other"]
    assert sent and all(r.headers.get("x-amz-expected-bucket-owner") == "111122223333" for r in sent)


def test_an_upload_id_that_cannot_be_recorded_is_aborted(proxy, s3_client, bucket, make_file) -> None:
    """Defect 9: if persisting the id fails, nobody could resume the upload: abort it, raise the cause."""
    path = make_file("j.raw", 2 * PART)

    def mongo_down(upload_id, part_size) -> None:
        if upload_id:
            raise MongoUnavailableError("MongoDB unavailable while recording")

    with pytest.raises(MongoUnavailableError):
        hook().upload_verified(path, bucket, "j.raw", part_size=PART, on_upload_id=mongo_down)
    assert uploads_of(s3_client, bucket) == [] and not proxy.records("UploadPart")


def test_with_a_precomputed_etag_the_file_is_read_once(proxy, bucket, make_file) -> None:
    """One read pass: the part MD5s prove the bytes against the inventory's ETag; no whole-file MD5 runs."""
    path = make_file("k.raw", 3 * PART)
    etag, md5 = compute_s3_etag_and_md5(path, PART)
    result = hook().upload_verified(
        path, bucket, "k.raw", part_size=PART, expected_etag=etag, expected_md5=md5
    )
    assert result.bytes_read == 3 * PART and result.etag == etag and result.md5 == md5


def test_a_set_is_listed_once_uploaded_concurrently_and_rerun_without_a_request_per_file(
    proxy, s3_client, bucket, tmp_path, kraken_mongo, monkeypatch
) -> None:
    """Issue 8: a ``.d`` folder of many small files: one listing instead of a HEAD per file, before and
    after; a re-run proves everything from one listing and reads nothing."""
    from airflow_provider_kraken_s3.core.parts import MIB as _MIB
    from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
    from tests.conftest_mongo import insert_raw_file

    sizes = {f"m.d/f{index:03d}.bin": 1000 + index for index in range(40)}
    file_info = {}
    for relative, size in sizes.items():
        data = random.Random(relative).randbytes(size)
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(data)
        file_info[relative] = [size, hashlib.md5(data).hexdigest()]
    project = bucket.removeprefix("kraken-test-")
    insert_raw_file("m.d", project_id=project, backup_base_path=str(tmp_path), file_info=file_info)
    backup = RawFileS3BackupOperator(
        task_id="t",
        raw_file_id="m.d",
        bucket_prefix="kraken-test",
        part_size=5 * _MIB,
        aws_conn_id="aws_faulty",
    )
    backup.execute(context={})
    counts = {op: len(proxy.records(op)) for op in ("HeadObject", "ListObjectsV2", "PutObject")}
    assert counts == {"HeadObject": 0, "ListObjectsV2": 2, "PutObject": 40}
    before = len(proxy.requests)
    second = backup.execute(context={})
    after = [r.operation for r in proxy.requests[before:]]
    assert second["bytes_uploaded"] == 0 and after.count("ListObjectsV2") == 1
    assert "HeadObject" not in after and "PutObject" not in after


def test_one_failing_file_fails_the_whole_set_and_nothing_is_recorded_done(
    proxy, s3_client, bucket, tmp_path, kraken_mongo
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
    from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
    from tests.conftest_mongo import insert_raw_file

    file_info = {}
    for index in range(6):
        relative = f"n.d/f{index}.bin"
        data = random.Random(relative).randbytes(500)
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(data)
        file_info[relative] = [500, hashlib.md5(data).hexdigest()]
    insert_raw_file(
        "n.d",
        project_id=bucket.removeprefix("kraken-test-"),
        backup_base_path=str(tmp_path),
        file_info=file_info,
    )
    proxy.add(respond("PutObject", 403, "AccessDenied", key="n.d/f3.bin", times=None))
    with pytest.raises(AirflowFailException, match=r"n\.d/f3\.bin"):
        RawFileS3BackupOperator(
            task_id="t", raw_file_id="n.d", bucket_prefix="kraken-test", aws_conn_id="aws_faulty"
        ).execute(context={})
    raw = RawFile.objects.get(id="n.d")
    assert raw.backup_status == BackupStatus.FAILED and "AccessDenied" in raw.s3_backup_details
    assert all(len(entry) == 2 for entry in raw.file_info.values())  # no ETag recorded for anything


def test_two_runs_creating_the_same_new_bucket_both_succeed(proxy, s3_client) -> None:
    """Defect 9: the loser of a creation race gets BucketAlreadyOwnedByYou; that is success, not an error."""
    name = f"kraken-race-{random.Random().getrandbits(40):010x}"
    s3_client.create_bucket(Bucket=name)  # the other run won the race
    proxy.add(respond("CreateBucket", 409, "BucketAlreadyOwnedByYou"))
    hook().create_backup_bucket(name, tags={"project_id": "p"})
    assert s3_client.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    assert [r.status for r in proxy.records("CreateBucket")] == [409]
