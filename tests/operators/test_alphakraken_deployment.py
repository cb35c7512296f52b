"""RawFileS3BackupOperator in a deployment shaped like alphakraken's (tests/alphakraken_site.py): cluster paths
read through the worker's mount, skipped copies, records without a project, their YAML's defaults, and their
alert seeing our writes. moto server over HTTP, mongomock behind a real Airflow connection."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from airflow_provider_kraken_s3.records.models import BackupStatus
from tests.alphakraken_site import (
    CLUSTER_ROOT,
    recent_upload_failures,
    settings_yaml,
    their_acquisition,
    their_skipped_copy,
)

PREFIX = "kraken-site"
BUCKET = "kraken-site-p1234"


@pytest.fixture
def site(tmp_path: Path, kraken_mongo, aws_conn) -> dict:
    """The worker's mount of the backup pool and their YAML pointing at the cluster's path of it."""
    worker_root = tmp_path / "mounts" / "backup"
    worker_root.mkdir(parents=True)
    settings = tmp_path / "alphakraken.production.yaml"
    settings.write_text(settings_yaml(worker_root, bucket_prefix=PREFIX))
    return {"worker_root": worker_root, "settings": settings}


def operator(raw_file_id: str, settings: Path, **kwargs) -> RawFileS3BackupOperator:
    return RawFileS3BackupOperator(
        task_id="upload_to_s3", raw_file_id=raw_file_id, settings_path=str(settings), **kwargs
    )


def stored(kraken_db, raw_file_id: str) -> dict:
    return kraken_db.raw_file.find_one({"_id": raw_file_id})


def test_cluster_paths_are_read_under_the_worker_mount(site, s3_client, kraken_db, task_log) -> None:
    s3_client.create_bucket(Bucket=BUCKET)
    acquired = their_acquisition(site["worker_root"], "s.d", {"s.d/analysis.tdf": 3000, "s.d/m/x.method": 10})
    assert acquired.cluster_path == f"{CLUSTER_ROOT}/astral1/2026_11" and not Path(CLUSTER_ROOT).exists()
    before = stored(kraken_db, "s.d")

    result = operator("s.d", site["settings"]).execute(context={})

    after = stored(kraken_db, "s.d")
    assert result["status"] == after["backup_status"] == BackupStatus.DONE
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == ["s.d/analysis.tdf", "s.d/m/x.method"]
    assert after["backup_base_path"] == acquired.cluster_path  # their record, untouched
    assert after["file_info"] == acquired.file_info  # their inventory, untouched (ETags precomputed)
    assert after["updated_at_"] > before["updated_at_"].replace(tzinfo=None)
    log = task_log()
    assert f"{CLUSTER_ROOT} (locations.backup.absolute_path in settings file" in log
    assert f"is read as {site['worker_root']} on this worker" in log


def test_the_worker_root_can_be_set_on_the_operator(site, s3_client, tmp_path) -> None:
    s3_client.create_bucket(Bucket=BUCKET)
    elsewhere = tmp_path / "other-mount"
    their_acquisition(elsewhere, "o.raw", {"o.raw": 100})
    operator("o.raw", site["settings"], worker_backup_path=str(elsewhere)).execute(context={})
    assert s3_client.head_object(Bucket=BUCKET, Key="o.raw")["ContentLength"] == 100


def test_a_missing_file_names_both_paths_and_the_setting_and_their_alert_sees_it(
    site, s3_client, kraken_db, tmp_path
) -> None:
    s3_client.create_bucket(Bucket=BUCKET)
    acquired = their_acquisition(tmp_path / "not-the-mount", "m.raw", {"m.raw": 100})
    assert recent_upload_failures() == []

    with pytest.raises(AirflowFailException) as failed:
        operator("m.raw", site["settings"]).execute(context={})

    message = str(failed.value)
    mapped = f"{site['worker_root']}/astral1/2026_11"
    assert f"{mapped}/m.raw (inventory entry 'm.raw') does not exist" in message
    assert f"backup_base_path {acquired.cluster_path!r} recorded, read as {mapped!r}" in message
    assert "set worker_backup_path= (operator) or backup.worker_backup_path (YAML)" in message
    record = stored(kraken_db, "m.raw")
    assert record["backup_status"] == BackupStatus.FAILED and mapped in record["s3_backup_details"]
    assert recent_upload_failures() == ["m.raw"]  # their S3UploadFailureAlert's query finds our failure


def test_a_path_outside_the_cluster_root_is_refused_naming_both(site, s3_client, kraken_db) -> None:
    s3_client.create_bucket(Bucket=BUCKET)
    their_acquisition(site["worker_root"], "x.raw", {"x.raw": 10})
    kraken_db.raw_file.update_one({"_id": "x.raw"}, {"$set": {"backup_base_path": "/fs/pool-2/elsewhere"}})
    with pytest.raises(AirflowFailException) as failed:
        operator("x.raw", site["settings"]).execute(context={})
    assert "backup_base_path '/fs/pool-2/elsewhere' is not inside '/fs/pool-1/backup'" in str(failed.value)
    assert f"(onto '{site['worker_root']}')" in str(failed.value)
    assert "x.raw" not in str(s3_client.list_objects_v2(Bucket=BUCKET).get("Contents", []))


def test_a_skipped_copy_ends_quietly_and_writes_nothing(site, kraken_db, task_log) -> None:
    their_skipped_copy("k.raw")
    before = stored(kraken_db, "k.raw")
    with pytest.raises(
        AirflowSkipException, match="backup_status is 'skipped' and backup_base_path is empty"
    ):
        operator("k.raw", site["settings"]).execute(context={})
    assert stored(kraken_db, "k.raw") == before
    log = task_log()
    assert "nothing to back up for k.raw" in log and "SKIP_COPYING" in log


def test_no_project_is_the_fallback_project(site, s3_client, kraken_db) -> None:
    """Records from before their 2026 migration hold ``project_id: null``: their model reads ``_FALLBACK``."""
    created = datetime(2024, 2, 7, 8, 0, tzinfo=timezone.utc)
    their_acquisition(site["worker_root"], "n.raw", {"n.raw": 50}, project_id=None, created_at=created)
    operator("n.raw", site["settings"], create_bucket_if_missing=True).execute(context={})
    bucket = f"{PREFIX}--fallback"
    assert s3_client.head_object(Bucket=bucket, Key="astral1/2024_02/n.raw")["ContentLength"] == 50
    record = stored(kraken_db, "n.raw")
    assert record["s3_upload_path"] == f"s3://{bucket}/astral1/2024_02/" and record["project_id"] is None
    tags = {t["Key"]: t["Value"] for t in s3_client.get_bucket_tagging(Bucket=bucket)["TagSet"]}
    assert tags == {
        "ManagedBy": "alphakraken",
        "project_id": "_FALLBACK",
        "created_by": "airflow-provider-kraken-s3",
    }
    rules = s3_client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert rules[0]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}


def test_their_yaml_without_backup_type_is_local(site, tmp_path, kraken_db, task_log) -> None:
    settings = tmp_path / "no-type.yaml"
    settings.write_text(settings_yaml(site["worker_root"], bucket_prefix=PREFIX, backup_type=None))
    their_acquisition(site["worker_root"], "l.raw", {"l.raw": 10})
    before = stored(kraken_db, "l.raw")
    with pytest.raises(AirflowSkipException, match="which alphakraken reads as 'local'"):
        operator("l.raw", settings).execute(context={})
    assert stored(kraken_db, "l.raw") == before
    assert f"backup.backup_type is not set in settings file {str(settings)!r}" in task_log()
    # An explicit argument still wins.
    assert operator("l.raw", settings, backup_type="s3", create_bucket_if_missing=True).execute(context={})[
        "status"
    ] == (BackupStatus.DONE)


def test_a_legacy_entry_is_uploaded_in_their_100_mib_parts(site, s3_client, kraken_db) -> None:
    s3_client.create_bucket(Bucket=BUCKET)
    acquired = their_acquisition(site["worker_root"], "g.raw", {"g.raw": 1000}, legacy=True)
    operator("g.raw", site["settings"]).execute(context={})
    etag = s3_client.head_object(Bucket=BUCKET, Key="g.raw")["ETag"].strip('"')
    assert etag == acquired.file_info["g.raw"][1]
    assert stored(kraken_db, "g.raw")["file_info"]["g.raw"] == [1000, etag, f"{etag}__100"]
