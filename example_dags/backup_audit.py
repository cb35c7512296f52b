"""backup_audit: the data steward's nightly proof that the S3 backups are still what the records say.

Every night:

1. ``reconcile`` — records left ``upload_in_progress`` by a dead worker (expired lease) become
   ``upload_failed`` with the reason, so the record tells the truth and the next backup run resumes them;
   incomplete multipart uploads that no RawFile references and older than a week are listed (set
   ``abort_orphans`` to abort them; that needs ``s3:AbortMultipartUpload``).
2. ``audit_recent`` — every ``upload_done`` raw file created in the last ``audit_days`` days is checked
   against S3 (one listing per set, a HEAD per file): missing, different and extra objects fail the task.
   ``AUDIT_DAYS`` below sets the window; a full audit is the same operator without ``created_within``.

Once a week (on ``deep_verify_weekday``, or on every run with ``deep_verify: "always"``):

3. ``deep_verify_sample`` — a byte budget (``DEEP_VERIFY_GIB``) of backups is downloaded and hashed (parallel ranged GETs,
   nothing written to disk) and compared with the inventory; never-verified and longest-unverified raw files
   first, so successive weeks cover the archive. A backup whose bytes differ is set to ``upload_failed``
   (no cleanup deletes its instrument copy) and fails the task.

Trigger by hand with, for example::

    airflow dags trigger backup_audit -c '{"deep_verify": "always"}'
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from airflow.providers.common.compat.sdk import DAG, Param, get_current_context, task

from airflow_provider_kraken_s3.operators.audit import S3BackupAuditOperator, S3BackupReconcileOperator
from airflow_provider_kraken_s3.operators.deep_verify import S3BackupDeepVerifyOperator

DAG_ID = "backup_audit"
AWS_CONN_ID = "aws_default"
MONGO_CONN_ID = "kraken_mongo_default"
AUDIT_DAYS = 30
DEEP_VERIFY_WEEKDAY = 6  # Sunday (Monday is 0)
DEEP_VERIFY_GIB = 500  # per week: a 100 TB archive is covered in about four years; raise it if egress allows
GIB = 1024**3

with DAG(
    dag_id=DAG_ID,
    description="Nightly: reconcile dead attempts, audit recent backups against S3; weekly: deep-verify a sample.",
    schedule="0 3 * * *",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["kraken", "s3", "backup", "audit"],
    params={
        "deep_verify": Param(
            "weekly",
            enum=["weekly", "always", "never"],
            description=f"deep-verify a sample on weekday {DEEP_VERIFY_WEEKDAY} only, on every run, or never",
        ),
    },
    default_args={"retries": 2, "retry_delay": timedelta(minutes=10)},
) as dag:
    reconcile = S3BackupReconcileOperator(
        task_id="reconcile", aws_conn_id=AWS_CONN_ID, mongo_conn_id=MONGO_CONN_ID
    )

    audit_recent = S3BackupAuditOperator(
        task_id="audit_recent",
        created_within=timedelta(days=AUDIT_DAYS),
        aws_conn_id=AWS_CONN_ID,
        mongo_conn_id=MONGO_CONN_ID,
    )

    # After the audit, whatever it found: the cheap check reports first, and the weekly download still runs.
    @task.short_circuit(task_id="is_deep_verify_day", trigger_rule="all_done")
    def is_deep_verify_day() -> bool:
        """True on the weekly day (by the run's logical date, else today) or when asked for every run."""
        context = get_current_context()
        mode = context["params"]["deep_verify"]
        if mode != "weekly":
            return mode == "always"
        when = context.get("logical_date") or datetime.now(timezone.utc)
        return when.weekday() == DEEP_VERIFY_WEEKDAY

    deep_verify_sample = S3BackupDeepVerifyOperator(
        task_id="deep_verify_sample",
        byte_budget=int(DEEP_VERIFY_GIB * GIB),
        aws_conn_id=AWS_CONN_ID,
        mongo_conn_id=MONGO_CONN_ID,
        execution_timeout=timedelta(hours=12),
    )

    reconcile >> audit_recent >> is_deep_verify_day() >> deep_verify_sample
