"""RawFileS3BackupOperator: back up one raw file (all of its files) to its project's bucket.

A thin face over :class:`~airflow_provider_kraken_s3.services.backup.RawFileBackup` (which claims the
record, uploads, and records the truth). This module only resolves settings and connections, names the
attempt, decides what an outcome means for the Airflow task (succeed, fail without retries, or retry), and
tells Airflow what a verified backup read and wrote: lineage (hook-lineage collector and OpenLineage) and
the "S3 backup" link. A failed attempt reports neither.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector
from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSkipException,
    Stats,
)

from airflow_provider_kraken_s3.core.errors import InvalidInputError, NothingToBackUp, PermanentBackupError
from airflow_provider_kraken_s3.core.settings import BackupSettings, resolve_settings, validate_arguments
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.links import S3BackupLink, backup_url
from airflow_provider_kraken_s3.records.lease import DEFAULT_TTL, Attempt
from airflow_provider_kraken_s3.records.models import BackupStatus
from airflow_provider_kraken_s3.services.backup import BackupOutcome, RawFileBackup

if TYPE_CHECKING:
    from airflow.sdk import Context

STATS_PREFIX = "kraken_s3.backup"


class RawFileS3BackupOperator(AwsBaseOperator[KrakenS3Hook]):
    """Back up one raw file (all of its files) to ``{bucket_prefix}-{project_id}`` and record the truth.

    ``DONE`` is written only when every file is in S3 and proven equal to the inventory (S3's ETags against
    the ETags of the bytes read and sent, those against the inventory's ETag or MD5). One attempt owns the
    record at a time (a lease); a retry on any worker resumes unfinished multipart uploads and skips objects
    S3 already proves. Permanent problems fail the task without retries; transient ones are re-raised so
    Airflow retries; a timeout or kill is recorded as FAILED ("will resume") before the task ends.

    Built on the Amazon provider's ``AwsBaseOperator`` (hook: :class:`KrakenS3Hook`), so ``aws_conn_id``,
    ``region_name``, ``verify`` and ``botocore_config`` mean what they mean on every Amazon operator.

    :param raw_file_id: id of the ``RawFile`` document (templated).
    :param aws_conn_id: Airflow ``aws`` connection (credentials, region, endpoint) (templated).
    :param mongo_conn_id: Airflow connection of alphakraken's MongoDB (``kraken_mongo`` or ``mongo`` type).
    :param backup_type: ``s3`` or ``local`` (then the task is skipped); overrides ``settings_path``, where a
        missing ``backup.backup_type`` means ``local`` as in alphakraken (templated).
    :param bucket_prefix: bucket prefix; the bucket is ``{prefix}-{project_id}``, normalised (templated).
    :param region_name: region of the bucket; overrides the settings file's ``backup.s3.region``, which
        overrides the connection's (templated).
    :param verify: verify TLS certificates: ``False`` not to, or the path of a CA bundle; None: the
        connection's, else botocore's default (templated).
    :param botocore_config: botocore ``Config`` arguments (``retries``, ``read_timeout``, ``user_agent_extra``,
        …) for this task's client; they replace the connection's ``config_kwargs`` and are merged over the
        hook's defaults (:attr:`KrakenS3Hook.default_client_config`).
    :param part_size: multipart part size in bytes (default 100 MiB, alphakraken's), unless a file's inventory
        fixes it.
    :param settings_path: alphakraken-style YAML (``backup: {backup_type, s3: {region, bucket_prefix}}``,
        ``locations.backup.absolute_path``); arguments win over it (templated).
    :param worker_backup_path: where this worker sees ``locations.backup.absolute_path`` (the cluster path
        recorded in ``backup_base_path``); None: the YAML's ``backup.worker_backup_path``, else
        ``/opt/airflow/mounts/backup`` (alphakraken's containers). Unused without ``locations`` (templated).
    :param create_bucket_if_missing: create a missing bucket (private, versioned, encrypted, public access
        blocked, tagged, incomplete uploads aborted after 7 days) instead of failing; None: the YAML's
        ``backup.s3.auto_create_buckets`` (default false).
    :param storage_class: S3 storage class of every object (``STANDARD``, ``INTELLIGENT_TIERING``,
        ``STANDARD_IA``, ``GLACIER_IR``, ``GLACIER``, ``DEEP_ARCHIVE``); None: the YAML's
        ``backup.s3.storage_class``, else the bucket's default (STANDARD) (templated).
    :param raise_on_failure: ``False`` records permanent failures as ``FAILED`` and ends the task
        successfully (the design's "don't raise"); transient errors still raise while retries remain.
    :param max_concurrency: parts in flight at once per file.
    :param expected_bucket_owner: AWS account id that must own the bucket (S3 refuses requests otherwise).
    :param lease_ttl: how long this attempt's claim on the record lasts without renewal (renewed every third
        of it while the upload runs); a killed worker's claim expires after it.
    """

    aws_hook_class = KrakenS3Hook
    template_fields: Sequence[str] = aws_template_fields(
        "raw_file_id",
        "backup_type",
        "bucket_prefix",
        "settings_path",
        "storage_class",
        "worker_backup_path",
    )
    ui_color = "#c9e4f6"
    operator_extra_links = (S3BackupLink(),)

    def __init__(
        self,
        *,
        raw_file_id: str,
        mongo_conn_id: str = KrakenMongoHook.default_conn_name,
        backup_type: str | None = None,
        bucket_prefix: str | None = None,
        part_size: int | None = None,
        settings_path: str | None = None,
        create_bucket_if_missing: bool | None = None,
        storage_class: str | None = None,
        worker_backup_path: str | None = None,
        raise_on_failure: bool = True,
        max_concurrency: int = 4,
        expected_bucket_owner: str | None = None,
        lease_ttl: timedelta = DEFAULT_TTL,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)  # aws_conn_id, region_name, verify, botocore_config: the Amazon base's
        validate_arguments(
            backup_type=backup_type,
            bucket_prefix=bucket_prefix,
            region_name=self.region_name,
            part_size=part_size,
            storage_class=storage_class,
            worker_backup_path=worker_backup_path,
        )
        self.raw_file_id = raw_file_id
        self.mongo_conn_id = mongo_conn_id
        self.backup_type = backup_type
        self.bucket_prefix = bucket_prefix
        self.part_size = part_size
        self.settings_path = settings_path
        self.create_bucket_if_missing = create_bucket_if_missing
        self.storage_class = storage_class
        self.worker_backup_path = worker_backup_path
        self.raise_on_failure = raise_on_failure
        self.max_concurrency = max_concurrency
        self.expected_bucket_owner = expected_bucket_owner
        self.lease_ttl = lease_ttl
        self._cancel = threading.Event()
        self._outcome: BackupOutcome | None = None  # a verified backup of this run: its lineage
        self._settings: BackupSettings | None = None  # resolved by execute: the hook's region comes from it

    @property
    def _hook_parameters(self) -> dict[str, Any]:
        """The Amazon base's hook arguments, the region as the settings resolved it (argument, else the
        settings file's, else the connection's), and the hook's own upload options."""
        region = self._settings.region_name if self._settings is not None else self.region_name
        return {
            **super()._hook_parameters,
            "region_name": region,
            "max_concurrency": self.max_concurrency,
            "expected_bucket_owner": self.expected_bucket_owner,
        }

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            settings = resolve_settings(
                backup_type=self.backup_type,
                bucket_prefix=self.bucket_prefix,
                region_name=self.region_name,
                part_size=self.part_size,
                settings_path=self.settings_path,
                create_buckets=self.create_bucket_if_missing,
                storage_class=self.storage_class,
                worker_backup_path=self.worker_backup_path,
            )
        except InvalidInputError as error:
            raise AirflowFailException(f"invalid backup settings: {error}") from error
        self._settings = settings
        self.__dict__.pop("hook", None)  # a hook built before the settings were known has another region
        if settings.backup_type != "s3":
            why = (
                f"backup_type is {settings.backup_type!r} ({settings.backup_type_source}), not 's3': no S3 backup "
                f"for {self.raw_file_id}; the RawFile is left untouched."
            )
            self.log.info("%s", why)
            raise AirflowSkipException(why)
        if settings.backup_paths is not None:
            self.log.info("backup_base_path mapping: %s", settings.backup_paths.describe())
        mongo = KrakenMongoHook(mongo_conn_id=self.mongo_conn_id)
        mongo.connect()
        mongo.check_reachable()  # unreachable: MongoUnavailableError naming host and database; Airflow retries
        s3 = self.hook
        try_number, max_tries = _tries(context, self.retries)
        backup = RawFileBackup(
            raw_file_id=self.raw_file_id,
            settings=settings,
            access=s3.access(),
            attempt=Attempt.new(
                _attempt_label(context, self.task_id, try_number),
                ttl=self.lease_ttl,
                takes_over=_earlier_tries(context, self.task_id, try_number),
            ),
            log=self.log,
            max_concurrency=self.max_concurrency,
            tries=(try_number, max_tries),
            cancel=self._cancel,
        )
        try:
            outcome = backup.run()
        except NothingToBackUp as error:
            self.log.info(
                "nothing to back up for %s: %s; the RawFile is left untouched", self.raw_file_id, error
            )
            raise AirflowSkipException(str(error)) from error
        except PermanentBackupError as error:
            Stats.incr(f"{STATS_PREFIX}.failed")
            if self.raise_on_failure:
                raise AirflowFailException(backup.failure_reason(error)) from error
            self.log.warning(
                "raise_on_failure=False: the task succeeds; RawFile %s is marked FAILED", self.raw_file_id
            )
            return {
                "status": BackupStatus.FAILED,
                "bucket": backup.bucket,
                "error": backup.failure_reason(error),
            }
        except Exception as error:
            Stats.incr(f"{STATS_PREFIX}.failed")
            if self.raise_on_failure or try_number < max_tries:
                raise
            return {
                "status": BackupStatus.FAILED,
                "bucket": backup.bucket,
                "error": backup.failure_reason(error),
            }
        Stats.incr(f"{STATS_PREFIX}.done")
        Stats.incr(f"{STATS_PREFIX}.bytes_uploaded", count=outcome.bytes_uploaded)
        Stats.timing(f"{STATS_PREFIX}.duration", timedelta(seconds=outcome.seconds))
        self._report(context, s3, outcome)
        return outcome.as_dict()

    def _report(self, context: Context, s3: KrakenS3Hook, outcome: BackupOutcome) -> None:
        """Tell Airflow what this verified backup read and what it vouches for, and where to see it.

        Inputs are the local files this attempt read (``file://``); outputs every object of the raw file,
        those S3 already proved included (the task vouches for them). Reported as the Amazon provider's
        S3Hook does, with the hook as the lineage context; OpenLineage asks
        :meth:`get_openlineage_facets_on_complete` for the same.
        """
        self._outcome = outcome
        collector = get_hook_lineage_collector()
        for path in outcome.read_paths:
            collector.add_input_asset(context=s3, scheme="file", asset_kwargs={"path": path})
        for key in outcome.keys:
            collector.add_output_asset(
                context=s3, scheme="s3", asset_kwargs={"bucket": outcome.bucket, "key": key}
            )
        url = backup_url(
            bucket=outcome.bucket,
            key=outcome.s3_backup_key,
            endpoint_url=s3.conn_config.get_service_endpoint_url("s3"),
            region=s3.region_name,
        )
        S3BackupLink.persist(context, url)
        self.log.info("S3 backup: %s", url)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """OpenLineage datasets of this run (called by the OpenLineage provider's listener, where installed).

        The provider is not a dependency: it is imported here, where only its own listener calls. Nothing
        verified (a failed or skipped backup): an empty lineage.
        """
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.extractors import OperatorLineage

        outcome = self._outcome
        if outcome is None:
            return OperatorLineage()
        return OperatorLineage(
            inputs=[Dataset(namespace="file", name=path) for path in outcome.read_paths],
            outputs=[Dataset(namespace=f"s3://{outcome.bucket}", name=key) for key in outcome.keys],
        )

    def on_kill(self) -> None:
        """The task is being killed: stop the upload at the next block; the service records the interruption."""
        self._cancel.set()


def _attempt_label(context: Context, task_id: str, try_number: int) -> str:
    """Readable name of this attempt for the lease (and for a person reading the RawFile)."""
    run_id = context.get("run_id") if context else None
    ti = context.get("ti") if context else None
    map_index = getattr(ti, "map_index", -1) if ti is not None else -1
    mapped = f"[{map_index}]" if isinstance(map_index, int) and map_index >= 0 else ""
    dag_id = getattr(ti, "dag_id", None) if ti is not None else None
    return f"{dag_id + '.' if dag_id else ''}{task_id}{mapped}/{run_id or 'manual'}/try{try_number}"


def _earlier_tries(context: Context, task_id: str, try_number: int) -> tuple[str, ...]:
    """Labels of the earlier tries of this task instance, whose leases this try may take over at once.

    Only inside a DAG run: Airflow starts try N after try N-1 has ended, so a lease try N-1 still holds
    belongs to a process that is gone (killed, or unable to reach MongoDB to give it back).
    """
    if not context or not context.get("run_id") or context.get("ti") is None:
        return ()
    return tuple(_attempt_label(context, task_id, n) for n in range(1, try_number))


def _tries(context: Context, retries: int | None) -> tuple[int, int]:
    """(this try, total tries). Outside a task run (no ``ti``), this is the only try."""
    ti = context.get("ti") if context else None
    max_tries = (retries or 0) + 1
    if ti is None:
        return max_tries, max_tries
    return int(getattr(ti, "try_number", 1) or 1), max_tries
