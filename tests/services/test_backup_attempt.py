"""One backup attempt's order of work: what it reads under its lease, and what still runs when it records.

The real operator against moto server and mongomock; the interruption from outside is delivered the way
Airflow's ``execution_timeout`` delivers it: a signal whose handler raises in the task's main thread.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowTaskTimeout

from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.transfer.progress import ProgressReporter
from tests.staging import stage_raw_file

PART = 5 * MIB
BUCKET = "kraken-lab-p1234"


def operator(raw_file_id: str) -> RawFileS3BackupOperator:
    return RawFileS3BackupOperator(
        task_id="upload_to_s3", raw_file_id=raw_file_id, bucket_prefix="kraken-lab", part_size=PART
    )


def test_the_record_is_read_under_the_lease(
    aws_conn, project_bucket, kraken_mongo, tmp_path: Path, monkeypatch
) -> None:
    """Defect 11c: read before the claim, the record may be changed by the attempt that still held it."""
    stage_raw_file(tmp_path / "backup", "r.raw", {"r.raw": 10}, project_id="P1234")
    holders: list[str | None] = []
    real_read = store.get_raw_file

    def read(raw_file_id: str) -> RawFile:
        holders.append(RawFile._get_collection().find_one({"_id": raw_file_id}).get("s3_lease_owner"))
        return real_read(raw_file_id)

    monkeypatch.setattr(store, "get_raw_file", read)
    assert operator("r.raw").execute(context={})["status"] == BackupStatus.DONE
    assert holders and holders[0] is not None and holders[0].startswith("upload_to_s3/")


def test_a_timeout_during_a_set_upload_stops_every_file_before_the_failure_is_recorded(
    aws_conn, project_bucket, kraken_mongo, tmp_path: Path, monkeypatch
) -> None:
    """Defect 11b: no file thread may still be uploading (and writing the record) once FAILED is written."""
    sizes = {"t.d/a": 3 * PART, "t.d/b": 3 * PART, "t.d/c": 3 * PART}
    stage_raw_file(tmp_path / "backup", "t.d", sizes, project_id="P1234")
    main = threading.main_thread().ident
    real_add = ProgressReporter.add

    fired = threading.Lock()

    def time_out_after_the_first_part(self, count: int) -> None:
        real_add(self, count)
        if fired.acquire(blocking=False):  # once: Airflow's timeout is SIGALRM, raised in the main thread
            signal.pthread_kill(main, signal.SIGALRM)

    def raise_timeout(signum, frame) -> None:
        raise AirflowTaskTimeout("Timeout, PID: test")

    still_running: list[list[str]] = []
    real_mark_failed = store.mark_failed

    def mark_failed(*args, **kwargs) -> None:
        still_running.append([t.name for t in threading.enumerate() if t.name.startswith("kraken-file")])
        real_mark_failed(*args, **kwargs)

    monkeypatch.setattr(ProgressReporter, "add", time_out_after_the_first_part)
    monkeypatch.setattr(store, "mark_failed", mark_failed)
    previous = signal.signal(signal.SIGALRM, raise_timeout)
    try:
        with pytest.raises(AirflowTaskTimeout):
            operator("t.d").execute(context={})
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert still_running == [[]]
    raw = RawFile.objects.get(id="t.d")
    assert raw.backup_status == BackupStatus.FAILED and "interrupted" in raw.s3_backup_details
    assert raw.s3_lease_owner is None and raw.s3_uploads  # kept for the next attempt
