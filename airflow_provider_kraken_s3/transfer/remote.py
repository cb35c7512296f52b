"""Reading what S3 holds: an object's ETag, size and hints, its part size, and the parts of an upload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_provider_kraken_s3.core.checksum import checksum_of, encryption_of
from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.errors import S3ErrorKind
from airflow_provider_kraken_s3.core.etag import etag_part_count, normalize_etag
from airflow_provider_kraken_s3.transfer.access import S3Access


@dataclass(frozen=True)
class RemotePart:
    """One part already uploaded to a multipart upload."""

    etag: str
    size: int
    crc32: str | None


def head_response(
    access: S3Access, bucket: str, key: str, version_id: str | None = None
) -> dict[str, Any] | None:
    """The raw HEAD answer for an object (one version of it, given ``version_id``), or None when there is
    none (the one HEAD uploads and downloads use). ``ChecksumMode=ENABLED`` asks for the stored additional
    checksum; stores without checksums ignore it."""
    version = {"VersionId": version_id} if version_id else {}
    where = f"s3://{bucket}/{key}" + (f" (version {version_id})" if version_id else "")
    return access.call(
        "head_object",
        f"reading {where}",
        none_on={S3ErrorKind.NOT_FOUND},
        Bucket=bucket,
        Key=key,
        ChecksumMode="ENABLED",
        **version,
    )


def head(access: S3Access, bucket: str, key: str, version_id: str | None = None) -> RemoteObject | None:
    """ETag, size, user metadata, version, checksum and encryption of an object, or None when there is none."""
    response = head_response(access, bucket, key, version_id)
    if response is None:
        return None
    return RemoteObject(
        normalize_etag(response["ETag"]),
        int(response["ContentLength"]),
        dict(response.get("Metadata") or {}),
        version_id=version_of(response),
        checksum=checksum_of(response),
        encryption=encryption_of(response),
    )


def version_of(response: dict[str, Any]) -> str | None:
    """S3's ``VersionId``; unversioned buckets answer none or ``"null"``, which names no version to read."""
    version = response.get("VersionId")
    return str(version) if version and version != "null" else None


def part_size_from_s3(access: S3Access, bucket: str, key: str, remote: RemoteObject) -> int | None:
    """Part 1's size as S3 reports it (HEAD ``partNumber=1``), or None when S3 cannot tell.

    The answer is checked before it is believed: some stores ignore ``partNumber`` and describe the whole
    object, which would pass for a part size equal to the object's size.
    """
    count = etag_part_count(remote.etag)
    if count is None:
        return None
    response = access.call(
        "head_object",
        f"reading part 1 of s3://{bucket}/{key}",
        none_on={S3ErrorKind.NOT_FOUND, S3ErrorKind.PERMANENT},
        Bucket=bucket,
        Key=key,
        PartNumber=1,
    )
    if response is None or int(response.get("PartsCount") or 0) != count:
        return None
    size = int(response["ContentLength"])
    fits = 0 < size < remote.size and (count - 1) * size < remote.size <= count * size
    return size if fits else None


def list_parts(access: S3Access, bucket: str, key: str, upload_id: str) -> dict[int, RemotePart] | None:
    """Parts already in S3 for ``upload_id`` (number → part), or None if the upload no longer exists.

    ListParts with the stored id: ``s3:ListBucketMultipartUploads`` is never needed. Some stores answer
    ``NoSuchKey`` instead of ``NoSuchUpload`` for an aborted upload; both mean "gone".
    """
    parts: dict[int, RemotePart] = {}
    params = {"Bucket": bucket, "Key": key, "UploadId": upload_id}
    while True:
        response = access.call(
            "list_parts",
            f"listing the parts of upload {upload_id} of s3://{bucket}/{key}",
            none_on={S3ErrorKind.NO_SUCH_UPLOAD, S3ErrorKind.NOT_FOUND},
            **params,
        )
        if response is None:
            return None
        for item in response.get("Parts", []):
            parts[int(item["PartNumber"])] = RemotePart(
                normalize_etag(item["ETag"]), int(item["Size"]), item.get("ChecksumCRC32")
            )
        if not response.get("IsTruncated"):
            return parts
        params["PartNumberMarker"] = response["NextPartNumberMarker"]
