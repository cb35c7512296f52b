"""Fixtures of the download-side services (deep verification, restore): backups made straight in S3."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import pytest

from airflow_provider_kraken_s3.core.layout import key_prefix
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.records.models import BackupStatus
from tests.conftest import put_object

#: The part size of every object :func:`s3_backup` stores (its ETag is recorded at this size).
PART = 5 * MIB


@pytest.fixture
def s3_backup(s3_client, bucket, make_raw_file):
    """``s3_backup(raw_file_id, {path: bytes}, storage={path: class}, **record fields)`` → the file_info.

    Puts the files in S3 at 5 MiB parts, at the keys the backup uses, and inserts an ``upload_done`` RawFile
    recording them (``[size, md5, "<etag>__5"]``): a backup as the operator leaves it, without running it.
    """

    def make(raw_file_id: str, files: dict[str, bytes], *, storage: dict[str, str] | None = None, **fields):
        prefix = key_prefix(
            raw_file_id,
            project_id=fields.get("project_id", "P1234"),
            instrument_id=fields.get("instrument_id", "astral1"),
            created_at=datetime(2024, 1, 1, 12, tzinfo=timezone.utc),
        )  # the layout alphakraken and the backup use (the defaults of make_raw_file)
        file_info = {}
        for path, data in files.items():
            extra = {"StorageClass": storage[path]} if storage and path in storage else {}
            etag = put_object(s3_client, bucket, prefix + path, data, part_size=PART, **extra)
            file_info[path] = [len(data), hashlib.md5(data).hexdigest(), f"{etag}__{PART // MIB}"]
        values = {"backup_status": BackupStatus.DONE, "s3_bucket": bucket, "file_info": file_info}
        make_raw_file(raw_file_id, size=sum(map(len, files.values())), **{**values, **fields})
        return file_info

    return make
