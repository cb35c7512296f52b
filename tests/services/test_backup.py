"""services/backup.py end to end, without Airflow: the real RawFileBackup against moto through the FaultProxy,
with the RawFile in mongomock. What is asserted is the record, the objects in S3 and the requests seen."""

from __future__ import annotations

import logging

import pytest

from airflow_provider_kraken_s3.core.errors import S3TransientError
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.core.settings import BackupSettings
from airflow_provider_kraken_s3.records.lease import Attempt
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.services.backup import RawFileBackup
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag
from tests.faults import respond

PART = 5 * MIB
LOG = logging.getLogger("kraken.test.backup")
WRITES = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")


def back_up(access, raw_file_id: str, **fields) -> RawFileBackup:
    settings = BackupSettings(backup_type="s3", bucket_prefix="kraken-lab", region_name=None, part_size=PART)
    return RawFileBackup(raw_file_id, settings, access, Attempt.new(f"test/{raw_file_id}"), LOG, **fields)


def record(raw_file_id: str) -> dict:
    return RawFile._get_collection().find_one({"_id": raw_file_id})


@pytest.fixture
def staged(stage, project_bucket):
    """``staged(raw_file_id, {path: size})`` → the backup folder, with the RawFile as alphakraken leaves it
    (the shared ``stage`` fixture, project P1234), and the project's bucket."""
    return stage


def test_a_first_backup_is_done_with_a_manifest_of_what_s3_holds(proxy, access, s3_client, staged) -> None:
    sizes = {"x.d/analysis.tdf_bin": 2 * PART + 3, "x.d/analysis.tdf": 4000, "x.d/meta/a.xml": 10}
    base = staged("x.d", sizes)
    outcome = back_up(access, "x.d", max_concurrency=3).run()
    assert outcome.status == BackupStatus.DONE and outcome.files == 3
    assert outcome.bytes == outcome.bytes_uploaded == sum(sizes.values()) and outcome.files_skipped == 0
    stored = record("x.d")
    assert stored["backup_status"] == BackupStatus.DONE and stored.get("s3_lease_owner") is None
    manifest = stored["s3_manifest"]
    assert manifest["bucket"] == outcome.bucket == "kraken-lab-p1234"
    assert {o["path"] for o in manifest["objects"]} == set(sizes)
    for item in manifest["objects"]:
        local = base / item["path"]
        head = s3_client.head_object(Bucket=outcome.bucket, Key=item["key"])
        assert item["etag"] == head["ETag"].strip('"') == compute_s3_etag(local, PART)
        assert item["size"] == head["ContentLength"] == local.stat().st_size
        assert (
            s3_client.get_object(Bucket=outcome.bucket, Key=item["key"])["Body"].read() == local.read_bytes()
        )
    assert not stored.get("s3_uploads")  # the multipart upload was completed and forgotten


def test_a_re_run_uploads_nothing_and_reads_nothing(proxy, access, s3_client, staged) -> None:
    staged("r.raw", {"r.raw": 2 * PART + 1})
    back_up(access, "r.raw").run()
    before = len(proxy.requests)
    again = back_up(access, "r.raw").run()
    seen = [r.operation for r in proxy.requests[before:]]
    assert again.status == BackupStatus.DONE and again.bytes_uploaded == 0
    assert not any(operation in WRITES for operation in seen) and "GetObject" not in seen
    assert record("r.raw")["backup_status"] == BackupStatus.DONE


def test_a_503_on_one_part_is_retried_and_the_backup_is_done(proxy, access, s3_client, staged) -> None:
    base = staged("s.raw", {"s.raw": 3 * PART})
    proxy.add(respond("UploadPart", 503, "SlowDown", part_number=2))
    outcome = back_up(access, "s.raw").run()
    assert outcome.status == BackupStatus.DONE and outcome.bytes_uploaded == 3 * PART
    assert [r.status for r in proxy.records("UploadPart", part_number=2)] == [503, 200]
    (item,) = record("s.raw")["s3_manifest"]["objects"]
    assert item["etag"] == compute_s3_etag(base / "s.raw", PART)
    assert (
        s3_client.get_object(Bucket=outcome.bucket, Key=item["key"])["Body"].read()
        == (base / "s.raw").read_bytes()
    )


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_a_lasting_failure_on_one_part_is_recorded_and_the_next_attempt_resumes(
    proxy, access, s3_client, staged
) -> None:
    staged("t.raw", {"t.raw": 3 * PART})
    lasting = proxy.add(respond("UploadPart", 503, "SlowDown", part_number=3, times=None))
    with pytest.raises(S3TransientError, match="SlowDown"):
        back_up(access, "t.raw", max_concurrency=1).run()
    failed = record("t.raw")
    assert failed["backup_status"] == BackupStatus.FAILED and "transient" in failed["s3_backup_details"]
    (upload,) = failed["s3_uploads"]  # kept, so the next attempt resumes it
    lasting.times = lasting.fired  # the store recovers
    before = len(proxy.requests)
    outcome = back_up(access, "t.raw").run()
    sent = [r.part_number for r in proxy.requests[before:] if r.operation == "UploadPart"]
    assert outcome.status == BackupStatus.DONE and sent == [3]
    assert [r.upload_id for r in proxy.requests[before:] if r.operation == "UploadPart"] == [
        upload["upload_id"]
    ]
    assert outcome.bytes_uploaded == PART
