"""The example DAGs end to end (``airflow dags test`` subprocesses) in a deployment shaped like alphakraken's.

Their YAML (``locations.backup.absolute_path`` = the cluster's path, their ``backup`` section), the files
under another folder (the worker's mount, named by ``backup.worker_backup_path``), records inserted the way
their acquisition handler leaves them (tests/alphakraken_site.py), one of them from their ``SKIP_COPYING``.
Then: ``s3_uploader`` (the drop-in for their DAG) per raw file, ``verified_cleanup`` on the instrument copies,
``backup_audit`` with deep verification. MongoDB is handed from run to run (seed → dump → seed); S3 is one
moto server. ``updated_at_`` must move on every write, as their alerts expect.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.alphakraken_site import CLUSTER_ROOT, settings_yaml, their_acquisition, their_skipped_copy
from tests.conftest_mongo import set_record
from tests.dag_runner import load_mongo_dump, mongo_snapshot, run_dag, task_states

pytestmark = pytest.mark.slow  # five full DAG runs, each in an Airflow subprocess

PREFIX = "kraken-dag-site"  # its own buckets: the operator tests of this site use kraken-site-*
BUCKET = "kraken-dag-site-p1234"
FALLBACK_BUCKET = "kraken-dag-site--fallback"


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("alphakraken-site-home")


def records(dump: Path) -> dict[str, dict]:
    [database] = load_mongo_dump(dump).values()
    return {doc["_id"]: doc for doc in database["raw_file"]}


def _output(done) -> str:
    return (done.stdout + done.stderr)[-6000:]


@pytest.mark.timeout(1800)  # five DAG runs, each its own Airflow process (and one database migration)
def test_their_deployment_backs_up_verifies_cleans_and_audits(
    tmp_path, airflow_home, aws_conn, s3_client, kraken_db
) -> None:
    s3_client.create_bucket(Bucket=BUCKET)
    s3_client.create_bucket(Bucket=FALLBACK_BUCKET)
    worker_root = tmp_path / "mounts" / "backup"
    settings = tmp_path / "alphakraken.production.yaml"
    settings.write_text(settings_yaml(worker_root, bucket_prefix=PREFIX))
    env = {"KRAKEN_SETTINGS_PATH": str(settings)}
    created = datetime.now(timezone.utc) - timedelta(days=1)
    bruker = their_acquisition(
        worker_root, "s.d", {"s.d/analysis.tdf": 3000, "s.d/analysis.tdf_bin": 70_000}, created_at=created
    )
    # From before their 2026 migration: no project (the fallback project) and a legacy [size, md5] inventory.
    sciex = their_acquisition(
        worker_root,
        "n.wiff",
        {"n.wiff": 100, "n.wiff.scan": 2000},
        project_id=None,
        legacy=True,
        created_at=created,
    )
    their_skipped_copy("k.raw", created_at=created)
    # Backed up by their own uploader before the switch: objects in S3, no s3_bucket, no manifest.
    thermo = their_acquisition(worker_root, "t.raw", {"t.raw": 5000}, created_at=created)
    for relative in thermo.file_info:
        s3_client.put_object(Bucket=BUCKET, Key=relative, Body=(thermo.worker_path / relative).read_bytes())
    set_record("t.raw", backup_status="upload_done", s3_upload_path=f"s3://{BUCKET}")
    instrument = tmp_path / "instrument" / "astral1" / "Backup"
    for acquired in (bruker, sciex, thermo):
        for relative in acquired.file_info:
            (instrument / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(acquired.worker_path / relative, instrument / relative)
    seed = mongo_snapshot(kraken_db)
    seeded = {doc["_id"]: doc for doc in seed[kraken_db.name]["raw_file"]}

    # 1. Their acquisition_handler triggers s3_uploader once per raw file, with their conf.
    for raw_file_id, acquired_path, state in (
        ("s.d", bruker.worker_path, "success"),
        ("n.wiff", sciex.worker_path, "success"),
        ("k.raw", "", "skipped"),
    ):
        dump = tmp_path / f"after-upload-{raw_file_id}.json"
        conf = {"raw_file_id": raw_file_id, "internal_target_folder_path": str(acquired_path)}
        done = run_dag(
            "s3_uploader", conf, env=env, airflow_home=airflow_home, mongo_seed=seed, mongo_dump=dump
        )
        assert task_states(airflow_home, "s3_uploader") == {("upload_to_s3", -1): state}, _output(done)
        seed = load_mongo_dump(dump)
    uploaded = records(dump)
    assert "nothing to back up" in done.stdout + done.stderr and uploaded["k.raw"] == seeded["k.raw"]
    for raw_file_id in ("s.d", "n.wiff"):
        assert uploaded[raw_file_id]["backup_status"] == "upload_done"
        assert uploaded[raw_file_id]["backup_base_path"].startswith(CLUSTER_ROOT)  # their record, their path
        assert uploaded[raw_file_id]["updated_at_"] > seeded[raw_file_id]["updated_at_"]
    assert sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET)["Contents"]) == sorted(
        [*bruker.file_info, *thermo.file_info]
    )
    month = f"{created:%Y_%m}"
    assert sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=FALLBACK_BUCKET)["Contents"]) == [
        f"astral1/{month}/n.wiff/n.wiff",
        f"astral1/{month}/n.wiff/n.wiff.scan",
    ]
    assert uploaded["n.wiff"]["s3_upload_path"] == f"s3://{FALLBACK_BUCKET}/astral1/{month}/n.wiff/"
    assert uploaded["s.d"]["file_info"] == bruker.file_info  # their precomputed ETags, untouched
    assert all(entry[2].endswith("__100") for entry in uploaded["n.wiff"]["file_info"].values())

    # 2. verified_cleanup deletes the instrument copies once the sensor has verified the backups.
    dump = tmp_path / "after-cleanup.json"
    conf = {
        "raw_file_ids": ["s.d", "n.wiff", "t.raw"],
        "dry_run": False,
        "instrument_base_path": str(instrument),
    }
    done = run_dag(
        "verified_cleanup", conf, env=env, airflow_home=airflow_home, mongo_seed=seed, mongo_dump=dump
    )
    states = task_states(airflow_home, "verified_cleanup")
    assert set(states.values()) == {"success"} and len(states) == 7, _output(done)
    assert not any(path.is_file() for path in instrument.rglob("*"))
    assert all((bruker.worker_path / relative).is_file() for relative in bruker.file_info)  # pool untouched
    assert records(dump) == uploaded  # the sensor only reads
    seed = load_mongo_dump(dump)

    # 3. backup_audit: reconcile, audit, deep verification; the fixity write moves updated_at_ too.
    dump = tmp_path / "after-audit.json"
    done = run_dag(
        "backup_audit",
        {"deep_verify": "always"},
        env=env,
        airflow_home=airflow_home,
        mongo_seed=seed,
        mongo_dump=dump,
    )
    assert set(task_states(airflow_home, "backup_audit").values()) == {"success"}, _output(done)
    audited = records(dump)
    for raw_file_id in ("s.d", "n.wiff", "t.raw"):
        assert audited[raw_file_id]["s3_verify_outcome"].startswith("ok"), audited[raw_file_id]
        assert audited[raw_file_id]["updated_at_"] > uploaded[raw_file_id]["updated_at_"]
    assert audited["k.raw"] == seeded["k.raw"]
