"""The one classifier of S3 error responses, and which failures may abort a multipart upload."""

from __future__ import annotations

import pytest

from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    BucketAccessDeniedError,
    IntegrityError,
    LocalFileChangedError,
    LocalReadError,
    S3ErrorKind,
    S3TransientError,
    classify_s3_error,
    should_abort_multipart,
)


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (404, "404", S3ErrorKind.NOT_FOUND),
        (404, "", S3ErrorKind.NOT_FOUND),
        (0, "NoSuchKey", S3ErrorKind.NOT_FOUND),
        (404, "NoSuchBucket", S3ErrorKind.NO_SUCH_BUCKET),
        (404, "NoSuchUpload", S3ErrorKind.NO_SUCH_UPLOAD),
        (400, "BadDigest", S3ErrorKind.BAD_DIGEST),
        (409, "BucketAlreadyOwnedByYou", S3ErrorKind.ALREADY_OWNED),
        (403, "AccessDenied", S3ErrorKind.DENIED),
        (403, "InvalidObjectState", S3ErrorKind.ARCHIVED),
        (412, "PreconditionFailed", S3ErrorKind.CHANGED),
        (403, "SignatureDoesNotMatch", S3ErrorKind.DENIED),
        (403, "", S3ErrorKind.DENIED),
        # Defect 8: these clear up on their own (refreshed credentials, a corrected clock, less load).
        (400, "ExpiredToken", S3ErrorKind.TRANSIENT),
        (403, "RequestTimeTooSkewed", S3ErrorKind.TRANSIENT),
        (429, "TooManyRequests", S3ErrorKind.TRANSIENT),
        (429, "", S3ErrorKind.TRANSIENT),
        (409, "OperationAborted", S3ErrorKind.TRANSIENT),
        (503, "SlowDown", S3ErrorKind.TRANSIENT),
        (500, "InternalError", S3ErrorKind.TRANSIENT),
        (502, "", S3ErrorKind.TRANSIENT),
        (400, "InvalidArgument", S3ErrorKind.PERMANENT),
    ],
)
def test_classify_s3_error(status: int, code: str, kind: S3ErrorKind) -> None:
    assert classify_s3_error(status, code) is kind


@pytest.mark.parametrize(
    ("error", "abort"),
    [
        (IntegrityError("x"), True),
        (LocalFileChangedError("x"), True),
        (LocalReadError("x"), True),
        (S3TransientError("x"), False),
        (BucketAccessDeniedError("x"), False),
        (BackupInterrupted("x"), False),
        (KeyboardInterrupt(), False),
    ],
)
def test_only_integrity_and_local_file_errors_abort(error: BaseException, abort: bool) -> None:
    assert should_abort_multipart(error) is abort
