"""The acquisition_handler example DAG, run with ``airflow dags test`` (Airflow's CLI code, in this process so
the embedded MongoDB is shared) against moto server."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from kraken_standins.airflow_cli import airflow_dags_test

pytestmark = pytest.mark.slow  # full DAG runs (airflow dags test)

PROJECT = "P42"
PREFIX = "kraken-dag"
BUCKET = "kraken-dag-p42"


@pytest.fixture
def lab(tmp_path: Path, airflow_db, aws_conn, kraken_mongo) -> dict:
    instrument = tmp_path / "instrument"
    rng = random.Random(11)
    for relative, size in {
        "s.d/analysis.tdf": 3000,
        "s.d/analysis.tdf_bin": 7 * 2**20,
        "s.d/m/x.method": 10,
    }.items():
        (instrument / relative).parent.mkdir(parents=True, exist_ok=True)
        (instrument / relative).write_bytes(rng.randbytes(size))
    for name, size in {"w.wiff": 100, "w.wiff2": 200, "w.wiff.scan": 300}.items():
        (instrument / name).write_bytes(rng.randbytes(size))
    return {
        "project_id": PROJECT,
        "instrument_id": "tims1",
        "instrument_dir": str(instrument),
        "backup_dir": str(tmp_path / "backup"),
        "bucket_prefix": PREFIX,
        "part_size_mib": 5,
    }


def test_dag_backs_up_a_d_folder_and_processing_runs(lab, s3_client) -> None:
    s3_client.create_bucket(Bucket=BUCKET)
    airflow_dags_test("acquisition_handler", {**lab, "raw_file_id": "s.d"})
    raw = RawFile.objects.get(id="s.d")
    assert raw.backup_status == BackupStatus.DONE and raw.s3_backup_key == "s.d/"
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == ["s.d/analysis.tdf", "s.d/analysis.tdf_bin", "s.d/m/x.method"]
    big = Path(lab["instrument_dir"]) / "s.d/analysis.tdf_bin"
    assert raw.file_info["s.d/analysis.tdf_bin"][1] == hashlib.md5(big.read_bytes()).hexdigest()
    etag = s3_client.head_object(Bucket=BUCKET, Key="s.d/analysis.tdf_bin")["ETag"].strip('"')
    assert raw.file_info["s.d/analysis.tdf_bin"][2] == f"{etag}__5" and etag.endswith("-2")
    assert (Path(lab["backup_dir"]) / "tims1" / "s.d/analysis.tdf_bin").read_bytes() == big.read_bytes()
    assert (Path(lab["backup_dir"]) / "processing" / "s.d.started").exists()


def test_failing_upload_does_not_block_processing(lab, s3_client) -> None:
    # No bucket for the project: the upload fails, the processing branch still runs.
    with pytest.raises(SystemExit, match="DagRun failed"):
        airflow_dags_test("acquisition_handler", {**lab, "raw_file_id": "w.wiff", "bucket_prefix": "no-such"})
    raw = RawFile.objects.get(id="w.wiff")
    assert raw.backup_status == BackupStatus.FAILED and "does not exist" in raw.s3_backup_details
    assert (Path(lab["backup_dir"]) / "processing" / "w.wiff.started").exists()
    assert (Path(lab["backup_dir"]) / "tims1" / "w.wiff.scan").exists()


def test_local_backup_type_marks_the_copy_and_skips_the_upload(lab, s3_client) -> None:
    airflow_dags_test("acquisition_handler", {**lab, "raw_file_id": "w.wiff", "backup_type": "local"})
    raw = RawFile.objects.get(id="w.wiff")
    assert raw.backup_status == BackupStatus.COPYING_DONE and raw.s3_etag is None
    assert raw.backup_base_path == str(Path(lab["backup_dir"]) / "tims1")
