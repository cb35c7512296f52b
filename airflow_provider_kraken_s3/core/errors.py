"""Exceptions of the provider, split by what a retry can do about them.

``PermanentBackupError`` subclasses describe problems that no retry will fix (a person must act: create the
bucket, fix the IAM policy, find the changed or missing file). The operator fails those without retries.
``TransientBackupError`` subclasses (network, throttling, 5xx, MongoDB blips) are re-raised so Airflow retries,
and a retry resumes where the last attempt stopped.
"""

from __future__ import annotations

import enum


class KrakenBackupError(Exception):
    """Base class of all errors raised by this provider."""


class PermanentBackupError(KrakenBackupError):
    """Retrying will not help; the message says what a person has to change."""


class TransientBackupError(KrakenBackupError):
    """Temporary trouble (network, throttling, server errors); a retry is expected to succeed or resume."""


class InvalidInputError(PermanentBackupError, ValueError):
    """A path, id, setting or inventory entry that cannot be backed up as given."""


class BucketNotFoundError(PermanentBackupError):
    """The target bucket does not exist."""


class BucketAccessDeniedError(PermanentBackupError):
    """The credentials may not use the target bucket or object."""


class IntegrityError(PermanentBackupError):
    """Bytes in S3 or on disk differ from what was read, sent or inventoried."""


class UnprovableObjectError(IntegrityError):
    """S3 holds the bytes, but nothing it answers can prove them: an SSE-KMS/SSE-C object (its ETag is not an
    MD5) on a store that keeps no checksum. Never a backup; the upload is aborted, the words say why."""


class LocalFileChangedError(PermanentBackupError):
    """The local file disappeared or changed while (or since) it was read."""


class RawFileNotFoundError(PermanentBackupError):
    """No RawFile document with the given id exists in MongoDB."""


class MongoUnavailableError(TransientBackupError):
    """MongoDB could not be reached; Airflow should retry the task."""


class S3TransientError(TransientBackupError):
    """S3 could not be reached or asked us to slow down; the multipart upload is kept for a resume."""


class LocalReadError(PermanentBackupError):
    """Reading the local file failed (EIO, ESTALE, a symlink loop): the copy or its file system needs a look."""


class LeaseHeldError(TransientBackupError):
    """Another attempt owns this RawFile's backup right now; this one backs off and is retried later."""


class LeaseLostError(TransientBackupError):
    """This attempt no longer owns the RawFile's backup (its lease expired and another attempt took it)."""


class InventoryChangedError(TransientBackupError):
    """``file_info`` changed while an attempt ran: DONE would vouch for another inventory; the retry redoes it."""


class NothingToBackUp(KrakenBackupError):
    """The record says there is nothing to back up (alphakraken skipped the copy); not a failure."""


class BackupInterrupted(TransientBackupError):
    """The attempt was stopped from outside (timeout, termination, lost lease); the next one resumes."""


def should_abort_multipart(error: BaseException) -> bool:
    """Abort a multipart upload only when its parts can never be completed into a true object.

    That is the case for integrity failures (bytes differ) and for local-file failures (the file is gone,
    changed or unreadable). Everything else (network, throttling, denied access, an interruption) keeps the
    upload, so the next attempt resumes it after the cause is fixed.
    """
    return isinstance(error, (IntegrityError, LocalFileChangedError, LocalReadError))


class S3ErrorKind(enum.Enum):
    """What an S3 error response means for us, whatever the operation."""

    NOT_FOUND = "not_found"
    NO_SUCH_BUCKET = "no_such_bucket"
    NO_SUCH_UPLOAD = "no_such_upload"
    BAD_DIGEST = "bad_digest"
    ALREADY_OWNED = "already_owned"  # creating a bucket that we (another attempt) created meanwhile
    DENIED = "denied"
    ARCHIVED = "archived"  # InvalidObjectState: an archived object read before it was restored
    CHANGED = "changed"  # PreconditionFailed: the object is no longer the one an If-Match named
    TRANSIENT = "transient"
    PERMANENT = "permanent"


#: Codes that a later attempt can succeed past, whatever their HTTP status (``RequestTimeTooSkewed`` is a
#: 403, ``ExpiredToken`` a 400: both clear up once the clock or the credentials are refreshed).
TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "InternalError",
        "ServiceUnavailable",
        "PriorRequestNotComplete",
        "ExpiredToken",
        "ExpiredTokenException",
        "TokenRefreshRequired",
        "RequestTimeTooSkewed",
        "OperationAborted",
    }
)
DENIED_CODES = frozenset(
    {"AccessDenied", "Forbidden", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
)
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchVersion"})
DIGEST_CODES = frozenset({"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"})


def classify_s3_error(status: int, code: str) -> S3ErrorKind:
    """The one classifier of S3 error responses (the hook, the sensor and the trigger all use it).

    The error code decides first, because several codes carry a misleading status; the status decides
    when the code is unknown (some stores send none).
    """
    code = code or ""
    if code in TRANSIENT_CODES:
        return S3ErrorKind.TRANSIENT
    if code == "NoSuchUpload":
        return S3ErrorKind.NO_SUCH_UPLOAD
    if code == "NoSuchBucket":
        return S3ErrorKind.NO_SUCH_BUCKET
    if code == "BucketAlreadyOwnedByYou":
        return S3ErrorKind.ALREADY_OWNED
    if code in DIGEST_CODES:
        return S3ErrorKind.BAD_DIGEST
    if code == "InvalidObjectState":  # a 403 that is no access problem
        return S3ErrorKind.ARCHIVED
    if code == "PreconditionFailed" or status == 412:
        return S3ErrorKind.CHANGED
    if code in NOT_FOUND_CODES or (status == 404 and not code):
        return S3ErrorKind.NOT_FOUND
    if code in DENIED_CODES or status == 403:
        return S3ErrorKind.DENIED
    if status >= 500 or status in (408, 429):
        return S3ErrorKind.TRANSIENT
    if status == 404:
        return S3ErrorKind.NOT_FOUND
    return S3ErrorKind.PERMANENT


class ObjectConflictError(PermanentBackupError):
    """An object exists where the backup belongs that can neither be proven equal nor safely replaced."""


class ObjectReplacedError(TransientBackupError):
    """The object changed while it was being read (its ETag is no longer the one every ranged GET named):
    nothing was concluded about either version; reading it again checks the new one."""


class UploadVanishedError(S3TransientError):
    """The multipart upload being resumed or completed no longer exists (aborted by a rule or a person)."""
