"""s3_uploader: alphakraken's upload DAG shape, run by the Celery lane (scripts/celery-lane).

alphakraken triggers one run of a separate ``s3_uploader`` DAG per raw file (conf ``{"raw_file_id": ...}``),
whose one task runs on the uploader queue and in a pool with a few slots, so uploads never hold processing
back and never crowd the other workers. This is that DAG with the provider's operator as the task.

The lane shortens what would make a fault test slow (read from the environment, so the DAG processor and
the workers parse the same values): the lease (``KRAKEN_LANE_LEASE_TTL`` seconds; production keeps the
10-minute default) and the retry delay (``KRAKEN_LANE_RETRY_DELAY`` seconds).
"""

from __future__ import annotations

import os
from datetime import timedelta

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator

UPLOAD_QUEUE = "kraken_queue_s3_uploader"
UPLOAD_POOL = "s3_upload_pool"

with DAG(
    dag_id="s3_uploader",
    schedule=None,
    catchup=False,
    max_active_runs=32,  # 20 raw files triggered at once; the pool decides how many upload
    params={
        "raw_file_id": Param("", type="string"),
        "bucket_prefix": Param("", type="string", description="Bucket = <prefix>-<project_id>"),
    },
    tags=["alphakraken", "s3-backup", "celery-lane"],
    doc_md=__doc__,
) as dag:
    RawFileS3BackupOperator(
        task_id="upload_to_s3",
        raw_file_id="{{ params.raw_file_id }}",
        bucket_prefix="{{ params.bucket_prefix }}",
        backup_type="s3",
        queue=UPLOAD_QUEUE,
        pool=UPLOAD_POOL,
        retries=int(os.environ.get("KRAKEN_LANE_RETRIES", "6")),
        retry_delay=timedelta(seconds=int(os.environ.get("KRAKEN_LANE_RETRY_DELAY", "300"))),
        lease_ttl=timedelta(seconds=int(os.environ.get("KRAKEN_LANE_LEASE_TTL", "600"))),
        execution_timeout=timedelta(hours=6),
    )
