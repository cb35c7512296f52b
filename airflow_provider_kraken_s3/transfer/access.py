"""One S3 endpoint as the transfer engine sees it: a boto3 client, and every request's errors translated.

Every call the engine makes goes through :meth:`S3Access.call`, so there is exactly one place where a
botocore error becomes one of the provider's error classes (:mod:`airflow_provider_kraken_s3.core.errors`),
with a message saying what was being done and what a person can do about it. No Airflow here.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
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

#: IAM permissions the backup needs, named in every "access denied" message.
PERMISSIONS = (
    "s3:ListBucket, s3:GetBucketVersioning, s3:GetBucketTagging, s3:PutObject, s3:GetObject, "
    "s3:AbortMultipartUpload and s3:ListMultipartUploadParts"
)


@dataclass(frozen=True)
class S3Access:
    """A boto3 S3 client plus what error messages need to name: the connection, endpoint and region.

    :param crc32_parts: declare CRC32 part checksums on new multipart uploads (off when the connection sets
        ``request_checksum_calculation: when_required`` for stores without them).
    """

    client: Any
    conn_id: str | None = None
    endpoint: str | None = None
    region: str | None = None
    crc32_parts: bool = True

    def describe(self, bucket: str) -> str:
        endpoint = self.endpoint or "AWS default endpoint"
        return f"bucket '{bucket}' (region {self.region or 'default'}, {endpoint})"

    def call(
        self, operation: str, doing: str, *, none_on: Collection[S3ErrorKind] = (), **params: Any
    ) -> dict[str, Any] | None:
        """``client.<operation>(**params)``; returns None for error kinds in ``none_on``, raises ours else."""
        try:
            return getattr(self.client, operation)(**params)
        except ClientError as error:
            if classify_s3_error(error_status(error), error_code(error)) in none_on:
                return None
            raise self.translate(error, doing) from error
        except BotoCoreError as error:
            raise self.translate(error, doing) from error

    def translate(self, error: Exception, doing: str) -> KrakenBackupError:
        """The one mapping of botocore errors to the provider's classes, with words a person can act on."""
        conn = f"connection '{self.conn_id}'"
        if isinstance(error, (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError)):
            return PermanentBackupError(
                f"no usable AWS credentials while {doing} ({conn}: {error}). Set login/password (access key "
                "and secret) on the connection, or give the worker a role or profile."
            )
        if isinstance(error, ParamValidationError):
            return InvalidInputError(f"S3 request invalid while {doing}: {error}")
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
        return PermanentBackupError(f"S3 refused the request while {doing} ({said})")


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "") or "")


def error_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def describe_error(error: ClientError) -> str:
    """``Code: message`` as S3 sent it; stores that send an empty ``<Message>`` still read well."""
    code = error_code(error) or f"HTTP {error_status(error)}"
    message = str(error.response.get("Error", {}).get("Message", "") or "").strip()
    return f"{code}: {message}" if message else code
