"""S3BackupDeepVerifyOperator and RawFileS3RestoreOperator on real backups (moto_server, mongomock)."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_kraken_s3.operators.deep_verify import S3BackupDeepVerifyOperator
from airflow_provider_kraken_s3.operators.restore import RawFileS3RestoreOperator
from airflow_provider_kraken_s3.records.models import RawFile
from tests.conftest import BACKED_UP_BUCKET

SET = {"v.d/analysis.tdf": 2000, "v.d/analysis.tdf_bin": 11 * 1024**2 + 3}


def files_under(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_deep_verify_of_one_raw_file_records_ok(backed_up) -> None:
    backed_up("v.d", SET)

    report = S3BackupDeepVerifyOperator(task_id="deep", raw_file_id="v.d").execute(context={})

    assert report["outcome"] == "ok" and report["bytes"] == sum(SET.values())
    record = RawFile.objects.get(id="v.d")
    assert record.backup_status == "upload_done" and record.s3_verified_at is not None


def test_deep_verify_fails_and_unmarks_a_backup_whose_bytes_changed(backed_up, s3_client) -> None:
    backed_up("v.d", SET)
    s3_client.put_object(Bucket=BACKED_UP_BUCKET, Key="v.d/analysis.tdf", Body=b"z" * 2000)

    with pytest.raises(AirflowFailException, match="keep the instrument copies"):
        S3BackupDeepVerifyOperator(task_id="deep", fraction=1.0).execute(context={})

    record = RawFile.objects.get(id="v.d")
    assert record.backup_status == "upload_failed" and "analysis.tdf" in record.s3_backup_details


def test_deep_verify_needs_a_target() -> None:
    with pytest.raises(ValueError, match="raw_file_id, or a sample size"):
        S3BackupDeepVerifyOperator(task_id="deep")


def test_restore_is_byte_identical_and_never_overwrites_unless_asked(backed_up, tmp_path) -> None:
    base = backed_up("v.d", SET)
    destination = tmp_path / "restored"

    report = RawFileS3RestoreOperator(
        task_id="restore", raw_file_id="v.d", destination=str(destination)
    ).execute(context={})
    assert report["ok"] is True and files_under(destination) == files_under(base)

    (destination / "v.d/analysis.tdf").write_bytes(b"a local edit")
    with pytest.raises(AirflowFailException, match=r"analysis\.tdf"):
        RawFileS3RestoreOperator(task_id="restore", raw_file_id="v.d", destination=str(destination)).execute(
            context={}
        )
    assert (destination / "v.d/analysis.tdf").read_bytes() == b"a local edit"

    RawFileS3RestoreOperator(
        task_id="restore", raw_file_id="v.d", destination=str(destination), overwrite=True
    ).execute(context={})
    assert files_under(destination) == files_under(base)
