"""Audit and reconcile as DAG tasks: thin faces over :mod:`..services.audit` and :mod:`..services.reconcile`.

The example DAG ``backup_audit`` runs both nightly. They only read S3 (HEAD, listings) and write only what the
services write: reconcile's conditional ``upload_failed`` for records whose attempt died, and, when asked,
aborts of orphan multipart uploads.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

from airflow_provider_kraken_s3.core.audit import render_table
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook, connect
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.records.queries import RecordFilter
from airflow_provider_kraken_s3.services.audit import run_audit
from airflow_provider_kraken_s3.services.reconcile import DEFAULT_ORPHAN_AGE, Reconciler

if TYPE_CHECKING:
    from airflow.sdk import Context


class S3BackupAuditOperator(AwsBaseOperator[KrakenS3Hook]):
    """Check every ``upload_done`` RawFile (filtered) against S3: missing, different and extra objects.

    One listing per set and a HEAD per single file, several records at a time; nothing is downloaded (for
    proof from the bytes themselves use :class:`~.deep_verify.S3BackupDeepVerifyOperator`). The task fails without
    retries when a backup is missing or differs (someone must look: the instrument copy may be the last
    one), and fails with retries when S3 could not be asked for some records. Returns the summary counts.

    :param project_ids: only these projects (templated); all when empty.
    :param instrument_ids: only these instruments (templated); all when empty.
    :param created_within: only raw files created this long before the task runs (None: all).
    :param max_workers: records checked at once.
    :param allow_empty: succeed when no record matches. By default an audit that checked nothing fails
        (without retries): a filter that matches nothing, or a task reading an empty or wrong database (an
        in-memory store under a scheduler, a misconfigured connection), must not look like a healthy archive.
    :param mongo_conn_id: connection of alphakraken's MongoDB.

    ``aws_conn_id``, ``region_name``, ``verify`` and ``botocore_config`` are the Amazon provider's
    (``AwsBaseOperator``, hook :class:`~airflow_provider_kraken_s3.hooks.kraken_s3.KrakenS3Hook`).
    """

    aws_hook_class = KrakenS3Hook
    template_fields: Sequence[str] = aws_template_fields("project_ids", "instrument_ids")
    ui_color = "#d6e9f8"

    def __init__(
        self,
        *,
        project_ids: Sequence[str] = (),
        instrument_ids: Sequence[str] = (),
        created_within: timedelta | None = None,
        max_workers: int = 8,
        allow_empty: bool = False,
        mongo_conn_id: str = KrakenMongoHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.project_ids = project_ids
        self.instrument_ids = instrument_ids
        self.created_within = created_within
        self.max_workers = max_workers
        self.allow_empty = allow_empty
        self.mongo_conn_id = mongo_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        connect(self.mongo_conn_id)
        since = datetime.now(timezone.utc) - self.created_within if self.created_within else None
        record_filter = RecordFilter(
            project_ids=tuple(self.project_ids), instrument_ids=tuple(self.instrument_ids), created_from=since
        )
        report = run_audit(
            self.hook.access(),
            record_filter,
            max_workers=self.max_workers,
            keep_ok=False,
            log=self.log,
        )
        self.log.info("audit report:\n%s", render_table(report.findings, report.summary))
        summary = report.summary.as_dict()
        if report.summary.records == 0 and not self.allow_empty:
            raise AirflowFailException(
                f"{report.summary.describe()} (filter {record_filter.query() or 'none'}; connection '{self.mongo_conn_id}'). "
                "Nothing was checked: check the filter and that the connection reads alphakraken's database "
                "(an in-memory stand-in store is empty in every task a scheduler runs); set allow_empty=True "
                "when no record is expected."
            )
        if report.ok:
            return summary
        if report.summary.wrong:
            raise AirflowFailException(
                f"{report.summary.describe()}. A backup recorded upload_done is not in S3 as recorded: do not "
                "delete its instrument copy; re-run its backup (the operator replaces or re-uploads what differs)."
            )
        raise AirflowException(
            f"{report.summary.describe()}: S3 could not be asked for some raw files; retrying"
        )


class S3BackupReconcileOperator(AwsBaseOperator[KrakenS3Hook]):
    """Tidy what dead attempts left: stuck records to ``upload_failed``; orphan multipart uploads listed.

    A record whose attempt's lease expired without an outcome (a killed worker) is marked ``upload_failed``
    with the reason, conditionally (a live attempt that renews its lease wins), so alphakraken and the next
    run see the truth; its multipart uploads are kept for that run to resume. Incomplete uploads that no
    RawFile references and older than ``orphan_age`` are listed, and aborted only with ``abort_orphans``
    (needs ``s3:ListBucketMultipartUploads`` and ``s3:AbortMultipartUpload``). Returns the report.

    :param buckets: buckets to look for orphan uploads in, besides every bucket a RawFile names (templated).
    :param orphan_age: incomplete uploads younger than this are left alone.
    :param abort_orphans: abort the orphans found (default: only list them).
    :param mongo_conn_id: connection of alphakraken's MongoDB.

    ``aws_conn_id``, ``region_name``, ``verify`` and ``botocore_config`` are the Amazon provider's
    (``AwsBaseOperator``, hook :class:`~airflow_provider_kraken_s3.hooks.kraken_s3.KrakenS3Hook`).
    """

    aws_hook_class = KrakenS3Hook
    template_fields: Sequence[str] = aws_template_fields("buckets")
    ui_color = "#d6e9f8"

    def __init__(
        self,
        *,
        buckets: Sequence[str] = (),
        orphan_age: timedelta = DEFAULT_ORPHAN_AGE,
        abort_orphans: bool = False,
        mongo_conn_id: str = KrakenMongoHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.buckets = buckets
        self.orphan_age = orphan_age
        self.abort_orphans = abort_orphans
        self.mongo_conn_id = mongo_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        connect(self.mongo_conn_id)
        report = Reconciler(
            self.hook.access(),
            buckets=tuple(self.buckets),
            orphan_age=self.orphan_age,
            abort=self.abort_orphans,
            log=self.log,
        ).run()
        self.log.info("%s", report.describe())
        if not report.ok:
            raise AirflowException(f"reconcile could not do everything: {'; '.join(report.problems)}")
        return report.as_dict()
