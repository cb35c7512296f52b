"""BackupVerifiedTrigger: the deferred half of :class:`S3BackupVerifiedSensor`.

Runs in the triggerer's event loop, so nothing here may block it: each round is the poking sensor's own
round (:func:`~airflow_provider_kraken_s3.services.verify.verify_once`: read the RawFile, list or HEAD its
objects, decide), run in a worker thread (``asyncio.to_thread``). One read path, so both modes always agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kraken_s3.core.verdict import Outcome, SensorStep, explicit_objects
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook, connect
from airflow_provider_kraken_s3.services.verify import VerificationRound, verify_once

CLASSPATH = "airflow_provider_kraken_s3.triggers.backup_verified.BackupVerifiedTrigger"


class BackupVerifiedTrigger(BaseTrigger):
    """Poll until a backup is verified in S3 (or proven wrong), then fire one event.

    Events: ``{"status": "success", "xcom": {...}}``; ``{"status": "error", "message": ...,
    "retryable": bool}`` (``retryable`` is False for a verdict such as "DONE but S3 disagrees", True for an
    unexpected error inside the trigger). While the backup is not finished it sleeps ``poll_interval``
    seconds and checks again; the task's defer timeout bounds the wait.

    :param verification: what each round checks (a :class:`VerificationRound`, or its :meth:`~VerificationRound.as_dict`).
    :param aws_conn_id: as on the sensor; with ``region_name``, ``verify`` and ``botocore_config`` it builds
        the S3 client of every round, so a deferred wait talks to S3 as the poking sensor does.
    :param legacy: the round's fields as separate arguments (``raw_file_id``, ``fail_on_failed``,
        ``bucket``, ``keys``, ``expected_etags``, ``expected_sizes``), as triggers serialised before
        :class:`VerificationRound` existed hold them: such a trigger still resumes.
    """

    def __init__(
        self,
        *,
        verification: VerificationRound | Mapping[str, Any] | None = None,
        mongo_conn_id: str = KrakenMongoHook.default_conn_name,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        verify: bool | str | None = None,
        botocore_config: dict[str, Any] | None = None,
        poll_interval: float = 60.0,
        **legacy: Any,
    ) -> None:
        super().__init__()
        if verification is None:
            verification = VerificationRound.from_dict(legacy)
        elif legacy:
            raise TypeError(f"give the round as verification only, not also as {sorted(legacy)}")
        elif not isinstance(verification, VerificationRound):
            verification = VerificationRound.from_dict(verification)
        if verification.explicit:  # refuse bad objects here, not after a first round in the triggerer
            explicit_objects(
                verification.keys,  # type: ignore[arg-type]  # validate_mode: not None in explicit mode
                verification.expected_etags,  # type: ignore[arg-type]
                verification.expected_sizes,
            )
        self.verification = verification
        self.mongo_conn_id = mongo_conn_id
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.verify = verify
        self.botocore_config = dict(botocore_config) if botocore_config is not None else None
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Classpath and arguments (JSON-friendly): the round as one dict, the connection's settings."""
        kwargs: dict[str, Any] = {
            "verification": self.verification.as_dict(),
            "aws_conn_id": self.aws_conn_id,
            "region_name": self.region_name,
            "verify": self.verify,
            "botocore_config": self.botocore_config,
            "poll_interval": self.poll_interval,
        }
        if not self.verification.explicit:
            kwargs["mongo_conn_id"] = self.mongo_conn_id
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
        hook = KrakenS3Hook(
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            config=self.botocore_config,
        )
        return await asyncio.to_thread(
            verify_once, hook.access, connect, mongo_conn_id=self.mongo_conn_id, target=self.verification
        )
