"""RawFileS3BackupOperator: back up one raw file (all of its files) to its project's bucket.

The steps read like the design document: settings → RawFile → bucket → IN_PROGRESS → every file through the
verified upload → DONE (or FAILED with a reason a person can act on). S3 lives in the hook, MongoDB in the
store; this module only orchestrates and decides what a failure means for the task.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSkipException,
    BaseOperator,
    Stats,
)

from airflow_provider_kraken_s3 import store
from airflow_provider_kraken_s3.errors import (
    InvalidInputError,
    LocalFileChangedError,
    MongoUnavailableError,
    PermanentBackupError,
)
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook
from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook, UploadResult
from airflow_provider_kraken_s3.inventory import BackupObject, backup_objects
from airflow_provider_kraken_s3.layout import backup_key, local_path, set_etag
from airflow_provider_kraken_s3.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.naming import bucket_name
from airflow_provider_kraken_s3.parts import MIB
from airflow_provider_kraken_s3.progress import kv
from airflow_provider_kraken_s3.settings import BackupSettings, resolve_settings, validate_arguments

if TYPE_CHECKING:
    from airflow.sdk import Context

STATS_PREFIX = "kraken_s3.backup"


class RawFileS3BackupOperator(BaseOperator):
    """Back up one raw file (all of its files) to ``{bucket_prefix}-{project_id}`` and record the truth.

    ``DONE`` is written only when every file is in S3 and verified (ETag and size, and the inventory's MD5
    read in the same pass as the upload). A retry on any worker resumes unfinished multipart uploads and
    skips objects already verified. Permanent problems fail the task without retries; transient ones are
    re-raised so Airflow retries.

    :param raw_file_id: id of the ``RawFile`` document (templated).
    :param aws_conn_id: Airflow ``aws`` connection (credentials, region, endpoint).
    :param mongo_conn_id: Airflow connection of alphakraken's MongoDB (``kraken_mongo`` or ``mongo`` type).
    :param backup_type: ``s3`` or ``local`` (then the task is skipped); overrides ``settings_path`` (templated).
    :param bucket_prefix: bucket prefix; the bucket is ``{prefix}-{project_id}``, normalised (templated).
    :param region_name: region of the bucket; overrides the connection's (templated).
    :param part_size: multipart part size in bytes (default 500 MiB), unless a file's inventory fixes it.
    :param settings_path: alphakraken-style YAML (``backup: {backup_type, s3: {region, bucket_prefix}}``);
        arguments win over it (templated).
    :param create_bucket_if_missing: create a missing bucket (private, versioned, encrypted, public access
        blocked, tagged, incomplete uploads aborted after 7 days) instead of failing.
    :param raise_on_failure: ``False`` records permanent failures as ``FAILED`` and ends the task
        successfully (the design's "don't raise"); transient errors still raise while retries remain.
    :param max_concurrency: parts in flight at once per file.
    """

    template_fields: Sequence[str] = (
        "raw_file_id",
        "backup_type",
        "bucket_prefix",
        "region_name",
        "settings_path",
    )
    ui_color = "#c9e4f6"

    def __init__(
        self,
        *,
        raw_file_id: str,
        aws_conn_id: str = KrakenS3Hook.default_conn_name,
        mongo_conn_id: str = KrakenMongoHook.default_conn_name,
        backup_type: str | None = None,
        bucket_prefix: str | None = None,
        region_name: str | None = None,
        part_size: int | None = None,
        settings_path: str | None = None,
        create_bucket_if_missing: bool = False,
        raise_on_failure: bool = True,
        max_concurrency: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        validate_arguments(
            backup_type=backup_type, bucket_prefix=bucket_prefix, region_name=region_name, part_size=part_size
        )
        self.raw_file_id = raw_file_id
        self.aws_conn_id = aws_conn_id
        self.mongo_conn_id = mongo_conn_id
        self.backup_type = backup_type
        self.bucket_prefix = bucket_prefix
        self.region_name = region_name
        self.part_size = part_size
        self.settings_path = settings_path
        self.create_bucket_if_missing = create_bucket_if_missing
        self.raise_on_failure = raise_on_failure
        self.max_concurrency = max_concurrency

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            settings = resolve_settings(
                backup_type=self.backup_type,
                bucket_prefix=self.bucket_prefix,
                region_name=self.region_name,
                part_size=self.part_size,
                settings_path=self.settings_path,
            )
        except InvalidInputError as error:
            raise AirflowFailException(f"invalid backup settings: {error}") from error
        if settings.backup_type != "s3":
            raise AirflowSkipException(
                f"backup_type is {settings.backup_type!r}, not 's3': no S3 backup for {self.raw_file_id}; "
                "the RawFile is left untouched."
            )
        mongo = KrakenMongoHook(mongo_conn_id=self.mongo_conn_id)
        mongo.connect()
        mongo.check_reachable()  # unreachable: MongoUnavailableError naming host and database; Airflow retries
        started = time.monotonic()
        bucket: str | None = None
        try:
            raw_file = store.get_raw_file(self.raw_file_id)
            objects = backup_objects(raw_file.id, raw_file.file_info)
            bucket = bucket_name(settings.bucket_prefix or "", raw_file.project_id or "")
            return self._back_up(raw_file, objects, bucket, settings, started)
        except Exception as error:
            return self._handle_failure(error, bucket, context, started)

    # ------------------------------------------------------------------ the happy path

    def _back_up(
        self,
        raw_file: RawFile,
        objects: list[BackupObject],
        bucket: str,
        settings: BackupSettings,
        started: float,
    ) -> dict[str, Any]:
        files = [(item, self._local_file(raw_file, item)) for item in objects]
        total = sum(item.size for item in objects)
        s3 = KrakenS3Hook(
            aws_conn_id=self.aws_conn_id,
            region_name=settings.region_name,
            max_concurrency=self.max_concurrency,
        )
        self._ensure_bucket(s3, bucket, raw_file)
        store.mark_in_progress(
            raw_file.id, f"uploading {len(objects)} file(s), {total / MIB:.1f} MiB, to s3://{bucket}/"
        )
        self.log.info(
            "backup start %s",
            kv(
                raw_file=raw_file.id,
                bucket=bucket,
                files=len(objects),
                bytes=total,
            ),
        )
        upload_ids = dict(raw_file.s3_upload_ids or {})
        results: list[UploadResult] = []
        for index, (item, path) in enumerate(files, start=1):
            self.log.info("file %d/%d: %s -> s3://%s/%s", index, len(files), path, bucket, item.key)
            results.append(self._upload_one(s3, raw_file.id, item, path, bucket, settings, upload_ids))
        return self._record_done(raw_file, objects, results, bucket, started)

    def _local_file(self, raw_file: RawFile, item: BackupObject) -> Path:
        """The file on disk for an inventory entry; refuses paths escaping ``backup_base_path``."""
        if not raw_file.backup_base_path:
            raise InvalidInputError(
                f"raw file {raw_file.id!r} has no backup_base_path: the folder holding its files is unknown. "
                "The local copy step must record it before the upload."
            )
        path = local_path(raw_file.backup_base_path, item.path)
        base = Path(raw_file.backup_base_path).resolve()
        if not path.resolve().is_relative_to(base):
            raise InvalidInputError(
                f"{path} resolves to {path.resolve()}, outside backup_base_path {base} (a symlink?); refusing "
                "to upload a file from elsewhere."
            )
        if not path.is_file():
            raise LocalFileChangedError(
                f"{path} (inventory entry {item.path!r}) does not exist or is not a file; nothing was uploaded. "
                "Was the local copy moved or deleted?"
            )
        actual = path.stat().st_size
        if actual != item.size:
            raise LocalFileChangedError(
                f"{path} has {actual} bytes but the inventory says {item.size}: the local copy differs from the "
                "acquired file. Re-copy it from the instrument; nothing was uploaded."
            )
        return path

    def _ensure_bucket(self, s3: KrakenS3Hook, bucket: str, raw_file: RawFile) -> None:
        if not self.create_bucket_if_missing:
            s3.check_bucket(bucket)
            return
        try:
            s3.check_bucket(bucket)
        except PermanentBackupError as error:
            if "does not exist" not in str(error):
                raise
            s3.create_backup_bucket(
                bucket,
                tags={"project_id": raw_file.project_id or "", "created_by": "airflow-provider-kraken-s3"},
            )

    def _upload_one(
        self,
        s3: KrakenS3Hook,
        raw_file_id: str,
        item: BackupObject,
        path: Path,
        bucket: str,
        settings: BackupSettings,
        upload_ids: dict[str, str],
    ) -> UploadResult:
        def remember(upload_id: str | None) -> None:
            # Persisted before any part is sent, so a retry on any worker resumes this upload.
            if upload_id is None:
                upload_ids.pop(item.path, None)
            else:
                upload_ids[item.path] = upload_id
            store.record_upload_id(raw_file_id, upload_ids)

        precomputed = item.precomputed
        result = s3.upload_verified(
            path,
            bucket,
            item.key,
            part_size=precomputed.part_size if precomputed else settings.part_size,
            expected_etag=precomputed.etag if precomputed else None,
            expected_md5=item.md5,
            upload_id=upload_ids.get(item.path),
            on_upload_id=remember,
        )
        if result.skipped:
            self.log.info("skipped s3://%s/%s: %s", bucket, item.key, result.skip_reason)
        return result

    def _record_done(
        self,
        raw_file: RawFile,
        objects: list[BackupObject],
        results: list[UploadResult],
        bucket: str,
        started: float,
    ) -> dict[str, Any]:
        keys = {item.path: item.key for item in objects}
        key = backup_key(raw_file.id, keys)
        if key.endswith("/"):
            etag = set_etag({result.key: result.etag for result in results})
        else:
            etag = results[0].etag
        file_info = dict(raw_file.file_info)
        for item, result in zip(objects, results, strict=True):
            file_info[item.path] = item.file_info_entry(result.etag, result.part_size)
        seconds = time.monotonic() - started
        uploaded = sum(result.bytes_sent for result in results)
        skipped = sum(result.skipped for result in results)
        total = sum(result.size for result in results)
        details = (
            f"verified {len(results)} file(s), {total / MIB:.1f} MiB in s3://{bucket}/{key} "
            f"({uploaded / MIB:.1f} MiB uploaded, {skipped} already there) in {seconds:.1f} s"
        )
        store.mark_done(
            raw_file.id, bucket=bucket, backup_key=key, etag=etag, file_info=file_info, details=details
        )
        Stats.incr(f"{STATS_PREFIX}.done")
        Stats.incr(f"{STATS_PREFIX}.bytes_uploaded", count=uploaded)
        Stats.timing(f"{STATS_PREFIX}.duration", timedelta(seconds=seconds))
        self.log.info(
            "backup summary %s",
            kv(
                raw_file=raw_file.id,
                status=BackupStatus.DONE,
                bucket=bucket,
                key=key,
                etag=etag,
                files=len(results),
                files_skipped=skipped,
                bytes=total,
                bytes_uploaded=uploaded,
                seconds=seconds,
                mib_s=uploaded / MIB / max(seconds, 1e-9),
            ),
        )
        return {
            "status": BackupStatus.DONE,
            "bucket": bucket,
            "s3_backup_key": key,
            "s3_etag": etag,
            "files": len(results),
            "bytes": total,
            "bytes_uploaded": uploaded,
            "files_skipped": skipped,
            "seconds": round(seconds, 3),
        }

    # ------------------------------------------------------------------ failures

    def _handle_failure(
        self, error: Exception, bucket: str | None, context: Context, started: float
    ) -> dict[str, Any]:
        """Record FAILED with an actionable reason, then decide: fail, retry, or (``raise_on_failure=False``) end."""
        permanent = isinstance(error, (PermanentBackupError, PermissionError))
        try_number, max_tries = _tries(context, self.retries)
        retries_left = try_number < max_tries
        if permanent:
            reason = f"{error} (permanent: fix the cause, then clear the task)"
        elif retries_left:
            reason = f"{error} (transient, try {try_number} of {max_tries}: Airflow retries and resumes)"
        else:
            reason = f"{error} (transient, last of {max_tries} tries failed: clear the task to resume)"
        Stats.incr(f"{STATS_PREFIX}.failed")
        self.log.error("backup of %s failed: %s", self.raw_file_id, reason)
        if not isinstance(error, MongoUnavailableError):
            with contextlib.suppress(PermanentBackupError):  # e.g. no such RawFile: nothing to record on
                store.mark_failed(self.raw_file_id, f"{type(error).__name__}: {reason}", bucket=bucket)
        if permanent and self.raise_on_failure:
            raise AirflowFailException(reason) from error
        if not permanent and (self.raise_on_failure or retries_left):
            raise error
        self.log.warning(
            "raise_on_failure=False: the task succeeds; RawFile %s is marked FAILED", self.raw_file_id
        )
        return {
            "status": BackupStatus.FAILED,
            "bucket": bucket,
            "error": reason,
            "seconds": round(time.monotonic() - started, 3),
        }


def _tries(context: Context, retries: int | None) -> tuple[int, int]:
    """(this try, total tries). Outside a task run (no ``ti``), this is the only try."""
    ti = context.get("ti") if context else None
    max_tries = (retries or 0) + 1
    if ti is None:
        return max_tries, max_tries
    return int(getattr(ti, "try_number", 1) or 1), max_tries
