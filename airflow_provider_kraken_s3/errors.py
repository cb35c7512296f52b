"""Exceptions of the provider, split by what a retry can do about them.

``PermanentBackupError`` subclasses describe problems that no retry will fix (a person must act: create the
bucket, fix the IAM policy, find the changed or missing file). The operator fails those without retries.
``TransientBackupError`` subclasses (network, throttling, 5xx, MongoDB blips) are re-raised so Airflow retries,
and a retry resumes where the last attempt stopped.
"""

from __future__ import annotations


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


class LocalFileChangedError(PermanentBackupError):
    """The local file disappeared or changed while (or since) it was read."""


class RawFileNotFoundError(PermanentBackupError):
    """No RawFile document with the given id exists in MongoDB."""


class MongoUnavailableError(TransientBackupError):
    """MongoDB could not be reached; Airflow should retry the task."""


class S3TransientError(TransientBackupError):
    """S3 could not be reached or asked us to slow down; the multipart upload is kept for a resume."""
