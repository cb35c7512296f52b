"""Defect 4 under a real ``execution_timeout``: the task runs in its own process under ``airflow dags test``.

The S3 endpoint is a FaultProxy that holds part 2 of the upload until the test ends, so the upload is still
running when Airflow's timeout fires (``AirflowTaskTimeout``, a BaseException on 2.11 and 3.x). The RawFile
(mongomock, seeded into and dumped out of the DAG's process) must then say FAILED, "will resume", with the
multipart upload kept and the lease given back — never ``upload_in_progress`` forever.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.conftest import aws_connection_json
from tests.dag_runner import load_mongo_dump, mongo_snapshot, run_dag
from tests.faults import FaultProxy, hold
from tests.sensors.test_backup_verified import PART
from tests.staging import stage_with_bucket

pytestmark = pytest.mark.slow  # airflow dags test in a subprocess

DAGS = Path(__file__).resolve().parents[1] / "dags"


def test_execution_timeout_ends_as_a_true_resumable_failure(
    moto_server, s3_client, tmp_path, kraken_mongo, kraken_db, aws_conn
) -> None:
    staged = stage_with_bucket(tmp_path, s3_client, "slow.raw", {"slow.raw": 3 * PART})
    never = threading.Event()
    proxy = FaultProxy(moto_server.port)
    proxy.add(hold("UploadPart", never, part_number=2, timeout=45))
    dump = tmp_path / "after.json"
    seen: dict[str, float] = {}

    def note(line: str) -> None:  # when the upload started, and when the failure was recorded
        for marker in ("multipart upload started", "backup of slow.raw failed"):
            if marker in line:
                seen.setdefault(marker, time.monotonic())

    with proxy.running():
        env = {"AIRFLOW_CONN_AWS_SLOW": aws_connection_json(proxy.url)}
        conf = {"raw_file_id": "slow.raw", "bucket_prefix": staged.bucket.rsplit("-", 1)[0]}
        done = run_dag(
            "upload_with_timeout",
            conf,
            env=env,
            dags_folder=DAGS,
            mongo_seed=mongo_snapshot(kraken_db),
            mongo_dump=dump,
            timeout=300,
            on_line=note,
        )
        never.set()
    output = done.stdout + (done.stderr or "")
    # The held part is still in flight: the task ended at its deadline (8 s), not when the network let go
    # (the proxy holds it 45 s).
    ended = seen["backup of slow.raw failed"] - seen["multipart upload started"]
    assert ended < 30, output[-3000:]
    assert "AirflowTaskTimeout" in output or "Timeout" in output, output[-3000:]
    (raw,) = [d for d in next(iter(load_mongo_dump(dump).values()))["raw_file"] if d["_id"] == "slow.raw"]
    assert raw["backup_status"] == "upload_failed", raw
    assert "interrupted" in raw["s3_backup_details"] and "resumes" in raw["s3_backup_details"]
    assert "s3_lease_owner" not in raw
    (entry,) = raw["s3_uploads"]
    parts = s3_client.list_parts(Bucket=staged.bucket, Key="slow.raw", UploadId=entry["upload_id"])
    assert 1 in [p["PartNumber"] for p in parts.get("Parts", [])]  # kept for the next attempt
