"""Issue 13: the record vouches for exactly what it proved (the manifest), and no later run ignores evidence.

Each test drives the real operator against moto_server over HTTP (through the fault proxy where S3 must
misbehave) and mongomock, and asserts what a reader trusts afterwards: the RawFile's fields and manifest, the
objects and versions in S3, and what the sensor, restore and alphakraken's remover conclude from them.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_kraken_s3.core.decision import META_MD5, META_PART_SIZE, META_RCLONE_MD5
from airflow_provider_kraken_s3.core.deep_verify import DeepVerifyOutcome
from airflow_provider_kraken_s3.core.errors import InventoryChangedError, MongoUnavailableError
from airflow_provider_kraken_s3.core.manifest import Manifest, Proof
from airflow_provider_kraken_s3.records import deep_verify, store
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.services.restore import restore_raw_file
from tests.conftest import aws_connection_json
from tests.conftest_mongo import set_record
from tests.faults import respond
from tests.operators.test_raw_file_backup import BUCKET, PART, etag_of, operator, reload
from tests.sensors.test_both_modes import poke_round


@pytest.fixture
def versioned_bucket(s3_client, project_bucket) -> str:
    s3_client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return BUCKET


def manifest_of(raw_file_id: str) -> Manifest:
    return Manifest.from_document(RawFile._get_collection().find_one({"_id": raw_file_id})["s3_manifest"])


def retry_context(try_number: int) -> dict:
    """What Airflow passes a retry: the same run and task instance, a higher try number."""
    ti = SimpleNamespace(try_number=try_number, map_index=-1, dag_id="acquisition_handler")
    return {"run_id": "scheduled__2026-12-02", "ti": ti}


def test_the_manifest_names_s3s_etags_versions_and_proofs(
    aws_conn, s3_client, versioned_bucket, stage
) -> None:
    stage("m.d", {"m.d/a": 10, "m.d/b": 2 * PART + 1})
    operator("m.d").execute(context={})
    manifest = manifest_of("m.d")
    assert (manifest.bucket, manifest.prefix, manifest.upload_path) == (BUCKET, "", f"s3://{BUCKET}")
    for item in manifest.objects:
        head = s3_client.head_object(Bucket=BUCKET, Key=item.key)
        assert item.etag == head["ETag"].strip('"') and item.size == head["ContentLength"]
        assert item.version_id == head["VersionId"] and item.proof is Proof.UPLOADED
    assert [item.part_size for item in manifest.objects] == [PART, PART]
    assert manifest.proven_at is not None and manifest.attempt.startswith("upload_to_s3/")


def test_evidence_of_a_failed_deep_verify_forces_a_new_verified_upload(
    aws_conn, s3_client, versioned_bucket, stage
) -> None:
    """Defect 1: bytes rotted behind an unchanged ETag; a HEAD must not make the record DONE again."""
    stage("rot.raw", {"rot.raw": 2 * PART + 5})
    operator("rot.raw").execute(context={})
    before = manifest_of("rot.raw").objects[0]
    document = RawFile._get_collection().find_one({"_id": "rot.raw"})
    assert deep_verify.record_proven_wrong(
        "rot.raw",
        bucket=BUCKET,
        file_info=document["file_info"],
        outcome=DeepVerifyOutcome.DIFFERS,
        details="rot.raw: downloaded bytes differ",
        document=document,
    )
    result = operator("rot.raw").execute(context={})
    assert result["bytes_uploaded"] == 2 * PART + 5  # sent again, not "proven" by the unchanged ETag
    raw = reload("rot.raw")
    assert raw.backup_status == BackupStatus.DONE and raw.s3_verify_outcome is None
    after = manifest_of("rot.raw").objects[0]
    assert after.proof is Proof.UPLOADED and after.version_id != before.version_id
    assert after.etag == before.etag == etag_of(s3_client, "rot.raw")


def test_a_passing_deep_verify_makes_a_distrusted_record_done_again(
    aws_conn, s3_client, versioned_bucket, stage
) -> None:
    from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
    from airflow_provider_kraken_s3.services.deep_verify import deep_verify_raw_file

    stage("dv.raw", {"dv.raw": 100})
    operator("dv.raw").execute(context={})
    set_record("dv.raw", backup_status=BackupStatus.FAILED, s3_verify_outcome="differs")
    report = deep_verify_raw_file(KrakenS3Hook().access(), "dv.raw")
    assert report.ok and report.recorded
    raw = reload("dv.raw")
    assert raw.backup_status == BackupStatus.DONE and raw.s3_verify_outcome == "ok"


def test_an_inventory_growing_under_the_attempt_is_not_marked_done(
    aws_conn, s3_client, project_bucket, stage, monkeypatch
) -> None:
    """Defect 2: a file added to file_info while the upload runs is never covered by a DONE it lacks."""
    base = stage("grow.d", {"grow.d/a": 10, "grow.d/b": 20})
    (base / "grow.d/late").write_bytes(b"late bytes")
    real = store.mark_in_progress

    def alphakraken_adds_a_file(raw_file_id, owner, details):
        real(raw_file_id, owner, details)
        file_info = RawFile._get_collection().find_one({"_id": raw_file_id})["file_info"]
        file_info["grow.d/late"] = [10, hashlib.md5(b"late bytes").hexdigest()]
        RawFile._get_collection().update_one({"_id": raw_file_id}, {"$set": {"file_info": file_info}})

    monkeypatch.setattr(store, "mark_in_progress", alphakraken_adds_a_file)
    with pytest.raises(InventoryChangedError, match=r"added: grow\.d/late"):
        operator("grow.d", retries=2).execute(context={})
    raw = reload("grow.d")
    assert raw.backup_status == BackupStatus.FAILED and "added: grow.d/late" in raw.s3_backup_details
    assert not raw.s3_manifest
    monkeypatch.setattr(store, "mark_in_progress", real)
    operator("grow.d").execute(context={})
    assert sorted(item.path for item in manifest_of("grow.d").objects) == [
        "grow.d/a",
        "grow.d/b",
        "grow.d/late",
    ]


def test_after_a_lost_done_write_the_record_stores_what_s3_answered(
    aws_conn, s3_client, project_bucket, stage, monkeypatch
) -> None:
    """Defect 3: a one-part file with a ``…-1__5`` inventory is a single PUT (plain MD5); the retry's record
    must say so, and alphakraken's remover (S3 ETag == ETag part of file_info[2]) must accept it."""
    stage("one.raw", {"one.raw": 1000})
    md5 = RawFile._get_collection().find_one({"_id": "one.raw"})["file_info"]["one.raw"][1]
    one_part = hashlib.md5(bytes.fromhex(md5)).hexdigest() + "-1"
    set_record("one.raw", file_info={"one.raw": [1000, md5, f"{one_part}__5"]})

    def lost(*args, **kwargs):
        raise MongoUnavailableError("MongoDB unavailable while marking the upload done")

    real = store.mark_done
    monkeypatch.setattr(store, "mark_done", lost)
    with pytest.raises(MongoUnavailableError):
        operator("one.raw", retries=1).execute(context=retry_context(1))
    monkeypatch.setattr(store, "mark_done", real)
    operator("one.raw", retries=1).execute(context=retry_context(2))
    raw = reload("one.raw")
    in_s3 = etag_of(s3_client, "one.raw")
    assert in_s3 == md5 and raw.s3_etag == in_s3 and manifest_of("one.raw").objects[0].etag == in_s3
    assert raw.file_info["one.raw"][2].split("__")[0] == in_s3  # their remover's rule


@pytest.mark.parametrize("precomputed", [True, False], ids=["precomputed-etag", "legacy-md5-only"])
def test_an_md5_claim_is_written_only_when_computed_from_the_bytes_sent(
    aws_conn, s3_client, project_bucket, stage, precomputed
) -> None:
    """Defect 4: with a precomputed ETag the whole-file MD5 is not computed, so no MD5 may be claimed."""
    stage("claim.raw", {"claim.raw": 2 * PART + 9}, with_etag=precomputed)
    operator("claim.raw").execute(context={})
    metadata = s3_client.head_object(Bucket=BUCKET, Key="claim.raw")["Metadata"]
    assert metadata[META_PART_SIZE] == str(PART)
    assert (META_MD5 in metadata, META_RCLONE_MD5 in metadata) == (not precomputed, not precomputed)


def test_a_database_outage_on_the_last_write_never_leaves_the_record_stuck(
    aws_conn, s3_client, project_bucket, stage, monkeypatch
) -> None:
    """Defect 5: DONE and FAILED both fail to be written; the next try takes the lease over at once."""
    stage("stuck.raw", {"stuck.raw": 2 * PART})

    def down(*args, **kwargs):
        raise MongoUnavailableError("MongoDB unavailable")

    real = store.mark_done, store.mark_failed
    monkeypatch.setattr(store, "mark_done", down)
    monkeypatch.setattr(store, "mark_failed", down)
    with pytest.raises(MongoUnavailableError):
        operator("stuck.raw", retries=3).execute(context=retry_context(1))
    raw = reload("stuck.raw")
    assert raw.backup_status == BackupStatus.IN_PROGRESS and raw.s3_lease_owner.startswith(
        "acquisition_handler."
    )
    monkeypatch.setattr(store, "mark_done", real[0])
    monkeypatch.setattr(store, "mark_failed", real[1])
    result = operator("stuck.raw", retries=3).execute(context=retry_context(2))  # no LeaseHeldError
    assert result["status"] == BackupStatus.DONE and result["bytes_uploaded"] == 0  # proven, not resent
    assert reload("stuck.raw").s3_lease_owner is None


def test_another_dag_run_still_waits_for_a_live_lease(aws_conn, project_bucket, stage, monkeypatch) -> None:
    from airflow_provider_kraken_s3.core.errors import LeaseHeldError
    from airflow_provider_kraken_s3.records import lease

    stage("held.raw", {"held.raw": 10})
    lease.claim("held.raw", lease.Attempt.new("acquisition_handler.upload_to_s3/other_run/try1"))
    with pytest.raises(LeaseHeldError):
        operator("held.raw", retries=3).execute(context=retry_context(2))


def test_a_verified_done_is_not_downgraded_by_a_failure_to_look(
    s3_client, project_bucket, stage, moto_server, monkeypatch, proxy
) -> None:
    """Defect 7: the local copy is purged and S3 answers 503 to the re-check: the record stays DONE."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json(proxy.url, retries={"max_attempts": 1})
    )
    base = stage("kept.raw", {"kept.raw": 100})
    operator("kept.raw").execute(context={})
    (base / "kept.raw").unlink()
    proxy.add(respond("HeadObject", 503, "SlowDown", times=None))
    with pytest.raises(Exception, match=r"503|SlowDown|not answering"):
        operator("kept.raw").execute(context={})
    raw = reload("kept.raw")
    assert raw.backup_status == BackupStatus.DONE and raw.s3_lease_owner is None
    assert "verified 1 file(s)" in raw.s3_backup_details


def test_a_verified_done_is_never_moved_by_a_changed_prefix(
    aws_conn, s3_client, project_bucket, stage, task_log
) -> None:
    """Defect 7: a re-run under another bucket_prefix keeps bucket, upload path and manifest together."""
    stage("moved.raw", {"moved.raw": 100})
    operator("moved.raw").execute(context={})
    s3_client.create_bucket(Bucket="elsewhere-p1234")
    before = RawFile._get_collection().find_one({"_id": "moved.raw"})
    result = operator("moved.raw", bucket_prefix="elsewhere").execute(context={})
    after = RawFile._get_collection().find_one({"_id": "moved.raw"})
    assert result["bucket"] == BUCKET and s3_client.list_objects_v2(Bucket="elsewhere-p1234")["KeyCount"] == 0
    for field in ("s3_bucket", "s3_upload_path", "s3_manifest", "backup_status"):
        assert after[field] == before[field]
    assert "a verified backup is never moved" in task_log()
    s3_client.delete_bucket(Bucket="elsewhere-p1234")


def test_a_path_outside_the_raw_file_is_refused_and_nothing_is_written(
    aws_conn, s3_client, project_bucket, stage
) -> None:
    """Defect 8: b.raw in the inventory of a.d would overwrite another raw file's object."""
    stage("a.d", {"a.d/x": 10, "b.raw": 10})
    with pytest.raises(AirflowFailException, match=r"'b\.raw', which is not one of its files"):
        operator("a.d").execute(context={})
    assert s3_client.list_objects_v2(Bucket=BUCKET)["KeyCount"] == 0
    assert reload("a.d").backup_status == BackupStatus.FAILED


def test_an_overwritten_key_in_a_versioned_bucket_still_restores_the_verified_bytes(
    aws_conn, s3_client, versioned_bucket, stage, tmp_path
) -> None:
    base = stage("ow.d", {"ow.d/a": 100, "ow.d/b": PART + 3})
    operator("ow.d").execute(context={})
    s3_client.put_object(Bucket=BUCKET, Key="ow.d/a", Body=b"someone else's bytes")
    from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook

    report = restore_raw_file(KrakenS3Hook().access(), "ow.d", tmp_path / "restored")
    assert report.ok, report
    for name in ("ow.d/a", "ow.d/b"):
        assert (tmp_path / "restored" / name).read_bytes() == (base / name).read_bytes()


def test_project_reassigned_after_done_the_sensor_reads_the_recorded_objects(
    aws_conn, project_bucket, stage
) -> None:
    stage("pr.raw", {"pr.raw": 100})
    operator("pr.raw").execute(context={})
    set_record("pr.raw", project_id="_FALLBACK", created_at=None)
    outcome = poke_round(raw_file_id="pr.raw")
    assert outcome.action.value == "success" and outcome.xcom["bucket"] == BUCKET


def test_audit_reports_a_key_whose_current_version_is_not_the_recorded_one(
    aws_conn, s3_client, versioned_bucket, stage
) -> None:
    """Same bytes written again over a verified object: S3 proves the ETag, but the backup was touched."""
    from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
    from airflow_provider_kraken_s3.services.audit import check_record
    from airflow_provider_kraken_s3.services.verify import read_raw_file_record

    base = stage("av.raw", {"av.raw": 100})
    operator("av.raw").execute(context={})
    s3_client.put_object(Bucket=BUCKET, Key="av.raw", Body=(base / "av.raw").read_bytes())
    record = read_raw_file_record(lambda conn_id: None, "kraken_mongo_default", "av.raw")
    findings = check_record(KrakenS3Hook().access(), record).findings
    assert [f.kind.value for f in findings] == ["different"]
    assert "is not the recorded" in findings[0].detail


def test_a_record_alphakrakens_uploader_finished_is_verified_and_gets_a_manifest_without_uploading(
    aws_conn, s3_client, project_bucket, stage, tmp_path
) -> None:
    """Issue 13/14: no s3_bucket, s3_upload_path and a precomputed file_info[2], objects their uploader put
    (one PUT below 100 MiB: a plain MD5). Sensor, audit, deep verify and restore read it; a re-run of our
    operator proves it from S3 and adds the manifest, uploading nothing."""
    from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
    from airflow_provider_kraken_s3.services.audit import check_record
    from airflow_provider_kraken_s3.services.deep_verify import deep_verify_raw_file
    from airflow_provider_kraken_s3.services.verify import read_raw_file_record

    base = stage("theirs.d", {"theirs.d/a.tdf": 300, "theirs.d/b.tdf_bin": 700})
    file_info = RawFile._get_collection().find_one({"_id": "theirs.d"})["file_info"]
    for path, entry in file_info.items():
        s3_client.put_object(Bucket=BUCKET, Key=path, Body=(base / path).read_bytes())
        entry.append(f"{entry[1]}__100")
    set_record(
        "theirs.d",
        backup_status=BackupStatus.DONE,
        s3_upload_path=f"s3://{BUCKET}",
        file_info=file_info,
    )
    assert not reload("theirs.d").s3_bucket
    assert poke_round(raw_file_id="theirs.d").action.value == "success"
    record = read_raw_file_record(lambda conn_id: None, "kraken_mongo_default", "theirs.d")
    assert [f.kind.value for f in check_record(KrakenS3Hook().access(), record).findings] == ["ok", "ok"]
    assert deep_verify_raw_file(KrakenS3Hook().access(), "theirs.d", record=False).ok
    result = operator("theirs.d").execute(context={})
    assert result["bytes_uploaded"] == 0
    manifest = manifest_of("theirs.d")
    assert manifest.bucket == BUCKET and {item.proof for item in manifest.objects} == {Proof.LISTING}
    assert reload("theirs.d").file_info == file_info  # their inventory, untouched
