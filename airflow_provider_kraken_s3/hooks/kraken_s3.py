"""KrakenS3Hook: verified, resumable multipart uploads on top of the Amazon provider's S3Hook.

What this adds to ``S3Hook.load_file``:

* the part size is planned by us (:mod:`..parts`), so the ETag is predictable and can be checked;
* every part streams from disk and is MD5-hashed while it is sent (one read pass, bounded memory);
* each part's ETag returned by S3 is compared with its MD5 as soon as the part returns;
* before completing, the ETag (and whole-file MD5) must equal what the caller expects; after completing,
  ``head_object`` must report that ETag and the file's size;
* an object already in S3 with the expected ETag and size is skipped without reading the file;
* an earlier multipart upload (its id stored by the caller) is resumed: parts already in S3 whose ETag and
  size match the local part are kept, only the rest is sent.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from airflow_provider_kraken_s3.errors import (
    BucketAccessDeniedError,
    BucketNotFoundError,
    IntegrityError,
    KrakenBackupError,
    LocalFileChangedError,
    PermanentBackupError,
    S3TransientError,
)
from airflow_provider_kraken_s3.etag import (
    compute_s3_etag_and_md5,
    etag_from_part_digests,
    etag_part_count,
    etags_equal,
    normalize_etag,
)
from airflow_provider_kraken_s3.parts import DEFAULT_PART_SIZE, MIB, Part, PartPlan, plan_parts
from airflow_provider_kraken_s3.progress import ProgressReporter, kv
from airflow_provider_kraken_s3.streams import PartBody, SequentialMd5, UploadStopped

#: User metadata written on every object we upload: part-size-independent proof for later verifiers.
META_PART_SIZE = "kraken-part-size"
META_MD5 = "kraken-md5"

_DENIED_CODES = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
_MISSING_BUCKET_CODES = {"NoSuchBucket"}
_TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeoutException",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalError",
    "ServiceUnavailable",
    "PriorRequestNotComplete",
}


@dataclass(frozen=True)
class UploadResult:
    """What ``upload_verified`` did; every field is a verified fact, never a hope."""

    bucket: str
    key: str
    etag: str
    size: int
    part_size: int
    skipped: bool
    bytes_sent: int
    bytes_read: int
    parts_sent: int = 0
    parts_reused: int = 0
    md5: str | None = None
    seconds: float = 0.0
    skip_reason: str | None = None
    replaced_etag: str | None = None


@dataclass(frozen=True)
class _RemoteObject:
    etag: str
    size: int
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _RemotePart:
    etag: str
    size: int
    crc32: str | None


@dataclass
class _PartOutcome:
    part: Part
    etag: str
    digest: bytes
    reused: bool
    crc32: str | None = None

    def completed_part(self) -> dict[str, Any]:
        """The part's entry in CompleteMultipartUpload (with its CRC32 when it was sent with one)."""
        entry: dict[str, Any] = {"ETag": self.etag, "PartNumber": self.part.number}
        if self.crc32:
            entry["ChecksumCRC32"] = self.crc32
        return entry


class KrakenS3Hook(S3Hook):
    """S3Hook with verified, resumable multipart uploads and actionable bucket checks.

    Uses the Amazon provider's ``aws`` connection (``aws_conn_id``, default ``aws_default``): credentials,
    region and ``endpoint_url`` come from it, so S3-compatible stores (MinIO, Ceph) work too.

    :param max_concurrency: parts in flight at once per file (each holds one 1 MiB block in memory).
    """

    hook_name = "Kraken S3 (verified upload)"

    #: Transient errors are retried inside botocore first (standard mode, backoff), then by Airflow.
    #: botocore's default CRC32 per part stays on: S3 validates it on arrival, and over HTTPS botocore streams
    #: it as a trailer in the same read pass. Payload signing is off: over plain HTTP (on-prem stores)
    #: botocore would otherwise SHA-256 every part once more, a third checksum that buys nothing.
    default_client_config = Config(
        retries={"mode": "standard", "max_attempts": 8},
        s3={"payload_signing_enabled": False},
        connect_timeout=20,
        read_timeout=300,
        max_pool_connections=32,
    )

    def __init__(self, *args: Any, max_concurrency: int = 4, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency

    def get_conn(self) -> Any:
        """The boto3 client, with a hook that surfaces errors of our part bodies instead of retrying them."""
        client = super().get_conn()
        for operation in ("PutObject", "UploadPart"):
            client.meta.events.register_first(
                f"before-send.s3.{operation}",
                _raise_body_failure,
                unique_id=f"kraken-body-failure-{operation}",
            )
        return client

    @property
    def config(self) -> Config:
        """Our client defaults, overridden by anything the connection's ``config_kwargs`` sets."""
        from_connection = self.conn_config.botocore_config
        if from_connection is None:
            return self.default_client_config
        return self.default_client_config.merge(from_connection)

    # ------------------------------------------------------------------ bucket and object checks

    def describe_target(self, bucket: str) -> str:
        endpoint = self.conn_config.endpoint_url or "AWS default endpoint"
        return f"bucket '{bucket}' (region {self.conn_config.region_name or 'default'}, {endpoint})"

    def check_bucket(self, bucket: str) -> None:
        """Fail fast, before any byte is read, when the bucket is missing or not ours to use."""
        try:
            self.get_conn().head_bucket(Bucket=bucket)
        except ClientError as error:
            status, code = _error_status(error), _error_code(error)
            where = self.describe_target(bucket)
            if status == 404 or code in _MISSING_BUCKET_CODES or code == "404":
                raise BucketNotFoundError(
                    f"{where} does not exist. Create it (private, versioned) or let the operator create it "
                    "with create_bucket_if_missing=True; check bucket_prefix and the project id."
                ) from error
            if status == 403 or code in _DENIED_CODES:
                raise BucketAccessDeniedError(
                    f"access denied to {where} for connection '{self.aws_conn_id}'. Grant s3:ListBucket, "
                    "s3:PutObject, s3:GetObject, s3:AbortMultipartUpload and s3:ListMultipartUploadParts "
                    "on it, or check the credentials."
                ) from error
            raise self._translate(error, f"checking {where}") from error
        except BotoCoreError as error:
            raise self._translate(error, f"checking {self.describe_target(bucket)}") from error

    def create_backup_bucket(self, bucket: str, *, tags: dict[str, str] | None = None) -> None:
        """Create a bucket fit for backups: private, versioned, encrypted, public access blocked, tagged,
        and with a lifecycle rule that aborts multipart uploads left incomplete for 7 days.

        Versioning keeps the previous object whenever a re-upload replaces one; the lifecycle rule stops
        abandoned uploads from being billed forever.
        """
        client = self.get_conn()
        region = self.conn_config.region_name
        where = self.describe_target(bucket)
        create: dict[str, Any] = {"Bucket": bucket, "ACL": "private"}
        if region and region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            client.create_bucket(**create)
            client.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            )
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
            client.put_bucket_encryption(
                Bucket=bucket,
                ServerSideEncryptionConfiguration={
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                },
            )
            client.put_bucket_lifecycle_configuration(
                Bucket=bucket,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": "abort-incomplete-multipart-uploads",
                            "Status": "Enabled",
                            "Filter": {"Prefix": ""},
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                        }
                    ]
                },
            )
            if tags:
                client.put_bucket_tagging(
                    Bucket=bucket,
                    Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]},
                )
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, f"creating {where}") from error
        self.log.warning("created %s: private, versioned, SSE-S3, public access blocked", where)

    def head(self, bucket: str, key: str) -> _RemoteObject | None:
        """ETag, size and user metadata of an object, or None when there is none."""
        try:
            response = self.get_conn().head_object(Bucket=bucket, Key=key)
        except ClientError as error:
            if _error_status(error) == 404 or _error_code(error) in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise self._translate(error, f"reading s3://{bucket}/{key}") from error
        except BotoCoreError as error:
            raise self._translate(error, f"reading s3://{bucket}/{key}") from error
        return _RemoteObject(
            normalize_etag(response["ETag"]), int(response["ContentLength"]), response.get("Metadata", {})
        )

    def part_size_of(self, bucket: str, key: str, remote: _RemoteObject) -> int | None:
        """Part size an existing object was uploaded with: our metadata, else part 1's size from S3."""
        recorded = remote.metadata.get(META_PART_SIZE, "")
        if recorded.isdigit():
            return int(recorded)
        if etag_part_count(remote.etag) is None:
            return None
        try:
            response = self.get_conn().head_object(Bucket=bucket, Key=key, PartNumber=1)
        except (ClientError, BotoCoreError) as error:
            raise self._translate(error, f"reading part 1 of s3://{bucket}/{key}") from error
        return int(response["ContentLength"])

    def test_connection(self) -> tuple[bool, str]:
        """Connections UI test: list buckets on the configured endpoint (STS is absent on MinIO & co)."""
        try:
            response = self.get_conn().list_buckets()
        except Exception as error:
            return False, f"{type(error).__name__}: {error}"
        endpoint = self.conn_config.endpoint_url or "AWS"
        return True, f"Connected to {endpoint}; {len(response.get('Buckets', []))} bucket(s) visible."

    # ------------------------------------------------------------------ the verified upload

    def upload_verified(
        self,
        local_path: str | os.PathLike[str],
        bucket: str,
        key: str,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        expected_etag: str | None = None,
        expected_md5: str | None = None,
        upload_id: str | None = None,
        on_upload_id: Callable[[str], None] | None = None,
        progress: Callable[[int, int], None] | None = None,
        max_concurrency: int | None = None,
    ) -> UploadResult:
        """Upload ``local_path`` to ``s3://bucket/key`` and prove every byte arrived.

        :param part_size: bytes per part; with ``expected_etag`` it must be the part size that ETag was
            computed with, and is used exactly. Without, it is raised (and logged) if the file would need
            more than 10,000 parts.
        :param expected_etag: the ETag the object must end up with (e.g. from the inventory); also enables
            check-and-skip without reading the file.
        :param expected_md5: the whole-file MD5 the bytes must have (e.g. the inventory's checksum); it is
            verified in the same read pass and stored in the object's metadata.
        :param upload_id: an earlier multipart upload of this key to resume.
        :param on_upload_id: called with the multipart upload id before any part is sent (persist it to
            resume after a crash), and with ``None`` once the upload is completed or aborted.
        :param progress: called with ``(bytes done, total)`` as parts are read.
        :raises PermanentBackupError: integrity mismatch, local file missing or changed, missing bucket or
            denied access; any multipart upload of ours is aborted.
        :raises S3TransientError: network trouble, throttling, 5xx; the multipart upload is kept to resume.
        """
        started = time.monotonic()
        path = Path(local_path)
        stat = _stat_or_fail(path)
        size = stat.st_size
        if expected_etag is not None:
            expected_etag = normalize_etag(expected_etag)
        if expected_md5 is not None:
            expected_md5 = expected_md5.strip().lower()
        plan = plan_parts(size, part_size, fixed=expected_etag is not None)
        if note := plan.describe_adjustment():
            self.log.warning("%s: %s", path.name, note)
        if expected_etag is not None and etag_part_count(expected_etag) != (
            plan.part_count if plan.is_multipart else None
        ):
            raise IntegrityError(
                f"{path} has {size} bytes, which at {plan.part_size_mib} MiB parts does not give the "
                f"{etag_part_count(expected_etag) or 1} part(s) of the expected ETag {expected_etag}: the "
                "local file differs from the inventory (truncated or replaced?)."
            )
        target = f"s3://{bucket}/{key}"
        remote = self.head(bucket, key)
        skip = self._check_existing(path, bucket, key, plan, remote, expected_etag, expected_md5)
        if skip is not None:
            result = UploadResult(
                bucket=bucket,
                key=key,
                etag=remote.etag,  # type: ignore[union-attr]
                size=size,
                part_size=skip[1],
                skipped=True,
                bytes_sent=0,
                bytes_read=skip[2],
                md5=expected_md5,
                seconds=time.monotonic() - started,
                skip_reason=skip[0],
            )
            self._log_summary(result)
            return result
        if remote is not None:
            self.log.warning(
                "REPLACING %s: it exists with ETag %s and %d bytes, which differ from the local file; the "
                "new object is only completed if the local file verifies (a versioned bucket keeps the old "
                "version).",
                target,
                remote.etag,
                remote.size,
            )
            expected = expected_md5 or expected_etag
            if not plan.is_multipart and expected is not None:
                # A single PUT replaces the object as soon as it is sent. S3 refuses wrong bytes through
                # Content-MD5, but not every S3-compatible store does: for this rare case (a small file
                # that differs from its backup) prove the local copy first.
                _, local_md5 = compute_s3_etag_and_md5(path, plan.part_size)
                if local_md5 != expected:
                    raise IntegrityError(
                        f"{path} has MD5 {local_md5}, but {expected} was expected: the local copy is not the "
                        f"acquired file, so it must not replace {target}. Restore it from the instrument."
                    )
        metadata = {META_PART_SIZE: str(plan.part_size)}
        if expected_md5:
            metadata[META_MD5] = expected_md5
        reporter = ProgressReporter(self.log, key, size, callback=progress)
        self.log.info(
            "upload start %s",
            kv(
                file=str(path),
                target=target,
                size=size,
                part_size_mib=plan.part_size_mib,
                parts=plan.part_count,
            ),
        )
        if plan.is_multipart:
            outcome = self._upload_multipart(
                path, stat, bucket, key, plan, metadata, expected_etag, expected_md5, upload_id,
                on_upload_id, reporter, max_concurrency or self.max_concurrency,
            )  # fmt: skip
        else:
            outcome = self._put_single(
                path, stat, bucket, key, plan, metadata, expected_etag, expected_md5, reporter
            )
        etag, md5, parts_sent, parts_reused, bytes_sent = outcome
        final = self.head(bucket, key)
        if final is None or not etags_equal(final.etag, etag) or final.size != size:
            found = "no object" if final is None else f"ETag {final.etag}, {final.size} bytes"
            raise IntegrityError(
                f"{target} reports {found} after the upload, expected ETag {etag} and {size} bytes; the "
                "object is corrupt or was replaced concurrently. Re-run the backup."
            )
        result = UploadResult(
            bucket=bucket,
            key=key,
            etag=etag,
            size=size,
            part_size=plan.part_size,
            skipped=False,
            bytes_sent=bytes_sent,
            bytes_read=size,
            parts_sent=parts_sent,
            parts_reused=parts_reused,
            md5=md5,
            seconds=time.monotonic() - started,
            replaced_etag=remote.etag if remote is not None else None,
        )
        self._log_summary(result)
        return result

    def _check_existing(
        self,
        path: Path,
        bucket: str,
        key: str,
        plan: PartPlan,
        remote: _RemoteObject | None,
        expected_etag: str | None,
        expected_md5: str | None,
    ) -> tuple[str, int, int] | None:
        """Decide whether the object in S3 already is this file: (reason, part size, bytes read) or None."""
        if remote is None or remote.size != plan.file_size:
            return None
        if expected_etag is not None:
            if etags_equal(remote.etag, expected_etag):
                return "already in S3 with the expected ETag and size", plan.part_size, 0
            return None
        remote_md5 = remote.metadata.get(META_MD5)
        if expected_md5 is not None and remote_md5 == expected_md5:
            remote_part_size = int(remote.metadata.get(META_PART_SIZE, plan.part_size))
            return "already in S3 with the expected MD5 (object metadata) and size", remote_part_size, 0
        # No expected ETag: hash the local file with the object's own part size and compare (one read).
        remote_part_size = self.part_size_of(bucket, key, remote) or plan.part_size
        try:
            remote_plan = plan_parts(plan.file_size, remote_part_size, fixed=True)
        except PermanentBackupError:
            return None
        local_etag, local_md5 = compute_s3_etag_and_md5(path, remote_plan.part_size)
        if expected_md5 is not None and local_md5 != expected_md5:
            raise IntegrityError(
                f"{path} has MD5 {local_md5}, the inventory says {expected_md5}: the local copy is not the "
                "acquired file. Nothing was uploaded; restore the file from the instrument or backup."
            )
        if etags_equal(local_etag, remote.etag):
            return (
                "already in S3: local ETag computed with the object's part size matches",
                remote_part_size,
                (plan.file_size),
            )
        return None

    def _put_single(
        self,
        path: Path,
        stat: os.stat_result,
        bucket: str,
        key: str,
        plan: PartPlan,
        metadata: dict[str, str],
        expected_etag: str | None,
        expected_md5: str | None,
        reporter: ProgressReporter,
    ) -> tuple[str, str, int, int, int]:
        """Single PUT. With an expected MD5, S3 itself refuses wrong bytes (Content-MD5)."""
        expected = expected_md5 or expected_etag
        body = PartBody(path, next(plan.parts()), on_progress=reporter.add)
        extra: dict[str, Any] = {}
        if expected:
            extra["ContentMD5"] = base64.b64encode(bytes.fromhex(expected)).decode()
        target = f"s3://{bucket}/{key}"
        try:
            response = self.get_conn().put_object(
                Bucket=bucket, Key=key, Body=body, ContentLength=plan.file_size, Metadata=metadata, **extra
            )
        except ClientError as error:
            if _error_code(error) in {"BadDigest", "InvalidDigest"}:
                raise IntegrityError(
                    f"S3 refused {target}: the bytes read from {path} do not have the expected MD5 "
                    f"{expected}. Nothing was stored; the local file differs from the inventory."
                ) from error
            raise self._translate(error, f"uploading {target}") from error
        except BotoCoreError as error:
            raise self._translate(error, f"uploading {target}") from error
        finally:
            body.close()
        _check_unchanged(path, stat)
        md5 = body.hexdigest()
        returned = normalize_etag(response["ETag"])
        if returned != md5:
            raise IntegrityError(
                f"S3 stored {target} with ETag {returned}, but the bytes read from {path} have MD5 {md5}: "
                "the data was corrupted in transit. The object is corrupt; re-run the backup."
            )
        if expected and md5 != expected:
            raise IntegrityError(
                f"{path} was read with MD5 {md5}, but {expected} was expected: the local file differs from "
                f"the inventory, and {target} now holds those bytes (a versioned bucket keeps the previous "
                "version). Restore the file from the instrument and re-run."
            )
        return md5, md5, 1, 0, plan.file_size

    def _upload_multipart(
        self,
        path: Path,
        stat: os.stat_result,
        bucket: str,
        key: str,
        plan: PartPlan,
        metadata: dict[str, str],
        expected_etag: str | None,
        expected_md5: str | None,
        upload_id: str | None,
        on_upload_id: Callable[[str | None], None] | None,
        reporter: ProgressReporter,
        concurrency: int,
    ) -> tuple[str, str | None, int, int, int]:
        client = self.get_conn()
        target = f"s3://{bucket}/{key}"
        remote_parts = self._list_parts(bucket, key, upload_id) if upload_id else None
        if upload_id and remote_parts is None:
            self.log.warning("upload id %s of %s no longer exists; starting a new upload", upload_id, target)
            upload_id = None
        if upload_id is None:
            try:
                upload_id = client.create_multipart_upload(
                    Bucket=bucket, Key=key, Metadata=metadata, **self._checksum_argument()
                )["UploadId"]
            except (ClientError, BotoCoreError) as error:
                raise self._translate(error, f"starting the upload of {target}") from error
            remote_parts = {}
            self.log.info("multipart upload started %s", kv(target=target, upload_id=upload_id))
        else:
            self.log.info(
                "resuming multipart upload %s",
                kv(target=target, upload_id=upload_id, parts_in_s3=len(remote_parts or {})),
            )
        if on_upload_id is not None:
            on_upload_id(upload_id)
        whole = SequentialMd5(path, plan) if expected_md5 else None
        stop = threading.Event()
        try:
            if whole is not None:
                whole.start()
            outcomes = self._run_parts(
                path, bucket, key, plan, upload_id, remote_parts or {}, whole, reporter, stop, concurrency
            )
            _check_unchanged(path, stat)
            etag = etag_from_part_digests([o.digest for o in outcomes], multipart=True)
            md5 = whole.hexdigest() if whole is not None else None
            if expected_etag is not None and etag != expected_etag:
                raise IntegrityError(
                    f"{path} was read with ETag {etag}, but {expected_etag} was expected: the local file "
                    f"differs from the inventory. The upload was not completed; {target} is unchanged."
                )
            if expected_md5 is not None and md5 != expected_md5:
                raise IntegrityError(
                    f"{path} was read with MD5 {md5}, but the inventory says {expected_md5}: the local file "
                    f"differs from the acquired one. The upload was not completed; {target} is unchanged."
                )
            try:
                response = client.complete_multipart_upload(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [o.completed_part() for o in outcomes]},
                )
            except (ClientError, BotoCoreError) as error:
                raise self._translate(error, f"completing {target}") from error
            returned = normalize_etag(response.get("ETag", ""))
            if returned and returned != etag:
                raise IntegrityError(
                    f"S3 completed {target} with ETag {returned}, but the parts read locally give {etag}. "
                    "The object is corrupt; re-run the backup."
                )
        except BaseException as error:
            stop.set()
            if whole is not None:
                whole.stop()
            if isinstance(error, PermanentBackupError):
                self._abort(bucket, key, upload_id, reason=str(error))
                if on_upload_id is not None:
                    on_upload_id(None)
            else:
                self.log.warning(
                    "upload of %s interrupted (%s); multipart upload %s is kept so a retry resumes it",
                    target,
                    error,
                    upload_id,
                )
            raise
        if on_upload_id is not None:
            on_upload_id(None)
        sent = [o for o in outcomes if not o.reused]
        if whole is not None and whole.reread_bytes:
            self.log.info("whole-file MD5 re-read %.1f MiB from the page cache", whole.reread_bytes / MIB)
        return etag, md5, len(sent), len(outcomes) - len(sent), sum(o.part.length for o in sent)

    def _run_parts(
        self,
        path: Path,
        bucket: str,
        key: str,
        plan: PartPlan,
        upload_id: str,
        remote_parts: dict[int, _RemotePart],
        whole: SequentialMd5 | None,
        reporter: ProgressReporter,
        stop: threading.Event,
        concurrency: int,
    ) -> list[_PartOutcome]:
        """Hash and send (or re-check) every part on a bounded pool; stop all at the first failure."""
        client = self.get_conn()

        def run(part: Part) -> _PartOutcome:
            body = PartBody(
                path,
                part,
                on_new_bytes=whole.offer if whole is not None else None,
                on_progress=reporter.add,
                should_stop=stop.is_set,
            )
            try:
                remote = remote_parts.get(part.number)
                if remote is not None and remote.size == part.length:
                    body.drain()
                    if remote.etag == body.hexdigest():
                        return _PartOutcome(part, remote.etag, body.digest(), reused=True, crc32=remote.crc32)
                    self.log.info("part %d in S3 differs from the local part; sending it again", part.number)
                body.seek(0)
                try:
                    response = client.upload_part(
                        Bucket=bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=part.number,
                        Body=body,
                        ContentLength=part.length,
                    )
                except (ClientError, BotoCoreError) as error:
                    if stop.is_set():
                        raise UploadStopped("stopped") from error
                    raise self._translate(
                        error, f"sending part {part.number} of s3://{bucket}/{key}"
                    ) from error
                returned = normalize_etag(response["ETag"])
                if returned != body.hexdigest():
                    raise IntegrityError(
                        f"S3 acknowledged part {part.number} of s3://{bucket}/{key} with ETag {returned}, but "
                        f"the bytes read have MD5 {body.hexdigest()}: corrupted in transit or the file changed."
                    )
                return _PartOutcome(
                    part, returned, body.digest(), reused=False, crc32=response.get("ChecksumCRC32")
                )
            finally:
                body.close()

        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kraken-part")
        futures: list[Future[_PartOutcome]] = [pool.submit(run, part) for part in plan.parts()]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
            if failed:
                raise _first_real_error(failed)
            return [future.result() for future in futures]
        finally:
            # On any failure (ours, or e.g. Airflow's task timeout) stop the other parts quickly.
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)

    def _list_parts(self, bucket: str, key: str, upload_id: str) -> dict[int, _RemotePart] | None:
        """Parts already in S3 for ``upload_id`` (number → (etag, size)); None if the upload is gone.

        Uses ListParts with the stored id, so s3:ListBucketMultipartUploads is never needed.
        """
        parts: dict[int, _RemotePart] = {}
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
        try:
            while True:
                response = self.get_conn().list_parts(**kwargs)
                for item in response.get("Parts", []):
                    parts[int(item["PartNumber"])] = _RemotePart(
                        normalize_etag(item["ETag"]), int(item["Size"]), item.get("ChecksumCRC32")
                    )
                if not response.get("IsTruncated"):
                    return parts
                kwargs["PartNumberMarker"] = response["NextPartNumberMarker"]
        except ClientError as error:
            if _error_code(error) == "NoSuchUpload" or _error_status(error) == 404:
                return None
            raise self._translate(error, f"listing parts of upload {upload_id}") from error
        except BotoCoreError as error:
            raise self._translate(error, f"listing parts of upload {upload_id}") from error

    def _checksum_argument(self) -> dict[str, str]:
        """Declare CRC32 part checksums on new uploads, unless the connection turned checksums off
        (``config_kwargs: {"request_checksum_calculation": "when_required"}``, e.g. for stores without them)."""
        if getattr(self.config, "request_checksum_calculation", None) == "when_required":
            return {}
        return {"ChecksumAlgorithm": "CRC32"}

    def _abort(self, bucket: str, key: str, upload_id: str, *, reason: str) -> None:
        """Abort our upload after a permanent failure; never let cleanup hide the original error."""
        try:
            self.get_conn().abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            self.log.warning("aborted multipart upload %s of s3://%s/%s: %s", upload_id, bucket, key, reason)
        except (ClientError, BotoCoreError) as error:
            self.log.warning(
                "could not abort multipart upload %s of s3://%s/%s (%s); the bucket's lifecycle rule will "
                "remove it",
                upload_id,
                bucket,
                key,
                error,
            )

    def _translate(self, error: Exception, doing: str) -> KrakenBackupError:
        """Map a botocore error to our permanent/transient classes with a message a person can act on."""
        if isinstance(error, ClientError):
            code, status = _error_code(error), _error_status(error)
            if code in _DENIED_CODES or status == 403:
                return BucketAccessDeniedError(
                    f"access denied while {doing} (connection '{self.aws_conn_id}', {code}): grant the IAM "
                    "permissions listed in the README or check the credentials."
                )
            if code in _MISSING_BUCKET_CODES:
                return BucketNotFoundError(f"bucket missing while {doing}: {error}")
            if code in _TRANSIENT_CODES or status >= 500:
                return S3TransientError(f"S3 error while {doing} ({code}); retrying will resume: {error}")
            return PermanentBackupError(f"S3 refused the request while {doing} ({code}): {error}")
        return S3TransientError(
            f"network error while {doing} ({type(error).__name__}: {error}); retrying will resume"
        )

    def _log_summary(self, result: UploadResult) -> None:
        seconds = max(result.seconds, 1e-9)
        self.log.info(
            "upload summary %s",
            kv(
                key=result.key,
                bucket=result.bucket,
                size=result.size,
                seconds=result.seconds,
                mib_s=result.bytes_sent / MIB / seconds,
                parts_sent=result.parts_sent,
                parts_reused=result.parts_reused,
                skipped=result.skipped,
                bytes_read=result.bytes_read,
                etag=result.etag,
                reason=result.skip_reason or ("replaced" if result.replaced_etag else "uploaded"),
            ),
        )


def _raise_body_failure(request: Any, **_: Any) -> None:
    """botocore ``before-send`` handler: a body that failed to read (file gone, upload stopped) is not
    worth a retry; raising here, outside botocore's HTTP error wrapping, ends the call with the real error."""
    if isinstance(request.body, PartBody):
        request.body.raise_failure()


def _first_real_error(failed: list[Future[_PartOutcome]]) -> BaseException:
    """The error that stopped the parts, not the ``UploadStopped`` of the parts it stopped."""
    errors = [f.exception() for f in failed]
    real = [e for e in errors if e is not None and not isinstance(e, UploadStopped)]
    return (real or errors)[0]  # type: ignore[return-value]


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _error_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _stat_or_fail(path: Path) -> os.stat_result:
    try:
        stat = os.stat(path)
    except FileNotFoundError as error:
        raise LocalFileChangedError(f"local file {path} does not exist; nothing was uploaded") from error
    if not os.path.isfile(path):
        raise LocalFileChangedError(f"{path} is not a regular file; nothing was uploaded")
    return stat


def _check_unchanged(path: Path, before: os.stat_result) -> None:
    """The file must be the one we started reading: same inode, size and modification time."""
    try:
        after = os.stat(path)
    except FileNotFoundError as error:
        raise LocalFileChangedError(f"{path} disappeared during the upload") from error
    if (after.st_ino, after.st_size, after.st_mtime_ns) != (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    ):
        raise LocalFileChangedError(
            f"{path} changed during the upload (size {before.st_size} → {after.st_size}, mtime changed); the "
            "upload was not completed. Find out what writes to the file, then re-run."
        )
