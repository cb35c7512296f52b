"""s3_uploader: a drop-in for alphakraken's own ``s3_uploader`` DAG, backed by RawFileS3BackupOperator.

Same DAG id, same conf (``{"raw_file_id": ..., "internal_target_folder_path": ...}``, sent by their
``acquisition_handler`` after ``copy_raw_file``), same task id, pool and queue, so their handler and workers
need no change. The files are found from the RawFile, not from the conf: ``backup_base_path`` (the cluster's
path) is read under the worker's mount of the backup pool (``locations.backup.absolute_path`` of their YAML
replaced by ``backup.worker_backup_path``, default ``/opt/airflow/mounts/backup``).

Settings come from their YAML, found as they find it (``/opt/airflow/envs/alphakraken.<ENV_NAME>.yaml``)
unless ``KRAKEN_SETTINGS_PATH`` names another file. ``S3_UPLOAD_POOL`` and ``S3_UPLOAD_QUEUE`` override the
pool and queue names (theirs by default).
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator


def settings_path() -> str | None:
    """``KRAKEN_SETTINGS_PATH``, else where alphakraken's containers keep their YAML (None outside them)."""
    if explicit := os.environ.get("KRAKEN_SETTINGS_PATH"):
        return explicit
    env_name = os.environ.get("ENV_NAME")
    return f"/opt/airflow/envs/alphakraken.{env_name}.yaml" if env_name else None


with DAG(
    dag_id="s3_uploader",
    schedule=None,
    catchup=False,
    description="Upload raw files to S3 (verified, resumable; airflow-provider-kraken-s3).",
    tags=["s3"],
    doc_md=__doc__,
    default_args={
        "depends_on_past": False,
        "queue": os.environ.get("S3_UPLOAD_QUEUE", "kraken_queue_s3_uploader"),
    },
    params={
        "raw_file_id": Param(type="string", minLength=3),
        "internal_target_folder_path": Param(
            "",
            type="string",
            description="sent by alphakraken's acquisition_handler; unused (the RawFile says where the files are)",
        ),
    },
) as dag:
    RawFileS3BackupOperator(
        task_id="upload_to_s3",
        raw_file_id="{{ params.raw_file_id }}",
        settings_path=settings_path(),
        aws_conn_id="aws_default",
        mongo_conn_id="kraken_mongo_default",
        pool=os.environ.get("S3_UPLOAD_POOL", "s3_upload_pool"),
        retries=3,  # unlike theirs, a retry resumes the multipart uploads, and transient errors do retry
        retry_delay=timedelta(minutes=15),
        execution_timeout=timedelta(hours=6),
    )
