"""Drop-in for alphakraken, both ways: their file remover accepts our backups, we recognise theirs.

``their_remover_would_delete`` re-implements, from ../shared/notes/alphakraken-facts.md, the S3 check
alphakraken's file remover makes before deleting an instrument file. It is written here from those
documented rules, not copied: a lab keeps its remover when it switches to this provider.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path

from boto3.s3.transfer import TransferConfig

from airflow_provider_kraken_s3.core.layout import FALLBACK_PROJECT_ID
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag
from tests.operators.test_raw_file_backup import BUCKET, PART, operator, reload


def their_remover_would_delete(s3_client, raw_file: RawFile) -> list[str]:
    """Every reason alphakraken's remover would keep the files (empty: it would delete them)."""
    if raw_file.backup_status != "upload_done":
        return [f"backup_status is {raw_file.backup_status!r}"]
    if not raw_file.s3_upload_path:
        return ["no s3_upload_path"]
    bucket, _, prefix = raw_file.s3_upload_path.removeprefix("s3://").partition("/")
    reasons = []
    for path, entry in raw_file.file_info.items():
        if len(entry) < 3 or not entry[2]:
            reasons.append(f"{path}: no ETag in file_info")
            continue
        try:
            head = s3_client.head_object(Bucket=bucket, Key=f"{prefix}{path}")
        except s3_client.exceptions.ClientError as error:
            reasons.append(f"{path}: HEAD failed ({error})")
            continue
        if head["ContentLength"] != entry[0]:
            reasons.append(f"{path}: size {head['ContentLength']} != {entry[0]}")
        if head["ETag"].strip('"') != entry[2].split("__")[0]:
            reasons.append(f"{path}: ETag {head['ETag']} != {entry[2]}")
    return reasons


def test_their_remover_accepts_our_raw_d_and_wiff_backups(aws_conn, s3_client, project_bucket, stage) -> None:
    stage("r.raw", {"r.raw": 2 * PART + 1})
    stage("f.d", {"f.d/analysis.tdf": 100, "f.d/analysis.tdf_bin": PART + 3})
    stage("s.wiff", {"s.wiff": 10, "s.wiff.scan": 20})
    for raw_file_id in ("r.raw", "f.d", "s.wiff"):
        operator(raw_file_id).execute(context={})
        assert their_remover_would_delete(s3_client, reload(raw_file_id)) == [], raw_file_id
    assert (reload("r.raw").s3_upload_path, reload("s.wiff").s3_upload_path) == (
        f"s3://{BUCKET}",
        f"s3://{BUCKET}/s.wiff/",
    )
    s3_client.delete_object(Bucket=BUCKET, Key="f.d/analysis.tdf")  # the remover keeps what S3 lost
    assert their_remover_would_delete(s3_client, reload("f.d"))


def test_fallback_project_goes_where_alphakraken_puts_it(aws_conn, s3_client, stage) -> None:
    bucket = "kraken-lab--fallback"  # alphakraken's name for the fallback project's bucket, kept exactly
    s3_client.create_bucket(Bucket=bucket)
    created = datetime(2024, 2, 29, 10, 0, tzinfo=timezone.utc)
    stage("x.raw", {"x.raw": 10}, project_id=FALLBACK_PROJECT_ID, instrument_id="astral1", created_at=created)
    result = operator("x.raw").execute(context={})
    assert (result["bucket"], result["s3_backup_key"]) == (bucket, "astral1/2024_02/x.raw")
    assert [o["Key"] for o in s3_client.list_objects_v2(Bucket=bucket)["Contents"]] == [
        "astral1/2024_02/x.raw"
    ]
    raw = reload("x.raw")
    assert raw.s3_upload_path == f"s3://{bucket}/astral1/2024_02/"
    assert their_remover_would_delete(s3_client, raw) == []


def test_objects_their_uploader_made_are_skipped_without_reading(
    aws_conn, s3_client, project_bucket, stage
) -> None:
    """Their uploader: boto3 ``upload_file``, parts of one chunk size, CRC32, ``"<etag>__<MiB>"`` recorded."""
    base = stage("t.raw", {"t.raw": 3 * PART + 5})
    path = base / "t.raw"
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
    s3_client.upload_file(str(path), BUCKET, "t.raw", Config=config)
    raw = reload("t.raw")
    size, md5 = raw.file_info["t.raw"][:2]
    RawFile.objects(id="t.raw").update_one(
        set__file_info={"t.raw": [size, md5, f"{compute_s3_etag(path, PART)}__5"]}
    )
    path.write_bytes(random.Random(5).randbytes(size))  # same size, other bytes: reading it would fail
    result = operator("t.raw").execute(context={})
    assert (result["bytes_uploaded"], result["files_skipped"]) == (0, 1)
    assert reload("t.raw").backup_status == BackupStatus.DONE


def test_their_objects_with_a_legacy_inventory_are_proven_by_hashing_once(
    aws_conn, s3_client, project_bucket, stage, task_log
) -> None:
    """A ``[size, md5]`` entry and an object without our metadata: S3 tells the part size, one hash proves it."""
    base = stage("u.raw", {"u.raw": 2 * PART + 9})
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
    s3_client.upload_file(str(Path(base) / "u.raw"), BUCKET, "u.raw", Config=config)
    result = operator("u.raw").execute(context={})
    assert (result["bytes_uploaded"], result["files_skipped"]) == (0, 1)
    assert "REPLACING" not in task_log()
    assert reload("u.raw").file_info["u.raw"][2].endswith("__5")


def test_their_one_part_multipart_object_is_recognised(aws_conn, s3_client, project_bucket, stage) -> None:
    """Their uploader sends a file exactly its threshold in size as a one-part multipart upload (``…-1``),
    which their own ETag function never matches; its ETag follows from the MD5, so we prove it."""
    base = stage("v.raw", {"v.raw": PART})
    config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART)
    s3_client.upload_file(str(Path(base) / "v.raw"), BUCKET, "v.raw", Config=config)
    assert s3_client.head_object(Bucket=BUCKET, Key="v.raw")["ETag"].strip('"').endswith("-1")
    result = operator("v.raw").execute(context={})
    assert (result["bytes_uploaded"], result["files_skipped"]) == (0, 1)
