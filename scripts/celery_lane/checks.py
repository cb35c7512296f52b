"""What must hold after every run of the lane, read from S3 and MongoDB, never from the uploader's own words.

- every RawFile ``upload_done``, with no multipart upload recorded (``s3_uploads``) and no lease left;
- every file of every raw file in S3 at the key its record names, byte-identical to the local file (read
  back in full and compared), with the inventory's ETag;
- no duplicate upload: each key has exactly one version in its versioned bucket, and no other key exists;
- no orphaned multipart upload (ListMultipartUploads is empty in every bucket).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHUNK = 8 * 2**20


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    raw_files: int = 0
    done: int = 0
    objects: int = 0
    bytes_compared: int = 0

    def fail(self, text: str) -> None:
        self.problems.append(text)


def _same_bytes(body: Any, path: Path) -> bool:
    with path.open("rb") as local:
        while True:
            remote = body.read(CHUNK)
            if remote != local.read(len(remote) or CHUNK):
                return False
            if not remote:
                return True


def check_backups(s3: Any, raw_file_ids: list[str]) -> Findings:
    """Check the records of ``raw_file_ids`` (kraken_s3 alias connected) against S3 (a boto3 client)."""
    from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile

    found = Findings()
    expected_keys: dict[str, set[str]] = defaultdict(set)
    for raw_file_id in raw_file_ids:
        document = RawFile._get_collection().find_one({"_id": raw_file_id})
        if document is None:
            found.fail(f"{raw_file_id}: no RawFile")
            continue
        found.raw_files += 1
        found.done += document.get("backup_status") == BackupStatus.DONE
        if document.get("backup_status") != BackupStatus.DONE:
            found.fail(f"{raw_file_id}: backup_status {document.get('backup_status')!r}")
        if document.get("s3_uploads"):
            found.fail(f"{raw_file_id}: multipart uploads still recorded: {document['s3_uploads']}")
        if document.get("s3_lease_owner"):
            found.fail(f"{raw_file_id}: lease still held by {document['s3_lease_owner']!r}")
        upload_path = document.get("s3_upload_path") or ""
        if not upload_path.startswith("s3://"):
            found.fail(f"{raw_file_id}: s3_upload_path {upload_path!r}")
            continue
        bucket, _, prefix = upload_path[len("s3://") :].partition("/")
        base = Path(document["backup_base_path"])
        for relative, (size, _md5, *precomputed) in document["file_info"].items():
            key = f"{prefix}{relative}"
            expected_keys[bucket].add(key)
            found.objects += 1
            response = s3.get_object(Bucket=bucket, Key=key)
            etag = response["ETag"].strip('"')
            if response["ContentLength"] != size:
                found.fail(f"s3://{bucket}/{key}: {response['ContentLength']} bytes, inventory {size}")
            if precomputed and etag != precomputed[0].rsplit("__", 1)[0]:
                found.fail(f"s3://{bucket}/{key}: ETag {etag}, inventory {precomputed[0]}")
            if not _same_bytes(response["Body"], base / relative):
                found.fail(f"s3://{bucket}/{key}: bytes differ from {base / relative}")
            else:
                found.bytes_compared += size
    for bucket, keys in sorted(expected_keys.items()):
        versions: dict[str, int] = defaultdict(int)
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for version in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                versions[version["Key"]] += 1
        for key, count in sorted(versions.items()):
            if key not in keys:
                found.fail(f"s3://{bucket}/{key}: an object no record names")
            elif count != 1:
                found.fail(f"s3://{bucket}/{key}: {count} versions (uploaded more than once)")
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        for upload in uploads:
            found.fail(f"s3://{bucket}/{upload['Key']}: multipart upload {upload['UploadId']} left open")
    return found
