"""example_dags/verified_cleanup.py, and the sensor inside real DAG runs (``airflow dags test`` subprocess).

The RawFiles are staged and backed up in this process (mongomock + moto server), then handed to the DAG
run as a mongomock seed (see tests/dag_runner.py); S3 is the same moto server for both processes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.sensors.backup_verified import S3BackupVerifiedSensor
from tests.dag_runner import (
    EXAMPLE_DAGS,
    count_rows,
    load_mongo_dump,
    mongo_snapshot,
    run_dag,
    task_states,
    xcom_return_value,
)
from tests.sensors.test_backup_verified import PART, etag_of, run_backup
from tests.staging import stage_with_bucket

DAG_FILE = EXAMPLE_DAGS / "verified_cleanup.py"
SENSOR = "clean_up.verify_backup"
DELETE = "clean_up.delete_local_copy"


def load_dag_module():
    spec = importlib.util.spec_from_file_location("verified_cleanup_example", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dag_module():
    return load_dag_module()


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    """One migrated metadata database for every DAG run of this session (per Python interpreter)."""
    return tmp_path_factory.mktemp("dag-runs-home")


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _output(done) -> str:
    return done.stdout + done.stderr


# ------------------------------------------------------------------ the DAG file itself


def test_dag_structure(dag_module) -> None:
    dag = dag_module.dag
    assert dag.dag_id == "verified_cleanup"
    assert set(dag.task_dict) == {"raw_file_ids_to_clean", SENSOR, DELETE}
    sensor = dag.task_dict[SENSOR]
    assert isinstance(sensor, S3BackupVerifiedSensor) or sensor.operator_class is S3BackupVerifiedSensor
    assert dag.task_dict[DELETE].upstream_task_ids == {SENSOR}
    assert dag.params["dry_run"] is True and dag.params["raw_file_ids"] == []


def _verification(objects, bucket="b", raw_file_id="x.d"):
    return {
        "bucket": bucket,
        "raw_file_id": raw_file_id,
        "objects": objects,
        "verified_at": "2024-01-01T00:00:00+00:00",
    }


def test_plan_local_deletion(dag_module, tmp_path) -> None:
    base = tmp_path / "instrument"
    (base / "x.d").mkdir(parents=True)
    (base / "x.d" / "a").write_bytes(b"aaaa")
    plan = dag_module.plan_local_deletion
    files, gone, problems = plan(
        str(base),
        _verification(
            [
                {"key": "x.d/a", "etag": "e", "size": 4, "path": "x.d/a"},
                {"key": "x.d/b", "etag": "e", "size": 1, "path": "x.d/b"},
            ]
        ),
    )
    assert files == [(base / "x.d" / "a", 4)] and gone == [str(base / "x.d" / "b")] and problems == []


def test_plan_local_deletion_refuses_anything_doubtful(dag_module, tmp_path) -> None:
    base, outside = tmp_path / "instrument", tmp_path / "elsewhere"
    base.mkdir()
    outside.mkdir()
    (outside / "precious").write_bytes(b"keep")
    (base / "link.raw").symlink_to(outside / "precious")
    (base / "changed.raw").write_bytes(b"12345")
    (base / "dir.d").mkdir()
    objects = [
        {"key": "../elsewhere/precious", "etag": "e", "size": 4, "path": "../elsewhere/precious"},
        {"key": "/abs.raw", "etag": "e", "size": 4, "path": "/abs.raw"},
        {"key": "link.raw", "etag": "e", "size": 4, "path": "link.raw"},
        {"key": "changed.raw", "etag": "e", "size": 4, "path": "changed.raw"},
        {"key": "dir.d", "etag": "e", "size": 0, "path": "dir.d"},
        {"key": "explicit-key", "etag": "e", "size": 4},
    ]
    files, _, problems = dag_module.plan_local_deletion(str(base), _verification(objects))
    assert files == []
    text = "\n".join(problems)
    assert "refusing '../elsewhere/precious'" in text and "refusing '/abs.raw'" in text
    assert f"resolves to {outside / 'precious'}" in text
    assert "changed.raw: 5 bytes locally but the verified object 'changed.raw' has 4 bytes" in text
    assert "dir.d: not a regular file" in text and "'explicit-key' has no file_info path" in text
    assert dag_module.plan_local_deletion(str(base), _verification([]))[2] == [
        "the verification lists no objects"
    ]
    assert (outside / "precious").read_bytes() == b"keep"


# ------------------------------------------------------------------ full DAG runs (subprocess)


@pytest.fixture
def backed_up(tmp_path, s3_client, aws_conn, kraken_mongo, kraken_db):
    """Two raw files backed up for real: ``ok.d`` (verified) and ``bad.raw`` (tampered in S3 after DONE)."""
    ok = stage_with_bucket(
        tmp_path, s3_client, "ok.d", {"ok.d/analysis.tdf": 1500, "ok.d/analysis.tdf_bin": PART + 5}
    )
    bad = stage_with_bucket(tmp_path, s3_client, "bad.raw", {"bad.raw": 2048})
    run_backup("ok.d")
    run_backup("bad.raw")
    s3_client.put_object(Bucket=bad.bucket, Key="bad.raw", Body=b"overwritten by mistake")
    return ok, bad, mongo_snapshot(kraken_db)


@pytest.mark.slow
def test_cleanup_deletes_only_verified_files(backed_up, airflow_home, tmp_path, s3_client) -> None:
    ok, bad, seed = backed_up
    instrument = ok.instrument_dir
    backup_before = files_under(ok.backup_dir)
    ok_etags = {key: etag_of(s3_client, ok.bucket, key) for key in ok.sizes}
    dump = tmp_path / "after.json"
    conf = {"raw_file_ids": ["ok.d", "bad.raw"], "dry_run": False, "instrument_base_path": str(instrument)}
    done = run_dag("verified_cleanup", conf, airflow_home=airflow_home, mongo_seed=seed, mongo_dump=dump)
    output = _output(done)

    states = task_states(airflow_home, "verified_cleanup")
    assert states[("raw_file_ids_to_clean", -1)] == "success", output[-4000:]
    assert states[(SENSOR, 0)] == "success" and states[(DELETE, 0)] == "success", output[-4000:]
    assert states[(SENSOR, 1)] == "failed" and states[(DELETE, 1)] == "upstream_failed"

    assert files_under(instrument) == {"bad.raw": bad.file_data("bad.raw")}  # only the verified one went
    assert not (instrument / "ok.d").exists() and instrument.is_dir()  # emptied folder removed, base kept
    assert files_under(ok.backup_dir) == backup_before  # the backup pool is never touched
    assert "record says DONE but S3 disagrees: raw file 'bad.raw'" in output
    for relative, size in ok.sizes.items():
        assert f"deleting {instrument / relative} ({size} bytes)" in output

    summary = xcom_return_value(airflow_home, "verified_cleanup", DELETE, map_index=0)
    assert summary == {
        "raw_file_id": "ok.d",
        "dry_run": False,
        "files": [str(instrument / relative) for relative in sorted(ok.sizes)],
        "bytes": sum(ok.sizes.values()),
        "already_gone": [],
    }
    verified = xcom_return_value(airflow_home, "verified_cleanup", SENSOR, map_index=0)
    assert {o["key"]: o["etag"] for o in verified["objects"]} == ok_etags
    assert load_mongo_dump(dump) == seed  # the DAG never modifies a RawFile


@pytest.mark.slow
def test_cleanup_dry_run_deletes_nothing(backed_up, airflow_home, tmp_path) -> None:
    ok, _, seed = backed_up
    before = files_under(ok.instrument_dir)
    conf = {
        "raw_file_ids": ["ok.d"],
        "instrument_base_path": str(ok.instrument_dir),
    }  # dry_run defaults to True
    done = run_dag("verified_cleanup", conf, airflow_home=airflow_home, mongo_seed=seed)
    output = _output(done)
    states = task_states(airflow_home, "verified_cleanup")
    assert states[(SENSOR, 0)] == "success" and states[(DELETE, 0)] == "success", output[-4000:]
    assert files_under(ok.instrument_dir) == before
    for relative, size in ok.sizes.items():
        assert f"DRY RUN: would delete {ok.instrument_dir / relative} ({size} bytes)" in output
    summary = xcom_return_value(airflow_home, "verified_cleanup", DELETE, map_index=0)
    assert summary["dry_run"] is True and summary["bytes"] == sum(ok.sizes.values())


# ------------------------------------------------------------------ the sensor waiting inside a DAG run

PROBE_DAGS = """
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kraken_s3.sensors.backup_verified import S3BackupVerifiedSensor

for dag_id, key, extra in (
    ("kraken_probe_reschedule", "late/obj", {{"mode": "reschedule", "poke_interval": 1}}),
    ("kraken_probe_deferrable", "deferred/obj", {{"deferrable": True, "poke_interval": 0.5}}),
):
    with DAG(dag_id=dag_id, schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
        S3BackupVerifiedSensor(
            task_id="verify",
            bucket="{{{{ params.bucket }}}}",
            keys=[key],
            expected_etags={{key: {etag!r}}},
            timeout=300,
            params={{"bucket": {bucket!r}}},
            **extra,
        )
"""


@pytest.fixture
def probe_dags(tmp_path, bucket):
    """Two one-sensor DAGs (explicit keys: S3 is shared with the DAG run, so the test can finish the wait)."""
    folder = tmp_path / "probe_dags"
    folder.mkdir()
    data = b"arrives later"
    (folder / "probes.py").write_text(PROBE_DAGS.format(bucket=bucket, etag=hashlib.md5(data).hexdigest()))
    return folder, data


def _upload_when(
    condition, s3_client, bucket: str, key: str, data: bytes, timeout: float = 240
) -> threading.Thread:
    """Upload ``key`` once ``condition()`` holds (the sensor has demonstrably started waiting)."""
    seen: dict[str, bool] = {}

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                seen["waited"] = True
                s3_client.put_object(Bucket=bucket, Key=key, Body=data)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=watch, daemon=True)
    thread.seen = seen  # type: ignore[attr-defined]
    thread.start()
    return thread


@pytest.mark.slow
def test_reschedule_mode_in_a_dag_run(probe_dags, airflow_home, aws_conn, s3_client, bucket) -> None:
    folder, data = probe_dags
    before = count_rows(airflow_home, "task_reschedule")
    watcher = _upload_when(
        lambda: count_rows(airflow_home, "task_reschedule") > before, s3_client, bucket, "late/obj", data
    )
    done = run_dag("kraken_probe_reschedule", {}, airflow_home=airflow_home, dags_folder=folder)
    watcher.join(5)
    output = _output(done)
    assert watcher.seen.get("waited"), output[-4000:]  # it was rescheduled at least once before the upload
    assert task_states(airflow_home, "kraken_probe_reschedule") == {("verify", -1): "success"}, output[-4000:]
    value = xcom_return_value(airflow_home, "kraken_probe_reschedule", "verify")
    assert value["objects"] == [{"key": "late/obj", "etag": hashlib.md5(data).hexdigest(), "size": len(data)}]


@pytest.mark.slow
def test_deferrable_in_a_dag_run_runs_the_trigger(
    probe_dags, airflow_home, aws_conn, s3_client, bucket
) -> None:
    """``airflow dags test`` runs the trigger inline (both versions); the object arrives while it waits."""
    folder, data = probe_dags
    deferred = threading.Event()

    def on_line(line: str) -> None:
        if "[DAG TEST] running trigger in line" in line and not deferred.is_set():
            deferred.set()
            threading.Timer(
                1.5, s3_client.put_object, kwargs={"Bucket": bucket, "Key": "deferred/obj", "Body": data}
            ).start()

    done = run_dag(
        "kraken_probe_deferrable",
        {},
        airflow_home=airflow_home,
        dags_folder=folder,
        on_line=on_line,
        timeout=240,
    )
    output = _output(done)
    assert deferred.is_set(), output[-4000:]  # the task deferred, and the object was uploaded only then
    assert "not verified yet" in output or "waiting for" in output, output[-4000:]
    assert task_states(airflow_home, "kraken_probe_deferrable") == {("verify", -1): "success"}, output[-4000:]
    value = xcom_return_value(airflow_home, "kraken_probe_deferrable", "verify")
    assert value["bucket"] == bucket
    assert value["objects"] == [
        {"key": "deferred/obj", "etag": hashlib.md5(data).hexdigest(), "size": len(data)}
    ]


def test_dag_runner_is_importable_as_the_bootstrap_module() -> None:
    assert Path(sys.modules["tests.dag_runner"].__file__).name == "dag_runner.py"


@pytest.mark.slow
def test_force_local_deletes_without_asking_s3_and_says_so_loudly(backed_up, airflow_home, tmp_path) -> None:
    """alphakraken's ``purging_verification_type: force_local``: no sensor; even the file S3 lost goes."""
    ok, _, seed = backed_up
    settings = tmp_path / "alphakraken.yaml"
    settings.write_text(
        "backup:\n  backup_type: s3\n  purging_verification_type: force_local\n  s3: {bucket_prefix: x}\n"
    )
    conf = {
        "raw_file_ids": ["ok.d", "bad.raw"],
        "dry_run": False,
        "instrument_base_path": str(ok.instrument_dir),
    }
    done = run_dag(
        "verified_cleanup",
        conf,
        airflow_home=airflow_home,
        mongo_seed=seed,
        env={"KRAKEN_SETTINGS_PATH": str(settings)},
    )
    output = _output(done)
    assert "deleted WITHOUT checking their S3 backup" in output, output[-4000:]
    assert files_under(ok.instrument_dir) == {}  # both raw files' instrument copies are gone


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        (
            "backup:\n  backup_type: s3\n  purging_verification_type: local\n",
            "'local' but backup_type is 's3'",
        ),
        (
            "backup:\n  backup_type: local\n  purging_verification_type: local\n",
            "this DAG gates deletion on S3",
        ),
    ],
)
def test_local_purging_verification_is_refused(dag_module, tmp_path, yaml_text: str, fragment: str) -> None:
    settings = tmp_path / "alphakraken.yaml"
    settings.write_text(yaml_text)
    with pytest.raises(InvalidInputError, match=re.escape(fragment)):
        dag_module.purging_verification_type(str(settings))
    assert dag_module.purging_verification_type(None) == "s3"
