"""acquisition_handler: alphakraken's per-acquisition chain with the verified S3 backup added.

    monitor_acquisition >> compute_checksum >> copy_raw_file >> [upload_to_s3, start_file_mover]
    start_file_mover >> decide_processing >> start_acquisition_processor

The upload runs beside the processing branch, never in front of it: a failed or slow upload does not hold
processing back (the design's chain had ``start_file_mover`` twice, a cycle; this is what it meant).
``copy_raw_file`` writes ``backup_status`` only with ``backup_type: local``; with ``s3`` the upload owns it.

The steps other than the upload are small stand-ins for alphakraken's, but they do the real work on real
files: the checksum step inventories every file (size, MD5 and the S3 ETag, from one read), the copy step
copies and verifies. Trigger with a conf such as::

    {"raw_file_id": "20240101_astral1_P1234_sample.raw", "project_id": "P1234", "instrument_id": "astral1",
     "instrument_dir": "/instruments/astral1/Data", "backup_dir": "/fs/pool/backup",
     "bucket_prefix": "mylab-alphakraken"}
"""

from __future__ import annotations

import hashlib
import os
import shutil
from datetime import timedelta
from pathlib import Path

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_kraken_s3.core.etag import format_precomputed_etag
from airflow_provider_kraken_s3.core.settings import DEFAULT_PART_SIZE
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.records.models import BackupStatus
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag_and_md5

PARAMS = {
    "raw_file_id": Param("", type="string", description="Raw file name, e.g. x.raw, x.d or x.wiff"),
    "project_id": Param("", type="string"),
    "instrument_id": Param("", type="string"),
    "instrument_dir": Param("", type="string", description="Folder the instrument writes to"),
    "backup_dir": Param(
        "", type="string", description="Local backup pool; files go to <backup_dir>/<instrument>"
    ),
    "bucket_prefix": Param("", type="string", description="Bucket = <prefix>-<project_id>"),
    "backup_type": Param("s3", enum=["s3", "local"]),
    "part_size_mib": Param(DEFAULT_PART_SIZE // 2**20, type="integer", minimum=5, maximum=5120),
}


def _files_of(instrument_dir: Path, raw_file_id: str) -> dict[str, Path]:
    """A raw file's files, by path relative to the instrument folder.

    ``x.d`` is a folder (every file inside it); ``x.wiff`` comes with siblings (``x.wiff2``, ``x.wiff.scan``):
    every file in the folder whose name starts with the id.
    """
    root = instrument_dir / raw_file_id
    if root.is_dir():
        found = {p.relative_to(instrument_dir).as_posix(): p for p in root.rglob("*") if p.is_file()}
    else:
        found = {
            p.name: p for p in instrument_dir.iterdir() if p.is_file() and p.name.startswith(raw_file_id)
        }
    if not found:
        raise FileNotFoundError(f"no files for raw file {raw_file_id!r} in {instrument_dir}")
    return dict(sorted(found.items()))


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(8 * 2**20):
            digest.update(block)
    return digest.hexdigest()


with DAG(
    dag_id="acquisition_handler",
    schedule=None,
    catchup=False,
    params=PARAMS,
    tags=["alphakraken", "s3-backup"],
    default_args={"retries": 0},
    doc_md=__doc__,
) as dag:

    @task
    def monitor_acquisition(params: dict | None = None) -> None:
        """Stand-in: wait for the acquisition to be complete, then register the RawFile."""
        files = _files_of(Path(params["instrument_dir"]), params["raw_file_id"])
        KrakenMongoHook().connect()
        store.register_raw_file(
            params["raw_file_id"],
            project_id=params["project_id"],
            instrument_id=params["instrument_id"],
            size=sum(p.stat().st_size for p in files.values()),
        )

    @task
    def compute_checksum(params: dict | None = None) -> dict[str, list]:
        """Inventory every file: size, MD5 and the S3 ETag for the configured part size, from one read."""
        part_size = params["part_size_mib"] * 2**20
        file_info = {}
        for relative, path in _files_of(Path(params["instrument_dir"]), params["raw_file_id"]).items():
            etag, md5 = compute_s3_etag_and_md5(path, part_size)
            file_info[relative] = [path.stat().st_size, md5, format_precomputed_etag(etag, part_size)]
        return file_info

    @task
    def copy_raw_file(file_info: dict[str, list], params: dict | None = None) -> None:
        """Copy to the local backup pool and verify each copy against the inventory."""
        source = Path(params["instrument_dir"])
        target = Path(params["backup_dir"]) / params["instrument_id"]
        for relative, (size, md5, *_) in file_info.items():
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / relative, destination)
            if destination.stat().st_size != size or _md5(destination) != md5:
                raise OSError(f"copy of {relative} to {destination} does not match the inventory")
        KrakenMongoHook().connect()
        store.record_local_copy(params["raw_file_id"], backup_base_path=str(target), file_info=file_info)
        if params["backup_type"] == "local":  # with "s3", backup_status belongs to upload_to_s3
            store.set_backup_status(params["raw_file_id"], BackupStatus.COPYING_DONE)

    upload_to_s3 = RawFileS3BackupOperator(
        task_id="upload_to_s3",
        raw_file_id="{{ params.raw_file_id }}",
        bucket_prefix="{{ params.bucket_prefix }}",
        backup_type="{{ params.backup_type }}",
        execution_timeout=timedelta(hours=6),
    )

    @task
    def start_file_mover(params: dict | None = None) -> None:
        """Stand-in: alphakraken moves instrument files away once they are copied."""
        print(f"file mover would now move {params['raw_file_id']} off instrument {params['instrument_id']}")

    @task
    def decide_processing(params: dict | None = None) -> bool:
        """Stand-in: process everything that has data."""
        backup_base = Path(params["backup_dir"]) / params["instrument_id"]
        return any(p.stat().st_size > 0 for p in _files_of(backup_base, params["raw_file_id"]).values())

    @task
    def start_acquisition_processor(process: bool, params: dict | None = None) -> str | None:
        """Stand-in: start processing; leaves a marker file so a run's outcome can be seen on disk."""
        if not process:
            return None
        marker = Path(params["backup_dir"]) / "processing" / f"{params['raw_file_id']}.started"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(os.environ.get("HOSTNAME", "local"))
        return str(marker)

    inventory = compute_checksum()
    copied = copy_raw_file(inventory)
    monitor_acquisition() >> inventory
    mover = start_file_mover()
    copied >> [upload_to_s3, mover]
    decision = decide_processing()
    mover >> decision
    start_acquisition_processor(decision)
