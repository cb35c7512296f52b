"""Backup buckets: is it there and ours to use, does it keep old versions, whose project is it; creating one.

Two projects must never share a bucket by accident (``Müller_2024`` and ``Möller_2024`` normalise to the same
name), so a bucket we create carries its ``project_id`` tag and a bucket tagged for another project is
refused. Versioning is what makes a REPLACING safe; whether a bucket has it is asked, not assumed.
"""

from __future__ import annotations

import uuid
from typing import Any

from botocore.exceptions import ClientError

from airflow_provider_kraken_s3.core.errors import (
    BucketAccessDeniedError,
    BucketNotFoundError,
    KrakenBackupError,
    ObjectConflictError,
    PermanentBackupError,
    S3ErrorKind,
    TransientBackupError,
)
from airflow_provider_kraken_s3.core.log import Log
from airflow_provider_kraken_s3.transfer.access import PERMISSIONS, S3Access, describe_error

PROJECT_TAG = "project_id"
#: The tag alphakraken's own bucket creation sets (``ManagedBy=alphakraken``); every bucket we create has it
#: too, so their tooling and bucket policies keyed on it treat our buckets as theirs.
MANAGED_BY_TAG = ("ManagedBy", "alphakraken")


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


def is_versioned(access: S3Access, bucket: str, log: Log) -> bool:
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


def check_project(access: S3Access, bucket: str, project_id: str, log: Log) -> None:
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


#: The public access block, applied last (see :func:`_block_public_access`).
_PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
_WRITE_CHECK_KEY = ".kraken-write-check"


def _provisioning_steps(tags: dict[str, str]) -> list[tuple[str, dict[str, Any], str, str]]:
    """(operation, parameters, what it gives the bucket, what lacking it means)."""
    return [
        (
            "put_bucket_versioning",
            {"VersioningConfiguration": {"Status": "Enabled"}},
            "versioning",
            "an object that differs will be refused, never replaced",
        ),
        (
            "put_bucket_encryption",
            {
                "ServerSideEncryptionConfiguration": {
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                }
            },
            "default encryption (SSE-S3)",
            "objects are stored as the store keeps them by default",
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
            "the lifecycle rule aborting incomplete multipart uploads after 7 days",
            "abandoned uploads keep their parts until aborted by hand",
        ),
        (
            "put_bucket_tagging",
            {"Tagging": {"TagSet": [{"Key": k, "Value": v} for k, v in sorted(tags.items())]}},
            f"its tags {tags}",
            f"the {PROJECT_TAG} tag is what tells two projects with the same bucket name apart",
        ),
    ]


def create_backup_bucket(access: S3Access, bucket: str, *, tags: dict[str, str], log: Log) -> None:
    """Create a bucket fit for backups: private, versioned, encrypted, tagged, with a lifecycle rule aborting
    multipart uploads left incomplete for 7 days, and public access blocked.

    Two attempts creating the same new bucket at once both succeed (``BucketAlreadyOwnedByYou`` is success);
    the configuration steps are idempotent, so both apply them.

    S3-compatible stores implement these settings unevenly (Ceph RGW 16 refuses ``PutBucketEncryption`` with
    ``InvalidArgument``). A step the store refuses is not fatal: it is logged as one warning saying what the
    bucket lacks, and the final line lists it again. A transient error (network, 5xx) stops provisioning and
    says which steps are missing, as does a missing bucket.

    ``tags`` are set beside ``ManagedBy=alphakraken`` (:data:`MANAGED_BY_TAG`; a ``ManagedBy`` in ``tags`` wins).
    """
    where = access.describe(bucket)
    tags = {MANAGED_BY_TAG[0]: MANAGED_BY_TAG[1], **tags}
    create: dict[str, Any] = {"Bucket": bucket, "ACL": "private"}
    if access.region and access.region != "us-east-1":
        create["CreateBucketConfiguration"] = {"LocationConstraint": access.region}
    if (
        access.call("create_bucket", f"creating {where}", none_on={S3ErrorKind.ALREADY_OWNED}, **create)
        is None
    ):
        log.info("%s was created meanwhile by another attempt; configuring it", where)
    steps = _provisioning_steps(tags)
    has: list[str] = ["private"]
    lacks: list[str] = []
    for index, (operation, params, gives, meaning) in enumerate(steps):
        try:
            access.call(operation, f"configuring {where} ({operation})", Bucket=bucket, **params)
        except (BucketNotFoundError, TransientBackupError) as error:
            left = [step[2] for step in steps[index:]] + ["a public access block"]
            raise type(error)(
                f"{error} — {where} exists but is only partly configured: it lacks {'; '.join(left)}. Finish "
                "it by hand, or delete it and let the operator create it again."
            ) from error
        except PermanentBackupError as error:  # the store refuses this setting (or we may not set it)
            log.warning(
                "%s lacks %s: the store refused %s (%s); %s", where, gives, operation, _reason(error), meaning
            )
            lacks.append(gives)
        else:
            has.append(gives)
    block = _block_public_access(access, bucket, where, log)
    (has if block else lacks).append(block or "a public access block")
    if lacks or block != "public access blocked":
        log.warning(
            "created %s with: %s; it LACKS: %s (see the warnings above)",
            where,
            ", ".join(has),
            "; ".join(lacks) or "nothing",
        )
    else:
        log.warning("created %s: private, versioned, SSE-S3, public access blocked, tagged %s", where, tags)


def _block_public_access(access: S3Access, bucket: str, where: str, log: Log) -> str | None:
    """Block public access, last, then check that the owner can still write; what was applied, or None.

    Some stores misapply ``BlockPublicAcls``: Ceph RGW 15/16 then denies the owner's own PutObject and
    UploadPart (not CreateMultipartUpload). A bucket we cannot write to is no backup bucket, and the error
    would later read like missing IAM permissions. So a write is checked right away — an empty part of a
    multipart upload that is aborted at once (s3:PutObject and s3:AbortMultipartUpload, both needed anyway;
    nothing is left behind, nothing is deleted). If it is denied, the block is applied again without
    ``BlockPublicAcls`` (``IgnorePublicAcls`` still makes any public ACL ineffective) and checked again; if
    the owner still cannot write, the block is removed. Each fallback is one warning.
    """
    doing = f"configuring {where} (put_public_access_block)"
    try:
        access.call(
            "put_public_access_block",
            doing,
            Bucket=bucket,
            PublicAccessBlockConfiguration=_PUBLIC_ACCESS_BLOCK,
        )
    except PermanentBackupError as error:
        log.warning(
            "%s lacks a public access block: the store refused put_public_access_block (%s); it is private by "
            "its ACL only",
            where,
            _reason(error),
        )
        return None
    try:
        denied = _owner_write_denied(access, bucket, where)
    except TransientBackupError as error:  # configured; only the check could not run
        log.warning(
            "%s: public access is blocked, but whether the owner can still write could not be checked (%s). "
            "If uploads are then denied, the store may misapply BlockPublicAcls (as Ceph RGW does).",
            where,
            error,
        )
        return "public access blocked (writes not checked)"
    if denied is None:
        return "public access blocked"
    relaxed = {**_PUBLIC_ACCESS_BLOCK, "BlockPublicAcls": False}
    access.call("put_public_access_block", doing, Bucket=bucket, PublicAccessBlockConfiguration=relaxed)
    if _owner_write_denied(access, bucket, where) is None:
        log.warning(
            "%s: the store denied the owner's own write (%s) right after public access was blocked with "
            "BlockPublicAcls=True (a known Ceph RGW defect, not missing IAM permissions); the block is applied "
            "without BlockPublicAcls instead (IgnorePublicAcls, BlockPublicPolicy and RestrictPublicBuckets "
            "stay on, so public ACLs have no effect)",
            where,
            denied,
        )
        return "public access blocked (without BlockPublicAcls, which this store misapplies)"
    access.call("delete_public_access_block", f"removing the public access block of {where}", Bucket=bucket)
    if (still := _owner_write_denied(access, bucket, where)) is not None:
        raise BucketAccessDeniedError(
            f"{where} was created, but the owner's writes are denied ({still}), with or without a public access "
            f"block: check the credentials of connection '{access.conn_id}' and the bucket's policy. Grant "
            f"{PERMISSIONS} on it."
        )
    log.warning(
        "%s: the store denied the owner's own writes (%s) while any public access block was set (not missing "
        "IAM permissions); the block was removed, so the bucket is private by its ACL only",
        where,
        denied,
    )
    return None


def _owner_write_denied(access: S3Access, bucket: str, where: str) -> str | None:
    """Why the owner may not write to the bucket (an access denied), or None when a write works."""
    key = f"{_WRITE_CHECK_KEY}/{uuid.uuid4().hex}"
    doing = f"checking that {where} accepts writes"
    upload = access.call("create_multipart_upload", doing, Bucket=bucket, Key=key)
    upload_id = upload["UploadId"]  # type: ignore[index]
    try:
        access.call("upload_part", doing, Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"")
    except BucketAccessDeniedError as error:
        return _reason(error)
    finally:
        access.call(
            "abort_multipart_upload",
            f"aborting the write check of {where}",
            none_on={S3ErrorKind.NO_SUCH_UPLOAD, S3ErrorKind.NOT_FOUND},
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
        )
    return None


def _reason(error: KrakenBackupError) -> str:
    """The S3 error code (and message) inside one of our messages: the part in parentheses after "while"."""
    cause = error.__cause__
    if isinstance(cause, ClientError):
        return describe_error(cause)
    return str(error)
