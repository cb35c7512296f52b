"""BackupVerifiedTrigger: the deferred half of :class:`S3BackupVerifiedSensor`.

Runs in the triggerer's event loop, so nothing here may block it: each round is the poking sensor's own
round (:func:`~airflow_provider_kraken_s3.services.verify.verify_once`: read the RawFile, list or HEAD its
objects, decide), run in a worker thread (``asyncio.to_thread``). One read path, so both modes always agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kraken_s3.core.verdict import Outcome, SensorStep, explicit_objects
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook, connect
from airflow_provider_kraken_s3.services.verify import validate_mode, verify_once

CLASSPATH = "airflow_provider_kraken_s3.triggers.backup_verified.BackupVerifiedTrigger"


class BackupVerifiedTrigger(BaseTrigger):
    """Poll until a backup is verified in S3 (or proven wrong), then fire one event.

    Events: ``{"status": "success", "xcom": {...}}``; ``{"status": "error", "message": ...,
    "retryable": bool}`` (``retryable`` is False for a verdict such as "DONE but S3 disagrees", True for an
    unexpected error inside the trigger). While the backup is not finished it sleeps ``poll_interval``
    seconds and checks again; the task's defer timeout bounds the wait.
    """

    def __init__(
        self,
        *,
        raw_file_id: str | None = None,
        bucket: str | None = None,
        keys: Sequence[str] | None = None,
        expected_etags: Mapping[str, str] | None = None,
        expected_sizes: Mapping[str, int] | None = None,
        mongo_conn_id: str = KrakenMongoHook.default_conn_name,
        aws_conn_id: str | None = "aws_default",
        poll_interval: float = 60.0,
        fail_on_failed: bool = False,
    ) -> None:
        super().__init__()
        validate_mode(raw_file_id, bucket, keys, expected_etags, expected_sizes)
        if raw_file_id is None:
            explicit_objects(keys, expected_etags, expected_sizes)  # type: ignore[arg-type]  # refuse early
        self.raw_file_id = raw_file_id
        self.bucket = bucket
        self.keys = list(keys) if keys is not None else None
        self.expected_etags = dict(expected_etags) if expected_etags is not None else None
        self.expected_sizes = dict(expected_sizes) if expected_sizes is not None else None
        self.mongo_conn_id = mongo_conn_id
        self.aws_conn_id = aws_conn_id
        self.poll_interval = float(poll_interval)
        self.fail_on_failed = bool(fail_on_failed)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and the arguments of this mode only (JSON-friendly)."""
        kwargs: dict[str, Any] = {"aws_conn_id": self.aws_conn_id, "poll_interval": self.poll_interval}
        if self.raw_file_id is not None:
            kwargs.update(
                raw_file_id=self.raw_file_id,
                mongo_conn_id=self.mongo_conn_id,
                fail_on_failed=self.fail_on_failed,
            )
        else:
            kwargs.update(
                bucket=self.bucket,
                keys=list(self.keys or []),
                expected_etags=dict(self.expected_etags or {}),
                expected_sizes=dict(self.expected_sizes) if self.expected_sizes is not None else None,
            )
        return CLASSPATH, kwargs

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            while True:
                outcome = await self.check_once()
                if outcome.action is SensorStep.SUCCESS:
                    self.log.info("%s", outcome.message)
                    yield TriggerEvent(
                        {"status": "success", "xcom": outcome.xcom, "message": outcome.message}
                    )
                    return
                if outcome.action is SensorStep.FAIL:
                    yield TriggerEvent({"status": "error", "message": outcome.message, "retryable": False})
                    return
                self.log.info("%s; next check in %s s", outcome.message, self.poll_interval)
                await asyncio.sleep(self.poll_interval)
        except Exception as error:  # a bug or an unexpected library error: let the task retry
            self.log.exception("backup verification trigger failed")
            yield TriggerEvent(
                {
                    "status": "error",
                    "message": f"backup verification trigger failed: {type(error).__name__}: {error}",
                    "retryable": True,
                }
            )

    async def check_once(self) -> Outcome:
        """One round: the sensor's own blocking round (:func:`..services.verify.verify_once`), in a thread,
        so the triggerer's event loop never waits on MongoDB or S3 and both modes decide alike."""
        from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook

        # A fresh hook per round: a wait can outlast temporary credentials.
        hook = KrakenS3Hook(aws_conn_id=self.aws_conn_id)
        return await asyncio.to_thread(
            verify_once,
            hook.access,
            connect,
            mongo_conn_id=self.mongo_conn_id,
            raw_file_id=self.raw_file_id,
            fail_on_failed=self.fail_on_failed,
            bucket=self.bucket,
            keys=self.keys,
            expected_etags=self.expected_etags,
            expected_sizes=self.expected_sizes,
        )
