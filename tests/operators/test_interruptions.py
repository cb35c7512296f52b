"""A kill (``on_kill``: SIGTERM, a timeout, a lost lease) is heard wherever the attempt is reading the file.

Hashing a 100 GB file before a skip or a single PUT takes minutes; Airflow sends SIGKILL 5 s after SIGTERM,
so every read loop must stop at its next block and the record must say "interrupted", with the next attempt
resuming — never a failure of the file, never ``upload_in_progress``. Against moto server and mongomock.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_provider_kraken_s3.core.errors import BackupInterrupted
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.transfer import hashing, upload
from airflow_provider_kraken_s3.transfer.streams import STREAM_BLOCK, PartBody
from tests.conftest import put_object
from tests.staging import stage_raw_file

PART = 5 * MIB
PREFIX = "kraken-lab"
BUCKET = "kraken-lab-p1234"


def operator(raw_file_id: str, **kwargs) -> RawFileS3BackupOperator:
    kwargs.setdefault("bucket_prefix", PREFIX)
    kwargs.setdefault("part_size", PART)
    return RawFileS3BackupOperator(task_id="upload_to_s3", raw_file_id=raw_file_id, **kwargs)


def assert_recorded_as_interrupted(raw_file_id: str) -> None:
    raw = RawFile.objects.get(id=raw_file_id)
    assert raw.backup_status == BackupStatus.FAILED, raw.s3_backup_details
    assert "interrupted" in raw.s3_backup_details and "next attempt resumes" in raw.s3_backup_details
    assert "another part failed" not in raw.s3_backup_details
    assert raw.s3_lease_owner is None


def test_a_kill_while_hashing_before_a_skip_stops_at_the_next_block(
    aws_conn, s3_client, project_bucket, kraken_mongo, tmp_path: Path, monkeypatch
) -> None:
    """Defect 6: the same bytes are in S3 at another part size, so the file is hashed before deciding."""
    size = 6 * hashing.READ_BLOCK + 1
    base = tmp_path / "backup"
    stage_raw_file(base, "h.raw", {"h.raw": size}, project_id="P1234")
    put_object(s3_client, BUCKET, "h.raw", (base / "h.raw").read_bytes(), part_size=8 * MIB)
    op = operator("h.raw")
    fed: list[int] = []
    real_update = hashing.Digests.update

    def kill_after_the_first_block(self, block) -> None:
        real_update(self, block)
        fed.append(len(block))
        op.on_kill()

    monkeypatch.setattr(hashing.Digests, "update", kill_after_the_first_block)
    with pytest.raises(BackupInterrupted):
        op.execute(context={})
    assert sum(fed) <= hashing.READ_BLOCK < size  # stopped at the next block, not after the whole file
    assert_recorded_as_interrupted("h.raw")


def test_a_kill_while_proving_a_file_before_a_single_put_stops_at_the_next_block(
    aws_conn, s3_client, project_bucket, kraken_mongo, tmp_path: Path, monkeypatch
) -> None:
    """Defect 6: an older other object is replaced (versioned bucket) by a single PUT, proven first."""
    s3_client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    size = 5 * hashing.READ_BLOCK + 3
    base = tmp_path / "backup"
    stage_raw_file(base, "p.raw", {"p.raw": size}, project_id="P1234")
    old = put_object(s3_client, BUCKET, "p.raw", b"an older, other object")
    op = operator("p.raw", part_size=32 * MIB)  # one part: a single PUT replaces the object at once
    read: list[int] = []
    real_hash = upload.compute_s3_etag_and_md5

    def hash_and_kill_after_the_first_block(*args, **kwargs):
        def seen(count: int) -> None:
            read.append(count)
            op.on_kill()

        return real_hash(*args, on_bytes=seen, **kwargs)

    monkeypatch.setattr(upload, "compute_s3_etag_and_md5", hash_and_kill_after_the_first_block)
    with pytest.raises(BackupInterrupted):
        op.execute(context={})
    assert read and sum(read) <= hashing.READ_BLOCK < size
    assert s3_client.head_object(Bucket=BUCKET, Key="p.raw")["ETag"].strip('"') == old  # not replaced
    assert_recorded_as_interrupted("p.raw")


def test_a_kill_during_a_single_put_is_an_interruption_that_resumes(
    aws_conn, s3_client, project_bucket, kraken_mongo, tmp_path: Path, monkeypatch
) -> None:
    """Defect 9: a one-part file killed mid-PUT is "interrupted, will resume", not "another part failed"."""
    size = 3 * STREAM_BLOCK + 5
    base = tmp_path / "backup"
    stage_raw_file(base, "s.raw", {"s.raw": size}, project_id="P1234")
    op = operator("s.raw")
    real_load = PartBody._load_block

    def kill_after_the_first_block(self, block_start: int) -> None:
        real_load(self, block_start)
        op.on_kill()

    monkeypatch.setattr(PartBody, "_load_block", kill_after_the_first_block)
    with pytest.raises(BackupInterrupted):
        op.execute(context={})
    assert_recorded_as_interrupted("s.raw")
    assert s3_client.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0  # nothing half-written
    monkeypatch.setattr(PartBody, "_load_block", real_load)
    assert operator("s.raw").execute(context={})["status"] == BackupStatus.DONE  # the next attempt completes
