"""One S3 endpoint as the transfer engine sees it: a boto3 client, and every request's errors translated.

Every call the engine makes goes through :meth:`S3Access.call`, so there is exactly one place where a
botocore error becomes one of the provider's error classes (:mod:`airflow_provider_kraken_s3.core.errors`),
with a message saying what was being done and what a person can do about it. No Airflow here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)

from airflow_provider_kraken_s3.core.errors import (
    BucketAccessDeniedError,
    BucketNotFoundError,
    IntegrityError,
    InvalidInputError,
    KrakenBackupError,
    PermanentBackupError,
    S3ErrorKind,
    S3TransientError,
    UploadVanishedError,
    classify_s3_error,
)
from airflow_provider_kraken_s3.core.log import Log

#: IAM permissions the backup needs, named in every "access denied" message.
PERMISSIONS = (
    "s3:ListBucket, s3:GetBucketVersioning, s3:GetBucketTagging, s3:PutObject, s3:GetObject, "
    "s3:GetObjectAttributes, s3:AbortMultipartUpload and s3:ListMultipartUploadParts (with SSE-KMS also "
    "kms:GenerateDataKey and kms:Decrypt on the key)"
)

#: The client setting that makes botocore send request checksums only where an operation requires one.
NO_STREAMED_CHECKSUMS = {"request_checksum_calculation": "when_required"}

#: Operations that send a body with a request checksum (botocore's, or our CRC64NVME): over HTTPS as an ``aws-chunked`` stream with a
#: trailer and no Content-Length, which some stores (Ceph RGW 16) refuse with ``411 MissingContentLength``.
UPLOAD_OPERATIONS = frozenset({"put_object", "upload_part"})

#: Object-level operations that carry the SSE-C key (S3 refuses to read or write an SSE-C object without it;
#: CompleteMultipartUpload and ListParts need it for objects created with a checksum algorithm, as ours are).
#: Bucket-level calls, listings, AbortMultipartUpload and DeleteObject never take it.
SSE_C_OPERATIONS = frozenset(
    {
        "put_object",
        "create_multipart_upload",
        "upload_part",
        "complete_multipart_upload",
        "list_parts",
        "head_object",
        "get_object",
        "get_object_attributes",
    }
)

#: SSE-C's one algorithm.
SSE_C_ALGORITHM = "AES256"

_log = logging.getLogger(__name__)
_refusing_endpoints: set[str] = set()
_refusing_lock = threading.Lock()


def refuses_streamed_checksums(endpoint: str | None) -> bool:
    """Whether this process saw ``endpoint`` refuse botocore's streamed checksums (411 MissingContentLength)."""
    return _endpoint_key(endpoint) in _refusing_endpoints


def forget_checksum_fallbacks() -> None:
    """Forget every endpoint seen refusing streamed checksums (tests: start as a fresh process would)."""
    with _refusing_lock:
        _refusing_endpoints.clear()


def _endpoint_key(endpoint: str | None) -> str:
    return (endpoint or "AWS default endpoint").rstrip("/")


def sends_streamed_checksums(client: Any) -> bool:
    """Whether ``client`` adds botocore's default request checksums (off with ``when_required``)."""
    config = getattr(getattr(client, "meta", None), "config", None)
    return getattr(config, "request_checksum_calculation", None) != "when_required"


class SseCustomerKey:
    """A customer-provided encryption key (SSE-C): 32 bytes, never shown.

    Its ``repr`` and ``str`` name only the key's MD5 (what S3 itself echoes), so a key that reaches a log line,
    an exception or a record by accident reveals nothing.
    """

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 32:
            raise InvalidInputError("an SSE-C key must be exactly 32 bytes (AES-256); the one given is not")
        self._key = key

    @classmethod
    def from_text(cls, text: str, *, where: str) -> SseCustomerKey:
        """The key from its base64 form (``openssl rand -base64 32``); ``where`` names its source in errors,
        which never quote the text itself."""
        try:
            key = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError) as error:
            raise InvalidInputError(f"the SSE-C key in {where} is not base64 text") from error
        if len(key) != 32:
            raise InvalidInputError(
                f"the SSE-C key in {where} decodes to {len(key)} bytes; SSE-C needs 32 (base64 of 32 random "
                "bytes, e.g. openssl rand -base64 32)"
            )
        return cls(key)

    @property
    def text(self) -> str:
        """The base64 form, as it travels in the request header: what a secrets masker must hide."""
        return base64.b64encode(self._key).decode()

    @property
    def md5(self) -> str:
        """The key's MD5 (base64), as S3 echoes it in ``x-amz-server-side-encryption-customer-key-MD5``."""
        return base64.b64encode(hashlib.md5(self._key).digest()).decode()

    def request_parameters(self) -> dict[str, Any]:
        """The SSE-C parameters of a request, the key base64-encoded and its MD5 given: botocore encodes them
        itself only for some operations (not ``GetObjectAttributes`` or ``ListParts``), and skips that where
        the MD5 is given, so every operation gets the same three headers."""
        return {
            "SSECustomerAlgorithm": SSE_C_ALGORITHM,
            "SSECustomerKey": self.text,
            "SSECustomerKeyMD5": self.md5,
        }

    def hide(self, text: str) -> str:
        """``text`` with the key's base64 form replaced by ``***`` (for error messages)."""
        return text.replace(self.text, "***")

    def __repr__(self) -> str:
        return f"SseCustomerKey(md5={self.md5})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SseCustomerKey) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self.md5)


@dataclass(frozen=True)
class S3Access:
    """A boto3 S3 client plus what error messages need to name: the connection, endpoint and region.

    :param declare_checksums: declare the full-object CRC64NVME on new uploads (single PUT and multipart, see
        :meth:`declares_checksums`); off when the connection sets ``request_checksum_calculation:
        when_required`` for stores without additional checksums.
    :param without_streamed_checksums: builds a client for the same connection with
        ``request_checksum_calculation="when_required"``. When an upload call is refused with
        ``411 MissingContentLength`` (the store cannot read botocore's ``aws-chunked`` checksum trailer, e.g. Ceph
        RGW 16 over HTTPS), the endpoint is remembered for the process, that client is built and the call is
        retried with it once, **without the checksum we declared** (``ChecksumAlgorithm`` would make botocore
        stream one again); every later call to that endpoint uses it, and from then on no request to it
        declares a checksum (:meth:`declares_checksums`). Such a store keeps none: our per-part MD5s
        (Content-MD5 and the returned ETags) still prove every part.
    :param log: where the one warning about that fallback goes.
    :param sse_customer_key: the SSE-C key of the connection: added (``SSECustomerAlgorithm=AES256``,
        ``SSECustomerKey``, ``SSECustomerKeyMD5``) to every object-level request
        (:data:`SSE_C_OPERATIONS`) that does not name one itself.
    """

    client: Any
    conn_id: str | None = None
    endpoint: str | None = None
    region: str | None = None
    declare_checksums: bool = True
    without_streamed_checksums: Callable[[], Any] | None = None
    log: Log | None = None
    sse_customer_key: SseCustomerKey | None = field(default=None, repr=False)
    _fallback: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def declares_checksums(self) -> bool:
        """Whether a new request may declare our CRC64NVME: the connection allows streamed request checksums
        and this process has not seen the endpoint refuse them (411). Asked before every request, so an
        upload that met the refusal declares nothing from then on (nor does any later upload there)."""
        return self.declare_checksums and not refuses_streamed_checksums(self.endpoint)

    def describe(self, bucket: str) -> str:
        endpoint = self.endpoint or "AWS default endpoint"
        return f"bucket '{bucket}' (region {self.region or 'default'}, {endpoint})"

    def call(
        self, operation: str, doing: str, *, none_on: Collection[S3ErrorKind] = (), **params: Any
    ) -> dict[str, Any] | None:
        """``client.<operation>(**params)``; returns None for error kinds in ``none_on``, raises ours else."""
        if self.sse_customer_key is not None and operation in SSE_C_OPERATIONS:
            params = {**self.sse_customer_key.request_parameters(), **params}
        client = self._client()
        try:
            try:
                return getattr(client, operation)(**params)
            except ClientError as error:
                if not self._refused_streamed_checksums(operation, error, client):
                    raise
                return getattr(self._switch_to_fallback(operation), operation)(
                    **_without_checksums(_rewound(params))
                )
        except ClientError as error:
            if classify_s3_error(error_status(error), error_code(error)) in none_on:
                return None
            raise self.translate(error, doing) from error
        except BotoCoreError as error:
            raise self.translate(error, doing) from error

    def _client(self) -> Any:
        """The connection's client, or its checksum fallback once this endpoint is known to need it."""
        if self.without_streamed_checksums is None or not refuses_streamed_checksums(self.endpoint):
            return self.client
        if not sends_streamed_checksums(self.client):
            return self.client
        with _refusing_lock:
            if "client" not in self._fallback:
                self._fallback["client"] = self.without_streamed_checksums()
            return self._fallback["client"]

    def _refused_streamed_checksums(self, operation: str, error: ClientError, client: Any) -> bool:
        return (
            operation in UPLOAD_OPERATIONS
            and error_status(error) == 411
            and error_code(error) == "MissingContentLength"
            and self.without_streamed_checksums is not None
            and sends_streamed_checksums(client)
        )

    def _switch_to_fallback(self, operation: str) -> Any:
        """Remember the endpoint (one warning per process), and return the fallback client."""
        key = _endpoint_key(self.endpoint)
        with _refusing_lock:
            first = key not in _refusing_endpoints
            _refusing_endpoints.add(key)
        if first:
            (self.log or _log).warning(
                "S3 endpoint %s refused botocore's streamed request checksums (%s: 411 MissingContentLength); "
                "sending requests to it without them (request_checksum_calculation=when_required) for the rest "
                'of this process; every part is still proven by its MD5. Set "config_kwargs": '
                '{"request_checksum_calculation": "when_required"} in the extra of connection \'%s\' to '
                "skip this probe.",
                key,
                operation,
                self.conn_id,
            )
        return self._client()

    def translate(self, error: Exception, doing: str) -> KrakenBackupError:
        """The one mapping of botocore errors to the provider's classes, with words a person can act on."""
        conn = f"connection '{self.conn_id}'"
        if isinstance(error, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
            return PermanentBackupError(
                f"no usable AWS credentials while {doing} ({conn}: {error}). Set login/password (access key "
                "and secret) on the connection, or give the worker a role or profile."
            )
        if isinstance(error, ParamValidationError):
            said = str(error) if self.sse_customer_key is None else self.sse_customer_key.hide(str(error))
            return InvalidInputError(f"S3 request invalid while {doing}: {said}")
        if not isinstance(error, ClientError):
            return S3TransientError(
                f"network error while {doing} ({type(error).__name__}: {error}); retrying will resume"
            )
        code, status = error_code(error), error_status(error)
        said = describe_error(error)
        kind = classify_s3_error(status, code)
        if kind is S3ErrorKind.TRANSIENT:
            return S3TransientError(f"S3 error while {doing} ({said}); retrying will resume")
        if kind is S3ErrorKind.NO_SUCH_BUCKET:
            return BucketNotFoundError(f"bucket missing while {doing} ({said})")
        if kind is S3ErrorKind.NO_SUCH_UPLOAD:
            return UploadVanishedError(
                f"the multipart upload no longer exists while {doing} ({said}): it was aborted by a lifecycle "
                "rule or by hand. The next attempt starts a new upload."
            )
        if kind is S3ErrorKind.BAD_DIGEST:
            return IntegrityError(
                f"S3 refused the bytes while {doing} ({said}): they do not match their checksum (corrupted in "
                "transit, or the local file differs from the inventory). Nothing was stored."
            )
        if kind is S3ErrorKind.DENIED:
            return BucketAccessDeniedError(
                f"access denied while {doing} ({conn}, {said}): grant {PERMISSIONS} on the bucket, or check "
                "the credentials."
            )
        if status == 411 and code == "MissingContentLength":
            return PermanentBackupError(
                f"S3 refused the request while {doing} ({said}): the store cannot read botocore's streamed "
                'request checksums. Set "config_kwargs": {"request_checksum_calculation": "when_required"} in '
                f"the extra of {conn}."
            )
        return PermanentBackupError(f"S3 refused the request while {doing} ({said})")


def _rewound(params: dict[str, Any]) -> dict[str, Any]:
    """The same request parameters with the body seeked back to its start, to send it again."""
    body = params.get("Body")
    if body is not None and hasattr(body, "seek"):
        body.seek(0)
    return params


def _without_checksums(params: dict[str, Any]) -> dict[str, Any]:
    """The request without any checksum we declared: an explicit ``ChecksumAlgorithm`` makes botocore stream
    one even from a ``when_required`` client, which the store has just refused."""
    return {name: value for name, value in params.items() if not name.startswith("Checksum")}


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "") or "")


def error_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def describe_error(error: ClientError) -> str:
    """``Code: message`` as S3 sent it; stores that send an empty ``<Message>`` still read well."""
    code = error_code(error) or f"HTTP {error_status(error)}"
    message = str(error.response.get("Error", {}).get("Message", "") or "").strip()
    return f"{code}: {message}" if message else code
