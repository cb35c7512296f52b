"""Proof from the bytes themselves, as a DAG task: deep verification (download, hash, compare).

A thin face over :mod:`..services.deep_verify`. :class:`BackupReaderOperator` is what it shares with the
restore (:mod:`.restore`): both download through parallel ranged GETs and hash what they read, trusting no
metadata.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_kraken_s3.core.deep_verify import DeepVerifyOutcome
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook, connect
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.services.deep_verify import deep_verify_raw_file, verify_sample
from airflow_provider_kraken_s3.transfer.access import S3Access

if TYPE_CHECKING:
    from airflow.sdk import Context


class BackupReaderOperator(AwsBaseOperator[KrakenS3Hook]):
    """What the operators that download backups (deep verify, restore) share: the two connections, the ranged GETs in flight, and stopping when killed.

    Amazon provider operators (``AwsBaseOperator``, hook
    :class:`~airflow_provider_kraken_s3.hooks.kraken_s3.KrakenS3Hook`): ``aws_conn_id``, ``region_name``,
    ``verify`` and ``botocore_config`` are theirs.

    :param max_concurrency: ranged GETs in flight.
    :param mongo_conn_id: connection of alphakraken's MongoDB.
    """

    aws_hook_class = KrakenS3Hook
    ui_color = "#c9e4d2"

    def __init__(
        self,
        *,
        max_concurrency: int = 4,
        mongo_conn_id: str = KrakenMongoHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_concurrency = max_concurrency
        self.mongo_conn_id = mongo_conn_id
        self._cancel = threading.Event()  # set by on_kill: the download stops at its next chunk

    def _connect(self) -> S3Access:
        """MongoDB connected (the services read and write RawFiles) and S3 access, at the start of a run."""
        connect(self.mongo_conn_id)
        return self.hook.access()

    def on_kill(self) -> None:
        self._cancel.set()


class S3BackupDeepVerifyOperator(BackupReaderOperator):
    """Download and hash backups and compare them with the inventory: periodic fixity, or one raw file.

    With ``raw_file_id``: that raw file. Otherwise a sample of ``upload_done`` raw files — ``fraction`` of
    them or ``byte_budget`` bytes, never-verified and longest-unverified first — so that successive runs
    cover the whole archive. Each outcome is recorded on the RawFile (``s3_verified_at``,
    ``s3_verify_outcome``); a backup proven different or missing is set to ``upload_failed`` with what to do,
    so nothing deletes an instrument copy on its strength, and the task fails without retries. Archived
    objects ("needs restore") and raw files that could not be read this time are logged, not failed.
    Returns the report.

    :param raw_file_id: verify this raw file only (templated).
    :param fraction: share of the eligible raw files to verify per run (0 < fraction ≤ 1).
    :param byte_budget: bytes to download per run at most (at least one raw file is verified).
    :param project_id: only this project's raw files (templated).
    :param instrument_id: only this instrument's raw files (templated).
    :param max_concurrency: ranged GETs in flight.
    """

    template_fields: Sequence[str] = aws_template_fields("raw_file_id", "project_id", "instrument_id")

    def __init__(
        self,
        *,
        raw_file_id: str | None = None,
        fraction: float | None = None,
        byte_budget: int | None = None,
        project_id: str | None = None,
        instrument_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if raw_file_id is None and fraction is None and byte_budget is None:
            raise ValueError("give raw_file_id, or a sample size: fraction and/or byte_budget")
        if fraction is not None and not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if byte_budget is not None and byte_budget < 1:
            raise ValueError(f"byte_budget must be positive, got {byte_budget}")
        self.raw_file_id = raw_file_id
        self.fraction = fraction
        self.byte_budget = byte_budget
        self.project_id = project_id
        self.instrument_id = instrument_id

    def execute(self, context: Context) -> dict[str, Any]:
        access = self._connect()
        if self.raw_file_id:
            report = deep_verify_raw_file(
                access,
                self.raw_file_id,
                max_concurrency=self.max_concurrency,
                cancel=self._cancel,
                log=self.log,
            )
            self.log.info("%s", report.summary())
            reports, result = [report], report.as_dict()
        else:
            sample = verify_sample(
                access,
                fraction=self.fraction,
                byte_budget=self.byte_budget,
                project_id=self.project_id,
                instrument_id=self.instrument_id,
                max_concurrency=self.max_concurrency,
                cancel=self._cancel,
                log=self.log,
            )
            reports, result = list(sample.reports), sample.as_dict()
        for report in reports:
            if not report.ok:
                self.log.warning("%s: %s", report.summary(), "; ".join(report.problems()))
        wrong = [report for report in reports if report.outcome.proves_record_wrong]
        if wrong:
            raise AirflowFailException(
                f"deep verification found {len(wrong)} backup(s) whose bytes in S3 are not the inventory's: "
                + "; ".join(f"{report.raw_file_id}: {'; '.join(report.problems())}" for report in wrong)
                + ". Their records now say upload_failed: keep the instrument copies and back them up again."
            )
        skipped = [r.raw_file_id for r in reports if r.outcome is not DeepVerifyOutcome.OK]
        if skipped:
            self.log.warning(
                "not verified this run (archived or unreadable, see above): %s", ", ".join(skipped)
            )
        return result
