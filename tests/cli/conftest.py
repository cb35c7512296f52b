"""A raw file really backed up (operator → moto_server, RawFile in mongomock) for the CLI to look at.

The CLI is called in-process (``main([...])``): mongomock lives in this process only, so a ``kraken-s3``
subprocess would see an empty database. The subprocess test in ``test_cli.py`` covers the console script
itself with a command that needs no MongoDB.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from tests.conftest_mongo import insert_raw_file

PART = 5 * MIB
BUCKET = "kraken-cli-p1234"


@pytest.fixture
def backed_up(aws_conn, s3_client, kraken_mongo, tmp_path: Path):
    """``backed_up(raw_file_id, {relative path: size})`` → the backup folder, after a real verified backup."""
    s3_client.create_bucket(Bucket=BUCKET)

    def make(raw_file_id: str, sizes: dict[str, int]) -> Path:
        base = tmp_path / "backup"
        file_info = {}
        for index, (relative, size) in enumerate(sizes.items()):
            path = base / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            data = random.Random(f"{raw_file_id}/{index}").randbytes(size)
            path.write_bytes(data)
            file_info[relative] = [size, hashlib.md5(data).hexdigest()]
        insert_raw_file(
            raw_file_id,
            size=sum(sizes.values()),
            project_id="P1234",
            backup_base_path=str(base),
            file_info=file_info,
        )
        RawFileS3BackupOperator(
            task_id="upload_to_s3", raw_file_id=raw_file_id, bucket_prefix="kraken-cli", part_size=PART
        ).execute(context={})
        return base

    yield make
    for item in s3_client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3_client.delete_object(Bucket=BUCKET, Key=item["Key"])
    s3_client.delete_bucket(Bucket=BUCKET)
