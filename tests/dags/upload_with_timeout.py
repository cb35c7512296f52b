"""A one-task DAG whose upload is cut by ``execution_timeout``: the timeout test runs it with ``airflow dags test``."""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator

with DAG(dag_id="upload_with_timeout", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    RawFileS3BackupOperator(
        task_id="upload_to_s3",
        raw_file_id="{{ dag_run.conf['raw_file_id'] }}",
        aws_conn_id="aws_slow",
        bucket_prefix="{{ dag_run.conf['bucket_prefix'] }}",
        part_size=5 * 1024**2,
        max_concurrency=1,
        execution_timeout=timedelta(seconds=8),
    )
