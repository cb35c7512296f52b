"""S3BackupVerifiedSensor: wait until a raw file's backup is recorded DONE *and* S3 confirms it.

Gate anything destructive (deleting the instrument's copy) on this sensor, not on ``backup_status`` alone:
it re-reads every recorded object with a HEAD request and compares ETag and size (the rule the upload
uses to skip, :func:`~airflow_provider_kraken_s3.core.verdict.judge_object`; object metadata is never proof). HEAD only: no object is downloaded, and the
RawFile is never modified.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.sensors.base_aws import AwsBaseSensor
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    PokeReturnValue,
    conf,
)

from airflow_provider_kraken_s3.core.errors import (
    InvalidInputError,
)
from airflow_provider_kraken_s3.core.verdict import (
    Outcome,
    SensorStep,
    explicit_objects,
)
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook, connect
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
from airflow_provider_kraken_s3.services.verify import VerificationRound, validate_mode, verify_once
from airflow_provider_kraken_s3.triggers.backup_verified import BackupVerifiedTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


def _is_concrete(value: Any) -> bool:
    """True for a value that is final at DAG-parse time (not a Jinja string, not an XComArg)."""
    if isinstance(value, str):
        return "{{" not in value and "{%" not in value
    if isinstance(value, (list, tuple)):
        return all(_is_concrete(item) for item in value)
    if isinstance(value, dict):
        return all(_is_concrete(k) and _is_concrete(v) for k, v in value.items())
    return value is None or isinstance(value, (int, float))


class S3BackupVerifiedSensor(AwsBaseSensor[KrakenS3Hook]):
    """Succeed once a backup is verifiably in S3; return what was verified.

    Two modes (exactly one):

    - ``raw_file_id``: read the RawFile from alphakraken's MongoDB. Succeeds only when ``backup_status`` is
      DONE and every object of ``file_info`` (layout from :func:`~airflow_provider_kraken_s3.core.inventory.
      backup_objects`) exists in ``s3_bucket`` with the recorded ETag and size. Not started, in progress
      or another status: keep waiting. FAILED: keep waiting (a retry may fix it) unless
      ``fail_on_failed``. DONE but S3 disagrees, or a DONE record without recorded ETags: fail at once,
      without retries (possible data loss). An unknown id fails at once too, instead of waiting forever.
    - ``bucket`` + ``keys`` + ``expected_etags`` (+ optional ``expected_sizes``): no MongoDB. Missing
      objects: keep waiting; an object with another ETag/size: fail.

    Returns (XCom) ``{"bucket", "raw_file_id", "objects": [{"key", "etag", "size"[, "path"]}],
    "verified_at"}`` (``path`` is the file_info path, in RawFile mode; ``verified_at`` ISO 8601 UTC).

    Built on the Amazon provider's ``AwsBaseSensor`` (hook: :class:`KrakenS3Hook`): ``aws_conn_id``,
    ``region_name``, ``verify`` and ``botocore_config`` are theirs and reach the S3 client of every round,
    poking or deferred.

    :param raw_file_id: id of the RawFile (templated).
    :param mongo_conn_id: connection of alphakraken's MongoDB.
    :param aws_conn_id: Airflow ``aws`` connection (templated).
    :param region_name: region of the S3 client; overrides the connection's (templated).
    :param verify: verify TLS certificates: ``False`` not to, or the path of a CA bundle (templated).
    :param botocore_config: botocore ``Config`` arguments for the client (``retries``, timeouts, …).
    :param fail_on_failed: fail (with the recorded ``s3_backup_details``) as soon as the record is FAILED.
    :param bucket: explicit mode: the bucket (templated).
    :param keys: explicit mode: object keys (templated).
    :param expected_etags: explicit mode: key → ETag (templated).
    :param expected_sizes: explicit mode, optional: key → size in bytes (templated).
    :param deferrable: wait in the triggerer (:class:`BackupVerifiedTrigger`) instead of a worker slot.
        None (default): Airflow's ``[operators] default_deferrable`` (False when unset), read when the
        sensor is created, the default every Amazon provider sensor has.
    """

    aws_hook_class = KrakenS3Hook
    template_fields: Sequence[str] = aws_template_fields(
        "raw_file_id", "bucket", "keys", "expected_etags", "expected_sizes"
    )
    ui_color = "#b5e3c3"

    def __init__(
        self,
        *,
        raw_file_id: str | None = None,
        mongo_conn_id: str = KrakenMongoHook.default_conn_name,
        fail_on_failed: bool = False,
        bucket: str | None = None,
        keys: Sequence[str] | None = None,
        expected_etags: Mapping[str, str] | None = None,
        expected_sizes: Mapping[str, int] | None = None,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        validate_mode(raw_file_id, bucket, keys, expected_etags, expected_sizes)
        if raw_file_id is None and all(_is_concrete(v) for v in (keys, expected_etags, expected_sizes)):
            try:
                explicit_objects(keys, expected_etags, expected_sizes)  # type: ignore[arg-type]
            except InvalidInputError as error:
                raise ValueError(str(error)) from error
        self.raw_file_id = raw_file_id
        self.mongo_conn_id = mongo_conn_id
        self.fail_on_failed = fail_on_failed
        self.bucket = bucket
        self.keys = keys
        self.expected_etags = expected_etags
        self.expected_sizes = expected_sizes
        if deferrable is None:
            deferrable = conf.getboolean("operators", "default_deferrable", fallback=False)
        self.deferrable = bool(deferrable)

    # ------------------------------------------------------------------ poking

    def poke(self, context: Context) -> bool | PokeReturnValue:
        outcome = self.check()
        if outcome.action is SensorStep.SUCCESS:
            self.log.info("%s", outcome.message)
            return PokeReturnValue(is_done=True, xcom_value=outcome.xcom)
        if outcome.action is SensorStep.FAIL:
            self.log.error("%s", outcome.message)
            raise AirflowFailException(outcome.message)
        self.log.info("not verified yet: %s", outcome.message)
        return False

    def verification_round(self) -> VerificationRound:
        """What a round checks, from this sensor's (rendered) arguments."""
        if self.raw_file_id is not None:
            return VerificationRound(raw_file_id=self.raw_file_id, fail_on_failed=self.fail_on_failed)
        return VerificationRound(
            bucket=self.bucket,
            keys=self.keys,
            expected_etags=self.expected_etags,
            expected_sizes=self.expected_sizes,
        )

    def check(self) -> Outcome:
        """One verification round (the trigger runs the very same one, in a thread).

        A fresh hook per round, as in the trigger: a long wait can outlast temporary credentials.
        """
        hook = self.aws_hook_class(**self._hook_parameters)
        return verify_once(
            hook.access, connect, mongo_conn_id=self.mongo_conn_id, target=self.verification_round()
        )

    # ------------------------------------------------------------------ deferring

    def trigger(self) -> BackupVerifiedTrigger:
        """The trigger that continues this (rendered) sensor's wait in the triggerer."""
        return BackupVerifiedTrigger(
            verification=self.verification_round(),
            mongo_conn_id=self.mongo_conn_id,
            aws_conn_id=self.aws_conn_id,
            region_name=self.region_name,
            verify=self.verify,
            botocore_config=self.botocore_config,
            poll_interval=self.poke_interval,
        )

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        returned = self.poke(context)
        if returned:
            return returned.xcom_value if isinstance(returned, PokeReturnValue) else None
        self.defer(
            trigger=self.trigger(),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: return the verified objects, or fail with the trigger's reason."""
        if not event:
            raise AirflowException("the backup verification trigger ended without an event")
        status = event.get("status")
        if status == "success":
            self.log.info("%s", event.get("message") or "backup verified")
            return event.get("xcom")
        message = str(event.get("message") or event)
        if status == "error":
            if event.get("retryable"):
                raise AirflowException(message)
            raise AirflowFailException(message)
        if status == "timeout":
            raise AirflowSensorTimeout(f"backup not verified within {self.timeout} s: {message}")
        raise AirflowException(f"unexpected event from the backup verification trigger: {event!r}")
