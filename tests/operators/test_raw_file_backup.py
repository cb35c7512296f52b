"""RawFileS3BackupOperator against moto server (real HTTP) and mongomock behind a real Airflow connection."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_provider_kraken_s3.core.errors import BackupInterrupted, S3TransientError
from airflow_provider_kraken_s3.core.layout import set_etag
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag
from airflow_provider_kraken_s3.transfer.progress import ProgressReporter
from tests.conftest import aws_connection_json
from tests.conftest_mongo import insert_raw_file
from tests.faults import CuttingProxy

PART = 5 * MIB
PREFIX = "kraken-lab"
PROJECT = "P1234"
BUCKET = "kraken-lab-p1234"


def operator(raw_file_id: str, **kwargs) -> RawFileS3BackupOperator:
    kwargs.setdefault("bucket_prefix", PREFIX)
    kwargs.setdefault("part_size", PART)
    return RawFileS3BackupOperator(task_id="upload_to_s3", raw_file_id=raw_file_id, **kwargs)


def reload(raw_file_id: str) -> RawFile:
    return RawFile.objects.get(id=raw_file_id)


def etag_of(s3_client, key: str) -> str:
    return s3_client.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')


def test_single_raw_file(aws_conn, s3_client, project_bucket, stage) -> None:
    stage("s1.raw", {"s1.raw": 2 * PART + 3})
    result = operator("s1.raw").execute(context={})
    raw = reload("s1.raw")
    etag = etag_of(s3_client, "s1.raw")
    assert raw.backup_status == BackupStatus.DONE
    assert (raw.s3_bucket, raw.s3_backup_key, raw.s3_etag) == (BUCKET, "s1.raw", etag)
    assert raw.file_info["s1.raw"][2] == f"{etag}__5" and etag.endswith("-3")
    assert raw.s3_uploads == [] and "verified 1 file(s)" in raw.s3_backup_details
    assert raw.s3_lease_owner is None  # given back
    assert result == {
        "status": BackupStatus.DONE,
        "bucket": BUCKET,
        "s3_backup_key": "s1.raw",
        "s3_etag": etag,
        "s3_upload_path": f"s3://{BUCKET}",
        "files": 1,
        "bytes": 2 * PART + 3,
        "bytes_uploaded": 2 * PART + 3,
        "files_skipped": 0,
        "seconds": result["seconds"],
    }


def test_bruker_d_folder(aws_conn, s3_client, project_bucket, stage) -> None:
    sizes = {"b.d/analysis.tdf": 1000, "b.d/analysis.tdf_bin": PART + 7, "b.d/sub/x.method": 0}
    stage("b.d", sizes)
    result = operator("b.d").execute(context={})
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == sorted(sizes)
    raw = reload("b.d")
    assert raw.s3_backup_key == "b.d/" == result["s3_backup_key"]
    assert raw.s3_etag == set_etag({key: etag_of(s3_client, key) for key in keys})
    assert all(raw.file_info[key][2].startswith(etag_of(s3_client, key)) for key in keys)


def test_sciex_wiff_set_goes_under_the_raw_file_id(aws_conn, s3_client, project_bucket, stage) -> None:
    stage("w.wiff", {"w.wiff": 100, "w.wiff2": 200, "w.wiff.scan": PART + 1})
    operator("w.wiff").execute(context={})
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == ["w.wiff/w.wiff", "w.wiff/w.wiff.scan", "w.wiff/w.wiff2"]
    assert reload("w.wiff").s3_backup_key == "w.wiff/"


def test_rerun_with_known_etags_reads_and_sends_nothing(aws_conn, project_bucket, stage) -> None:
    base = stage("r.d", {"r.d/a": PART + 1, "r.d/b": 10}, with_etag=True)
    first = operator("r.d").execute(context={})
    for name, size in (("a", PART + 1), ("b", 10)):  # same sizes, other bytes: reading them would fail
        (base / "r.d" / name).write_bytes(random.Random(7).randbytes(size))
    second = operator("r.d").execute(context={})
    assert second["files_skipped"] == 2 and second["bytes_uploaded"] == 0
    assert second["s3_etag"] == first["s3_etag"] and reload("r.d").backup_status == BackupStatus.DONE


def test_done_row_is_rechecked_not_trusted(aws_conn, s3_client, project_bucket, stage) -> None:
    stage("d1.raw", {"d1.raw": 1000})
    operator("d1.raw").execute(context={})
    s3_client.delete_object(Bucket=BUCKET, Key="d1.raw")  # someone removed the backup
    result = operator("d1.raw").execute(context={})
    assert result["bytes_uploaded"] == 1000 and etag_of(s3_client, "d1.raw")


@pytest.mark.slow  # a 30 MiB upload cut and resumed; the fast loop keeps the hook's resume test
def test_resume_across_a_retry(moto_server, monkeypatch, s3_client, project_bucket, stage) -> None:
    stage("big.raw", {"big.raw": 6 * PART})
    proxy = CuttingProxy(moto_server.port, cut_after=3 * PART)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_FLAKY", aws_connection_json(proxy.url, retries={"max_attempts": 2}))
    first_try = {"ti": SimpleNamespace(try_number=1)}
    with proxy.running(), pytest.raises(S3TransientError):
        operator("big.raw", aws_conn_id="aws_flaky", retries=2, max_concurrency=1).execute(context=first_try)
    raw = reload("big.raw")
    assert raw.backup_status == BackupStatus.FAILED
    assert "try 1 of 3: Airflow retries and resumes" in raw.s3_backup_details
    (entry,) = raw.s3_uploads
    assert (entry["path"], entry["part_size"], entry["expect"]) == (
        "big.raw",
        PART,
        f"md5:{raw.file_info['big.raw'][1]}",
    )
    upload_id = entry["upload_id"]
    kept = len(s3_client.list_parts(Bucket=BUCKET, Key="big.raw", UploadId=upload_id)["Parts"])
    assert kept >= 1

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json(moto_server.url))
    result = operator("big.raw", retries=2).execute(context={"ti": SimpleNamespace(try_number=2)})
    assert result["bytes_uploaded"] == 6 * PART - kept * PART
    raw = reload("big.raw")
    assert raw.backup_status == BackupStatus.DONE and raw.s3_uploads == []
    assert etag_of(s3_client, "big.raw") == compute_s3_etag(Path(raw.backup_base_path) / "big.raw", PART)


def test_missing_bucket_fails_without_retry(aws_conn, stage) -> None:
    stage("m.raw", {"m.raw": 10}, project_id="nobucket")
    with pytest.raises(AirflowFailException, match=r"kraken-lab-nobucket' .*does not exist"):
        operator("m.raw").execute(context={})
    raw = reload("m.raw")
    assert raw.backup_status == BackupStatus.FAILED and "does not exist" in raw.s3_backup_details
    assert raw.s3_bucket is None  # a failure never names a location: only a verified backup does


def test_unknown_raw_file(aws_conn, kraken_mongo) -> None:
    with pytest.raises(AirflowFailException, match=r"nope\.raw"):
        operator("nope.raw").execute(context={})


@pytest.mark.parametrize(
    ("file_info", "message"),
    [
        ({}, "empty file_info"),
        ({"../etc/passwd": [1, "0" * 32]}, r"\.\."),
        ({"/abs.raw": [1, "0" * 32]}, "absolute"),
        ({"x.raw": [1, "not-an-md5"]}, "md5"),
    ],
)
def test_bad_inventories_fail_and_upload_nothing(
    aws_conn, s3_client, project_bucket, kraken_mongo, file_info, message
) -> None:
    insert_raw_file("x.raw", project_id=PROJECT, file_info=file_info, backup_base_path="/tmp")
    with pytest.raises(AirflowFailException, match=message):
        operator("x.raw").execute(context={})
    assert reload("x.raw").backup_status == BackupStatus.FAILED
    assert s3_client.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0


def test_missing_local_file(aws_conn, s3_client, project_bucket, stage) -> None:
    base = stage("gone.d", {"gone.d/a": 10, "gone.d/b": 20})
    (base / "gone.d" / "b").unlink()
    with pytest.raises(AirflowFailException, match="does not exist"):
        operator("gone.d").execute(context={})
    assert s3_client.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0  # checked before any upload


def test_local_file_differing_from_inventory_md5_is_not_uploaded(
    aws_conn, s3_client, project_bucket, stage
) -> None:
    base = stage("bad.raw", {"bad.raw": 3 * PART})
    (base / "bad.raw").write_bytes(random.Random(1).randbytes(3 * PART))
    with pytest.raises(AirflowFailException, match="inventory says"):
        operator("bad.raw").execute(context={})
    assert s3_client.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0
    raw = reload("bad.raw")
    assert raw.backup_status == BackupStatus.FAILED and "IntegrityError" in raw.s3_backup_details


def test_a_differing_object_is_replaced_only_by_a_verified_local_file(
    aws_conn, s3_client, project_bucket, stage, task_log
) -> None:
    s3_client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    base = stage("v.raw", {"v.raw": 2 * PART})
    s3_client.put_object(Bucket=BUCKET, Key="v.raw", Body=b"old, different bytes")
    operator("v.raw").execute(context={})
    assert "REPLACING s3://" in task_log()
    versions = s3_client.list_object_versions(Bucket=BUCKET, Prefix="v.raw")["Versions"]
    assert len(versions) == 2  # the old version is kept
    good = etag_of(s3_client, "v.raw")
    (base / "v.raw").write_bytes(random.Random(3).randbytes(2 * PART))  # the local copy goes bad
    s3_client.put_object(Bucket=BUCKET, Key="v.raw", Body=b"tampered")
    with pytest.raises(AirflowFailException, match="local"):
        operator("v.raw").execute(context={})
    assert etag_of(s3_client, "v.raw") == hashlib.md5(b"tampered").hexdigest() != good


def test_raise_on_failure_false_records_and_succeeds(aws_conn, stage) -> None:
    stage("q.raw", {"q.raw": 10}, project_id="nobucket")
    result = operator("q.raw", raise_on_failure=False).execute(context={})
    assert result["status"] == BackupStatus.FAILED and "does not exist" in result["error"]
    assert reload("q.raw").backup_status == BackupStatus.FAILED


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_raise_on_failure_false_still_retries_transient_errors(monkeypatch, stage, project_bucket) -> None:
    stage("t.raw", {"t.raw": 10})
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEAD", aws_connection_json("http://127.0.0.1:9", retries={"max_attempts": 1})
    )
    op = operator("t.raw", aws_conn_id="aws_dead", raise_on_failure=False, retries=1)
    with pytest.raises(S3TransientError):
        op.execute(context={"ti": SimpleNamespace(try_number=1)})
    result = op.execute(context={"ti": SimpleNamespace(try_number=2)})
    assert result["status"] == BackupStatus.FAILED and "last of 2 tries" in result["error"]


def test_local_backup_type_skips_and_leaves_the_row_alone(aws_conn, stage) -> None:
    stage("l.raw", {"l.raw": 10})
    before = reload("l.raw").to_mongo().to_dict()
    with pytest.raises(AirflowSkipException, match="backup_type is 'local'"):
        operator("l.raw", backup_type="local").execute(context={})
    assert reload("l.raw").to_mongo().to_dict() == before


def test_settings_from_yaml(aws_conn, s3_client, project_bucket, stage, tmp_path) -> None:
    stage("y.raw", {"y.raw": 10})
    settings = tmp_path / "alphakraken.yaml"
    settings.write_text(
        "backup:\n  backup_type: s3\n  s3:\n    region: us-east-1\n    bucket_prefix: kraken-lab\n"
    )
    result = operator("y.raw", bucket_prefix=None, settings_path=str(settings)).execute(context={})
    assert result["bucket"] == BUCKET


def test_unknown_fields_survive(aws_conn, project_bucket, stage, kraken_db) -> None:
    stage("u.raw", {"u.raw": 10})
    kraken_db.raw_file.update_one({"_id": "u.raw"}, {"$set": {"lab_note": "keep me", "status": "done"}})
    operator("u.raw").execute(context={})
    document = kraken_db.raw_file.find_one({"_id": "u.raw"})
    assert document["lab_note"] == "keep me" and document["status"] == "done"
    assert document["backup_status"] == BackupStatus.DONE


def test_create_bucket_if_missing(aws_conn, s3_client, stage) -> None:
    stage("c.raw", {"c.raw": 10}, project_id="fresh")
    operator("c.raw", create_bucket_if_missing=True).execute(context={})
    bucket = "kraken-lab-fresh"
    assert s3_client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = s3_client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rules[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    block = s3_client.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    encryption = s3_client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    tags = {t["Key"]: t["Value"] for t in s3_client.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    assert tags["project_id"] == "fresh" and tags["ManagedBy"] == "alphakraken"
    assert reload("c.raw").backup_status == BackupStatus.DONE


def test_invalid_arguments_fail_at_parse_time() -> None:
    with pytest.raises(ValueError, match="backup_type"):
        operator("x.raw", backup_type="tape")
    with pytest.raises(ValueError, match="part_size"):
        operator("x.raw", part_size=1)


def test_unreachable_mongodb_names_host_and_database_and_is_retried(aws_conn, monkeypatch) -> None:
    from airflow_provider_kraken_s3.core.errors import MongoUnavailableError

    monkeypatch.setenv(
        "AIRFLOW_CONN_KRAKEN_MONGO_DOWN",
        '{"conn_type": "kraken_mongo", "host": "127.0.0.1", "port": 1, "schema": "krakendb",'
        ' "login": "u", "password": "secret-pw", "extra": {"serverSelectionTimeoutMS": 200}}',
    )
    with pytest.raises(MongoUnavailableError, match=r"127\.0\.0\.1.*krakendb") as raised:
        operator("x.raw", mongo_conn_id="kraken_mongo_down").execute(context={})
    assert "secret-pw" not in str(raised.value)


# ------------------------------------------------------------------ issue 7: the record never lies


def test_bad_bytes_on_a_store_without_content_md5_checks_are_never_recorded_done(
    aws_conn, s3_client, project_bucket, stage
) -> None:
    """Defect 1: moto stores a single PUT whose bytes contradict its Content-MD5. The object must carry no
    claim of ours, and no later run may skip it or record DONE."""
    base = stage("c1.raw", {"c1.raw": 1000})
    (base / "c1.raw").write_bytes(random.Random(9).randbytes(1000))  # not the acquired bytes
    for _ in range(2):
        with pytest.raises(AirflowFailException, match=r"differs from the inventory|not the acquired file"):
            operator("c1.raw").execute(context={})
        assert reload("c1.raw").backup_status == BackupStatus.FAILED
    head = s3_client.head_object(Bucket=BUCKET, Key="c1.raw")
    assert head["Metadata"] == {}  # no kraken-md5 claim next to the bad bytes
    assert head["ETag"].strip('"') != reload("c1.raw").file_info["c1.raw"][1]


def test_a_forged_object_with_our_metadata_is_replaced_by_a_verified_upload(
    aws_conn, s3_client, project_bucket, stage
) -> None:
    """Defect 2: same size, other bytes, ``kraken-md5`` equal to the inventory MD5: not a backup."""
    s3_client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    base = stage("f1.raw", {"f1.raw": 2 * PART + 5})
    md5 = reload("f1.raw").file_info["f1.raw"][1]
    forged = random.Random(11).randbytes(2 * PART + 5)
    upload_id = s3_client.create_multipart_upload(
        Bucket=BUCKET, Key="f1.raw", Metadata={"kraken-md5": md5, "kraken-part-size": str(PART)}
    )["UploadId"]
    parts = []
    for number, offset in enumerate(range(0, len(forged), PART), start=1):
        etag = s3_client.upload_part(
            Bucket=BUCKET,
            Key="f1.raw",
            UploadId=upload_id,
            PartNumber=number,
            Body=forged[offset : offset + PART],
        )["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    s3_client.complete_multipart_upload(
        Bucket=BUCKET, Key="f1.raw", UploadId=upload_id, MultipartUpload={"Parts": parts}
    )
    result = operator("f1.raw").execute(context={})
    assert result["bytes_uploaded"] == 2 * PART + 5
    body = s3_client.get_object(Bucket=BUCKET, Key="f1.raw")["Body"].read()
    assert body == (base / "f1.raw").read_bytes() and reload("f1.raw").backup_status == BackupStatus.DONE


def test_a_verified_done_is_not_downgraded_when_the_local_copy_is_gone(
    aws_conn, project_bucket, stage, kraken_db
) -> None:
    """Defect 6: S3 still proves every object; the purged local copy changes nothing, and nothing is written."""
    base = stage("g1.d", {"g1.d/a": PART + 3, "g1.d/b": 10})
    operator("g1.d").execute(context={})
    before = kraken_db.raw_file.find_one({"_id": "g1.d"})
    for name in ("a", "b"):
        (base / "g1.d" / name).unlink()
    result = operator("g1.d").execute(context={})
    assert result["bytes_uploaded"] == 0 and result["files_skipped"] == 2
    assert kraken_db.raw_file.find_one({"_id": "g1.d"}) == before  # not even upload_in_progress


def test_a_done_whose_object_vanished_and_whose_local_copy_is_gone_says_so(
    aws_conn, s3_client, project_bucket, stage
) -> None:
    base = stage("h1.raw", {"h1.raw": 100})
    operator("h1.raw").execute(context={})
    s3_client.delete_object(Bucket=BUCKET, Key="h1.raw")
    (base / "h1.raw").unlink()
    with pytest.raises(AirflowFailException, match="S3 does not hold a verified copy"):
        operator("h1.raw").execute(context={})
    assert reload("h1.raw").backup_status == BackupStatus.FAILED


def test_a_second_attempt_does_not_upload_while_the_first_holds_the_lease(
    aws_conn, s3_client, project_bucket, stage
) -> None:
    """Defect 5: two concurrent attempts never upload the same files; the second backs off, unrecorded."""
    from airflow_provider_kraken_s3.core.errors import LeaseHeldError
    from airflow_provider_kraken_s3.records import lease

    stage("i1.raw", {"i1.raw": 100})
    lease.claim("i1.raw", lease.Attempt("upload_to_s3/other-run/try1#1"))
    with pytest.raises(LeaseHeldError, match="other-run"):
        operator("i1.raw").execute(context={})
    assert reload("i1.raw").backup_status == BackupStatus.COPYING_DONE
    assert s3_client.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0


def test_an_expired_lease_of_a_killed_worker_is_taken_over_and_its_upload_resumed(
    aws_conn, s3_client, project_bucket, stage, kraken_db
) -> None:
    """A SIGKILLed worker leaves upload_in_progress and its lease; once it expires, the next attempt resumes."""
    from datetime import datetime, timedelta, timezone

    base = stage("k1.raw", {"k1.raw": 3 * PART})
    data = (base / "k1.raw").read_bytes()
    md5 = reload("k1.raw").file_info["k1.raw"][1]
    upload_id = s3_client.create_multipart_upload(Bucket=BUCKET, Key="k1.raw")["UploadId"]
    s3_client.upload_part(Bucket=BUCKET, Key="k1.raw", UploadId=upload_id, PartNumber=1, Body=data[:PART])
    entry = {
        "path": "k1.raw",
        "key": "k1.raw",
        "upload_id": upload_id,
        "part_size": PART,
        "expect": f"md5:{md5}",
    }
    kraken_db.raw_file.update_one(
        {"_id": "k1.raw"},
        {
            "$set": {
                "backup_status": BackupStatus.IN_PROGRESS,
                "s3_uploads": [entry],
                "s3_lease_owner": "upload_to_s3/run/try1#dead",
                "s3_lease_expires_at": datetime.now(timezone.utc) - timedelta(seconds=1),
            }
        },
    )
    result = operator("k1.raw").execute(context={})
    assert result["bytes_uploaded"] == 2 * PART  # part 1 was kept and proven, not re-sent
    raw = reload("k1.raw")
    assert raw.backup_status == BackupStatus.DONE and raw.s3_uploads == [] and raw.s3_lease_owner is None


def test_a_stored_upload_of_another_part_size_is_not_resumed(
    aws_conn, s3_client, project_bucket, stage, kraken_db
) -> None:
    """Defect 9: an upload created with other parts (or for another expectation) would complete an object whose
    metadata and part layout are not this attempt's."""
    stage("m1.raw", {"m1.raw": 3 * PART})
    md5 = reload("m1.raw").file_info["m1.raw"][1]
    other = s3_client.create_multipart_upload(Bucket=BUCKET, Key="m1.raw")["UploadId"]
    entry = {
        "path": "m1.raw",
        "key": "m1.raw",
        "upload_id": other,
        "part_size": 6 * MIB,
        "expect": f"md5:{md5}",
    }
    kraken_db.raw_file.update_one({"_id": "m1.raw"}, {"$set": {"s3_uploads": [entry]}})
    operator("m1.raw").execute(context={})
    assert s3_client.head_object(Bucket=BUCKET, Key="m1.raw")["ETag"].strip('"').endswith("-3")
    assert other in {
        u["UploadId"] for u in s3_client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])
    }


def test_a_bucket_tagged_for_another_project_is_refused(aws_conn, s3_client, project_bucket, stage) -> None:
    """Defect 9: project ids that normalise alike (Müller_2024 / Möller_2024) must not share a bucket."""
    s3_client.put_bucket_tagging(
        Bucket=BUCKET, Tagging={"TagSet": [{"Key": "project_id", "Value": "p1234-other"}]}
    )
    stage("n1.raw", {"n1.raw": 10})
    with pytest.raises(AirflowFailException, match=r"tagged project_id='p1234-other'.*P1234"):
        operator("n1.raw").execute(context={})
    assert s3_client.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0
    s3_client.delete_bucket_tagging(Bucket=BUCKET)  # moto keeps tags of a deleted bucket's name


def test_a_kill_stops_the_upload_and_is_recorded_as_resumable(
    aws_conn, s3_client, project_bucket, stage, monkeypatch
) -> None:
    """Defect 4: a killed task ends FAILED "will resume", with its multipart upload kept for the next try."""
    stage("o1.raw", {"o1.raw": 4 * PART})
    op = operator("o1.raw", max_concurrency=1)
    real_add = ProgressReporter.add

    def kill_once_part_1_is_sent(self, count: int) -> None:
        real_add(self, count)
        if self.done >= 2 * PART:  # reading part 2 means part 1 went out (one part at a time)
            op.on_kill()

    monkeypatch.setattr(ProgressReporter, "add", kill_once_part_1_is_sent)
    with pytest.raises(BackupInterrupted):
        op.execute(context={})
    raw = reload("o1.raw")
    assert raw.backup_status == BackupStatus.FAILED and "interrupted" in raw.s3_backup_details
    assert "next attempt resumes" in raw.s3_backup_details and raw.s3_lease_owner is None
    (entry,) = raw.s3_uploads
    assert s3_client.list_parts(Bucket=BUCKET, Key="o1.raw", UploadId=entry["upload_id"])  # kept
    monkeypatch.setattr(ProgressReporter, "add", real_add)
    assert operator("o1.raw").execute(context={})["bytes_uploaded"] < 4 * PART


def test_an_execution_timeout_is_recorded_not_left_in_progress(
    aws_conn, project_bucket, stage, monkeypatch
) -> None:
    """Defect 4: ``AirflowTaskTimeout`` is a BaseException; it must still end as a true FAILED record."""
    from airflow.providers.common.compat.sdk import AirflowTaskTimeout

    stage("p1.raw", {"p1.raw": 2 * PART})

    def time_out(self, count: int) -> None:
        raise AirflowTaskTimeout("Timeout, PID: 1")

    monkeypatch.setattr(ProgressReporter, "add", time_out)
    with pytest.raises(AirflowTaskTimeout):
        operator("p1.raw").execute(context={})
    raw = reload("p1.raw")
    assert raw.backup_status == BackupStatus.FAILED
    assert "AirflowTaskTimeout: interrupted" in raw.s3_backup_details and raw.s3_lease_owner is None


def test_storage_class_is_set_on_every_object(aws_conn, s3_client, project_bucket, stage, task_log) -> None:
    """Raw files are written once and read rarely: every object (single PUT and multipart) gets the class."""
    stage("sc.d", {"sc.d/a": 10, "sc.d/b": PART + 1})
    operator("sc.d", storage_class="STANDARD_IA").execute(context={})
    for key in ("sc.d/a", "sc.d/b"):
        assert s3_client.head_object(Bucket=BUCKET, Key=key)["StorageClass"] == "STANDARD_IA"
    assert "storage_class=STANDARD_IA" in task_log()
    # Archived objects still answer HEAD: a re-run and the sensor need nothing else.
    assert operator("sc.d", storage_class="STANDARD_IA").execute(context={})["bytes_uploaded"] == 0


def test_auto_create_buckets_from_their_yaml(aws_conn, s3_client, stage, tmp_path) -> None:
    stage("ac.raw", {"ac.raw": 10}, project_id="yamlcreated")
    settings = tmp_path / "alphakraken.yaml"
    settings.write_text(
        "backup:\n  backup_type: s3\n  s3:\n    bucket_prefix: kraken-lab\n    auto_create_buckets: true\n"
    )
    operator("ac.raw", bucket_prefix=None, settings_path=str(settings)).execute(context={})
    assert s3_client.get_bucket_versioning(Bucket="kraken-lab-yamlcreated")["Status"] == "Enabled"


def test_a_failure_to_record_the_failure_never_hides_the_original_error(aws_conn, stage, monkeypatch) -> None:
    """Defect 9: MongoDB failing while FAILED is written must not replace "the bucket does not exist"."""
    from airflow_provider_kraken_s3.core.errors import MongoUnavailableError
    from airflow_provider_kraken_s3.records import store

    stage("mf.raw", {"mf.raw": 10}, project_id="nobucket")

    def mongo_down(*args, **kwargs):
        raise MongoUnavailableError("MongoDB unavailable while marking the upload failed")

    monkeypatch.setattr(store, "mark_failed", mongo_down)
    with pytest.raises(AirflowFailException, match="does not exist"):
        operator("mf.raw").execute(context={})
