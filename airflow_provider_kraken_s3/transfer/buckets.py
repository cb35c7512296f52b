"""Backup buckets: is it there and ours to use, does it keep old versions, whose project is it; creating one.

Two projects must never share a bucket by accident (``Müller_2024`` and ``Möller_2024`` normalise to the same
name), so a bucket we create carries its ``project_id`` tag and a bucket tagged for another project is
refused. Versioning is what makes a REPLACING safe; whether a bucket has it is asked, not assumed.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow_provider_kraken_s3.core.errors import (
    BucketAccessDeniedError,
    BucketNotFoundError,
    KrakenBackupError,
    ObjectConflictError,
    S3ErrorKind,
)
from airflow_provider_kraken_s3.transfer.access import PERMISSIONS, S3Access

PROJECT_TAG = "project_id"


def check_bucket(access: S3Access, bucket: str) -> None:
    """Fail fast, before any byte is read, when the bucket is missing or not ours to use."""
    where = access.describe(bucket)
    try:
        found = access.call(
            "head_bucket",
            f"checking {where}",
            none_on={S3ErrorKind.NOT_FOUND, S3ErrorKind.NO_SUCH_BUCKET},
            Bucket=bucket,
        )
    except BucketAccessDeniedError as error:
        raise BucketAccessDeniedError(
            f"access denied to {where} for connection '{access.conn_id}'. Grant {PERMISSIONS} on it, or check "
            "the credentials."
        ) from error
    if found is None:
        raise BucketNotFoundError(
            f"{where} does not exist. Create it (private, versioned) or let the operator create it with "
            "create_bucket_if_missing=True; check bucket_prefix and the project id."
        )


def is_versioned(access: S3Access, bucket: str, log: logging.Logger) -> bool:
    """Whether the bucket keeps old versions; False (and a warning) when we may not ask."""
    try:
        response = access.call(
            "get_bucket_versioning", f"reading the versioning of bucket '{bucket}'", Bucket=bucket
        )
    except BucketAccessDeniedError as error:
        log.warning(
            "%s; treating bucket '%s' as unversioned, so nothing in it will be replaced", error, bucket
        )
        return False
    return (response or {}).get("Status") == "Enabled"


def check_project(access: S3Access, bucket: str, project_id: str, log: logging.Logger) -> None:
    """Refuse a bucket whose ``project_id`` tag names another project (bucket names are lossy)."""
    try:
        response = access.call(
            "get_bucket_tagging",
            f"reading the tags of bucket '{bucket}'",
            none_on={S3ErrorKind.NOT_FOUND, S3ErrorKind.PERMANENT},  # NoSuchTagSet: an untagged bucket
            Bucket=bucket,
        )
    except BucketAccessDeniedError as error:
        log.warning("%s; the bucket's project tag was not checked", error)
        return
    tags = {tag["Key"]: tag["Value"] for tag in (response or {}).get("TagSet", [])}
    owner = tags.get(PROJECT_TAG)
    if owner is not None and owner != project_id:
        raise ObjectConflictError(
            f"bucket '{bucket}' is tagged {PROJECT_TAG}={owner!r}, but this raw file belongs to project "
            f"{project_id!r}: the two project ids map to the same bucket name. Use another bucket_prefix for "
            "one of them, or fix the tag if it is wrong."
        )


def create_backup_bucket(access: S3Access, bucket: str, *, tags: dict[str, str], log: logging.Logger) -> None:
    """Create a bucket fit for backups: private, versioned, encrypted, public access blocked, tagged, and
    with a lifecycle rule aborting multipart uploads left incomplete for 7 days.

    Two attempts creating the same new bucket at once both succeed (``BucketAlreadyOwnedByYou`` is success);
    the configuration steps are idempotent, so both apply them.
    """
    where = access.describe(bucket)
    create: dict[str, Any] = {"Bucket": bucket, "ACL": "private"}
    if access.region and access.region != "us-east-1":
        create["CreateBucketConfiguration"] = {"LocationConstraint": access.region}
    if (
        access.call("create_bucket", f"creating {where}", none_on={S3ErrorKind.ALREADY_OWNED}, **create)
        is None
    ):
        log.info("%s was created meanwhile by another attempt; configuring it", where)
    steps: list[tuple[str, dict[str, Any]]] = [
        (
            "put_public_access_block",
            {
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                }
            },
        ),
        ("put_bucket_versioning", {"VersioningConfiguration": {"Status": "Enabled"}}),
        (
            "put_bucket_encryption",
            {
                "ServerSideEncryptionConfiguration": {
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                }
            },
        ),
        (
            "put_bucket_lifecycle_configuration",
            {
                "LifecycleConfiguration": {
                    "Rules": [
                        {
                            "ID": "abort-incomplete-multipart-uploads",
                            "Status": "Enabled",
                            "Filter": {"Prefix": ""},
                            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
                        }
                    ]
                }
            },
        ),
        (
            "put_bucket_tagging",
            {"Tagging": {"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}},
        ),
    ]
    for operation, params in steps:
        try:
            access.call(operation, f"configuring {where} ({operation})", Bucket=bucket, **params)
        except KrakenBackupError as error:
            raise type(error)(
                f"{error} — {where} exists but is only partly configured; finish it by hand"
            ) from error
    log.warning("created %s: private, versioned, SSE-S3, public access blocked, tagged %s", where, tags)
