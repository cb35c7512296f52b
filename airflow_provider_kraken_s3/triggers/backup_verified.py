"""BackupVerifiedTrigger: the deferred half of :class:`S3BackupVerifiedSensor`.

Runs in the triggerer's event loop, so nothing here may block it: the RawFile is read by the synchronous
store code in a worker thread (``asyncio.to_thread``), and objects are HEAD-ed with the Amazon provider's
asynchronous (aiobotocore) client. The decision itself is :mod:`airflow_provider_kraken_s3.core.verdict`,
the same code the poking sensor uses, so both modes always agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.errors import S3ErrorKind, classify_s3_error
from airflow_provider_kraken_s3.core.layout import listing_folder
from airflow_provider_kraken_s3.core.verdict import (
    Action,
    ExpectedObject,
    Outcome,
    RawFileRecord,
    conclude,
    explicit_objects,
    verify_objects,
)
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook, connect
from airflow_provider_kraken_s3.services.verify import fetch_record, objects_to_check, validate_mode

CLASSPATH = "airflow_provider_kraken_s3.triggers.backup_verified.BackupVerifiedTrigger"


class HeadFailed(Exception):
    """A HEAD request failed for a reason other than a missing object (``kind``: what it means for us)."""

    def __init__(self, kind: S3ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


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
                if outcome.action is Action.SUCCESS:
                    self.log.info("%s", outcome.message)
                    yield TriggerEvent(
                        {"status": "success", "xcom": outcome.xcom, "message": outcome.message}
                    )
                    return
                if outcome.action is Action.FAIL:
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
        """One round: read the record (if any), HEAD every expected object, decide."""
        record: RawFileRecord | Outcome | None = None
        if self.raw_file_id is not None:
            record = await asyncio.to_thread(fetch_record, connect, self.mongo_conn_id, self.raw_file_id)
        target = objects_to_check(
            record,
            fail_on_failed=self.fail_on_failed,
            bucket=self.bucket,
            keys=self.keys,
            expected_etags=self.expected_etags,
            expected_sizes=self.expected_sizes,
        )
        if isinstance(target, Outcome):
            return target
        bucket, objects = target
        try:
            found = await self._head_all(bucket, objects)
        except HeadFailed as error:
            if error.kind is S3ErrorKind.TRANSIENT:
                return Outcome(Action.WAIT, f"S3 not answering properly ({error})")
            return Outcome(Action.FAIL, str(error))
        result = verify_objects(objects, found)
        return conclude(result, bucket=bucket, raw_file_id=self.raw_file_id)

    async def _head_all(
        self, bucket: str, objects: Sequence[ExpectedObject]
    ) -> dict[str, RemoteObject | None]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=self.aws_conn_id)
        folder = listing_folder(item.key for item in objects)
        # A fresh client per round: a wait can outlast temporary credentials.
        async with await hook.get_async_conn() as client:
            if folder:
                listed = await self._call(
                    client.list_objects_v2, f"s3://{bucket}/{folder}", Bucket=bucket, Prefix=folder
                )
                found = await self._list_all(client, bucket, folder, listed)
                return {item.key: found.get(item.key) for item in objects}
            result: dict[str, RemoteObject | None] = {}
            for item in objects:
                response = await self._call(
                    client.head_object, f"s3://{bucket}/{item.key}", Bucket=bucket, Key=item.key
                )
                result[item.key] = (
                    None
                    if response is None
                    else RemoteObject(
                        etag=str(response.get("ETag", "")),
                        size=int(response.get("ContentLength", -1)),
                        metadata=dict(response.get("Metadata") or {}),
                    )
                )
            return result

    async def _list_all(
        self, client: Any, bucket: str, folder: str, page: dict | None
    ) -> dict[str, RemoteObject]:
        """Every object under ``folder``, following the listing's pages."""
        found: dict[str, RemoteObject] = {}
        while page is not None:
            for entry in page.get("Contents", []):
                found[entry["Key"]] = RemoteObject(etag=str(entry["ETag"]), size=int(entry["Size"]))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
            page = await self._call(
                client.list_objects_v2,
                f"s3://{bucket}/{folder}",
                Bucket=bucket,
                Prefix=folder,
                ContinuationToken=token,
            )
        return found

    async def _call(self, operation: Any, where: str, **params: Any) -> dict | None:
        """One async S3 request; None when the object (or bucket) is missing, HeadFailed otherwise."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await operation(**params)
        except ClientError as error:
            status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            code = str(error.response.get("Error", {}).get("Code", ""))
            kind = classify_s3_error(status, code)
            if kind in (S3ErrorKind.NOT_FOUND, S3ErrorKind.NO_SUCH_BUCKET):
                return None
            if kind is S3ErrorKind.DENIED:
                raise HeadFailed(
                    kind,
                    f"access denied reading {where} (connection {self.aws_conn_id!r}, {code or status}); "
                    "grant s3:GetObject and s3:ListBucket (without which S3 reports a missing key as 403) on "
                    "the bucket",
                ) from error
            raise HeadFailed(kind, f"reading {where} failed ({code or status}): {error}") from error
        except (BotoCoreError, OSError, asyncio.TimeoutError) as error:
            raise HeadFailed(S3ErrorKind.TRANSIENT, f"reading {where} failed: {error}") from error
