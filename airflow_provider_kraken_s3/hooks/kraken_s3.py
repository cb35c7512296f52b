"""KrakenS3Hook: the Amazon provider's S3Hook plus verified, resumable uploads and backup-bucket checks.

A thin face: the connection, the client's configuration and Airflow's logging live here; what is uploaded
and how it is proven lives in :mod:`airflow_provider_kraken_s3.transfer` (no Airflow), and the decisions in
:mod:`airflow_provider_kraken_s3.core` (no I/O).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from botocore.config import Config

from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.parts import DEFAULT_PART_SIZE
from airflow_provider_kraken_s3.transfer import buckets, remote
from airflow_provider_kraken_s3.transfer.access import (
    NO_STREAMED_CHECKSUMS,
    S3Access,
    SseCustomerKey,
    refuses_streamed_checksums,
)
from airflow_provider_kraken_s3.transfer.streams import PartBody
from airflow_provider_kraken_s3.transfer.upload import UploadIdCallback, UploadResult, VerifiedUpload

try:  # Airflow 3: the task SDK's masker (what task logs go through)
    from airflow.sdk.log import mask_secret
except ImportError:  # Airflow 2.11
    from airflow.utils.log.secrets_masker import mask_secret  # type: ignore[no-redef,import-not-found,unused-ignore]

__all__ = ["KrakenS3Hook", "UploadResult"]

#: Connection extra holding the SSE-C key as base64 text (``openssl rand -base64 32``).
SSE_C_KEY_EXTRA = "sse_customer_key"
#: Connection extra naming a file on the worker that holds the SSE-C key (base64 text, or the 32 raw bytes).
SSE_C_KEY_FILE_EXTRA = "sse_customer_key_file"


class KrakenS3Hook(S3Hook):
    """S3Hook with verified, resumable multipart uploads and actionable bucket checks.

    Uses the Amazon provider's ``aws`` connection (``aws_conn_id``, default ``aws_default``): credentials,
    region and ``endpoint_url`` come from it, so S3-compatible stores (MinIO, Ceph) work too.

    :param max_concurrency: parts in flight at once per file (each holds one 1 MiB block in memory).
    :param expected_bucket_owner: the AWS account id that must own every bucket we touch (S3 refuses the
        request otherwise), against a bucket name taken over by someone else.

    **SSE-C** (customer-provided keys): the connection's extra names the key, either inline as
    ``"sse_customer_key": "<base64 of 32 bytes>"`` or as ``"sse_customer_key_file": "/path/on/the/worker"``
    (a file holding the base64 text or the 32 raw bytes; keeps the key out of the connection). Every object
    request then carries it (:class:`~..transfer.access.S3Access`). The key is registered with Airflow's
    secrets masker as soon as it is read, and is never logged or recorded.
    """

    hook_name = "Kraken S3 (verified upload)"

    #: Transient errors are retried inside botocore first (standard mode, backoff), then by Airflow.
    #: Request checksums stay on (the upload declares CRC64NVME): S3 validates it on arrival, and over HTTPS
    #: botocore streams it as a trailer in the same read pass. Payload signing is off: over plain HTTP (on-prem stores)
    #: botocore would otherwise SHA-256 every part once more, a third checksum that buys nothing.
    default_client_config = Config(
        retries={"mode": "standard", "max_attempts": 8},
        s3={"payload_signing_enabled": False},
        connect_timeout=20,
        read_timeout=300,
        max_pool_connections=32,
    )

    def __init__(
        self, *args: Any, max_concurrency: int = 4, expected_bucket_owner: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self.max_concurrency = max_concurrency
        self.expected_bucket_owner = expected_bucket_owner
        self._sse_c: dict[str, SseCustomerKey | None] = {}

    def get_conn(self) -> Any:
        """The boto3 client, with our two request handlers registered."""
        return self._with_handlers(super().get_conn())

    def _client_without_streamed_checksums(self) -> Any:
        """A new client for this connection sending request checksums only where required (see
        :class:`..transfer.access.S3Access`: built once an endpoint refuses botocore's streamed checksums)."""
        config = self.config.merge(Config(**NO_STREAMED_CHECKSUMS))
        return self._with_handlers(self.get_client_type(region_name=self.region_name, config=config))

    def _with_handlers(self, client: Any) -> Any:
        for operation in ("PutObject", "UploadPart"):
            client.meta.events.register_first(
                f"before-send.s3.{operation}",
                _raise_body_failure,
                unique_id=f"kraken-body-failure-{operation}",
            )
        if self.expected_bucket_owner:
            client.meta.events.register(
                "before-parameter-build.s3",
                _expect_owner(self.expected_bucket_owner),
                unique_id="kraken-expected-bucket-owner",
            )
        return client

    @property
    def config(self) -> Config:
        """Our client defaults, overridden by anything the connection's ``config_kwargs`` sets; without
        streamed request checksums once this process saw the endpoint refuse them."""
        config = self.default_client_config
        if refuses_streamed_checksums(self.conn_config.endpoint_url):
            config = config.merge(Config(**NO_STREAMED_CHECKSUMS))
        from_connection = self.conn_config.botocore_config
        return config if from_connection is None else config.merge(from_connection)

    def sse_customer_key(self) -> SseCustomerKey | None:
        """The connection's SSE-C key (see the class), masked in logs from here on; None without one. Read
        once per hook."""
        if "sse_customer_key" not in self._sse_c:
            self._sse_c["sse_customer_key"] = self._read_sse_customer_key()
        return self._sse_c["sse_customer_key"]

    def _read_sse_customer_key(self) -> SseCustomerKey | None:
        extra = self.conn_config.extra_config or {}
        inline, path = extra.get(SSE_C_KEY_EXTRA), extra.get(SSE_C_KEY_FILE_EXTRA)
        where = f"the extra of connection '{self.aws_conn_id}'"
        if inline and path:
            raise InvalidInputError(
                f"{where} sets both {SSE_C_KEY_EXTRA} and {SSE_C_KEY_FILE_EXTRA}; keep one of them"
            )
        if inline:
            mask_secret(str(inline))
            key = SseCustomerKey.from_text(str(inline), where=f"{where} ({SSE_C_KEY_EXTRA})")
        elif path:
            key = _key_from_file(Path(str(path)), where=f"{where} ({SSE_C_KEY_FILE_EXTRA}: {path})")
        else:
            return None
        mask_secret(key.text)
        return key

    def access(self) -> S3Access:
        """What the Airflow-free transfer engine needs: the client and the names its messages use."""
        return S3Access(
            client=self.get_conn(),
            conn_id=self.aws_conn_id,
            endpoint=self.conn_config.endpoint_url,
            region=self.conn_config.region_name,
            declare_checksums=getattr(self.config, "request_checksum_calculation", None) != "when_required",
            without_streamed_checksums=self._client_without_streamed_checksums,
            log=self.log,
            sse_customer_key=self.sse_customer_key(),
        )

    def check_bucket(self, bucket: str) -> None:
        """Fail fast, before any byte is read, when the bucket is missing or not ours to use."""
        buckets.check_bucket(self.access(), bucket)

    def create_backup_bucket(self, bucket: str, *, tags: dict[str, str] | None = None) -> None:
        """Create a private, versioned, encrypted, tagged bucket (see :func:`..transfer.buckets.create_backup_bucket`)."""
        buckets.create_backup_bucket(self.access(), bucket, tags=tags or {}, log=self.log)

    def head(self, bucket: str, key: str) -> RemoteObject | None:
        """ETag, size and user metadata of an object, or None when there is none."""
        return remote.head(self.access(), bucket, key)

    def test_connection(self) -> tuple[bool, str]:
        """Connections UI test: list buckets on the configured endpoint (STS is absent on MinIO & co)."""
        try:
            response = self.get_conn().list_buckets()
        except Exception as error:
            return False, f"{type(error).__name__}: {error}"
        endpoint = self.conn_config.endpoint_url or "AWS"
        return True, f"Connected to {endpoint}; {len(response.get('Buckets', []))} bucket(s) visible."

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
        on_upload_id: UploadIdCallback | None = None,
        progress: Callable[[int, int], None] | None = None,
        max_concurrency: int | None = None,
        versioned: bool | None = None,
        storage_class: str | None = None,
        cancel: threading.Event | None = None,
    ) -> UploadResult:
        """Upload ``local_path`` to ``s3://bucket/key`` and prove every byte arrived.

        :param part_size: bytes per part (whole MiB); with ``expected_etag`` it must be the part size that
            ETag was computed with, and is used exactly. Without, it is raised (and logged) if the file would
            need more than 10,000 parts.
        :param expected_etag: the inventory's ETag; the part MD5s prove the bytes against it in one read pass,
            and an object already holding it is skipped without reading the file.
        :param expected_md5: the inventory's whole-file MD5; without ``expected_etag`` it is verified in the
            same read pass (a second MD5 over the file) before the upload is completed.
        :param upload_id: a multipart upload of this key, created with this part size and expectation.
        :param on_upload_id: called with ``(upload_id, part_size)`` before any part is sent (persist it to
            resume after a crash), and with ``(None, part_size)`` once the upload is completed or aborted.
        :param progress: called with ``(bytes done, total)`` as parts are read.
        :param versioned: whether the bucket keeps old versions (None: asked when an object would be replaced).
        :param storage_class: S3 storage class of the new object (None: the bucket's default).
        :param cancel: set it from another thread to stop the upload at the next block (kept for a resume).
        :raises PermanentBackupError: integrity mismatch, local file missing, changed or unreadable, missing
            bucket, denied access, an object that may not be replaced.
        :raises TransientBackupError: network trouble, throttling, 5xx, an interruption; kept to resume.
        """
        job = VerifiedUpload(
            access=self.access(),
            path=Path(local_path),
            bucket=bucket,
            key=key,
            part_size=part_size,
            log=self.log,
            expected_etag=expected_etag,
            expected_md5=expected_md5.strip().lower() if expected_md5 else None,
            upload_id=upload_id,
            on_upload_id=on_upload_id,
            progress=progress,
            max_concurrency=max_concurrency or self.max_concurrency,
            versioned=versioned,
            storage_class=storage_class,
            cancel=cancel or threading.Event(),
        )
        return job.run()


def _key_from_file(path: Path, *, where: str) -> SseCustomerKey:
    """An SSE-C key file: the 32 raw bytes, or their base64 text (a trailing newline is fine)."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise InvalidInputError(f"the SSE-C key file of {where} cannot be read ({error.strerror})") from error
    if len(content) == 32:
        return SseCustomerKey(content)
    try:
        text = content.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInputError(
            f"the SSE-C key file of {where} holds neither 32 raw bytes nor base64 text"
        ) from None
    mask_secret(text.strip())
    return SseCustomerKey.from_text(text, where=where)


def _raise_body_failure(request: Any, **_: Any) -> None:
    """botocore ``before-send`` handler: a body that failed to read (file gone, upload stopped) is not
    worth a retry; raising here, outside botocore's HTTP error wrapping, ends the call with the real error."""
    if isinstance(request.body, PartBody):
        request.body.raise_failure()


def _expect_owner(account_id: str) -> Callable[..., None]:
    """``before-parameter-build`` handler adding ``ExpectedBucketOwner`` to every request that takes it."""

    def add(params: dict[str, Any], model: Any, **_: Any) -> None:
        if "ExpectedBucketOwner" in model.input_shape.members and "ExpectedBucketOwner" not in params:
            params["ExpectedBucketOwner"] = account_id

    return add
