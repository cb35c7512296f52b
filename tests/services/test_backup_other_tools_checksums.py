"""The backup's skip-if-present for objects other tools wrote with CRC32/CRC32C checksums (issue 17).

The migration case: a lab's objects were written by alphakraken's uploader (boto3 ``upload_file``: a
COMPOSITE CRC32 at 8 MiB or at its 100 MiB parts, or FULL_OBJECT in newer s3transfer) to an SSE-KMS bucket,
where the ETag proves nothing; this provider then backs the same raw files up. One local read computes the
MD5 (against the inventory) and the CRC at the object's part layout: equal → skipped, nothing sent, the
stored checksum recorded (the sensor, the audit and a re-run then prove the record by it); other bytes →
refused (unversioned) or replaced (versioned, the old version kept); a layout that cannot be found →
cannot be compared, by the same policy.

Against moto_server over HTTP through the fault proxy: :class:`~tests.faults_sse.SseKms` answers as an
SSE-KMS bucket does (opaque ETags, the KMS headers); :class:`~tests.faults_sse.ListObjectParts` lists the
parts as S3 does and moto does not. The objects are made with a plain boto3 client, straight to moto.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from boto3.s3.transfer import TransferConfig

from airflow_provider_kraken_s3.core.audit import AuditFindingKind
from airflow_provider_kraken_s3.core.errors import IntegrityError, ObjectConflictError
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.core.settings import BackupSettings
from airflow_provider_kraken_s3.core.verdict import RawFileRecord
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.records.lease import Attempt
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.sensors.backup_verified import S3BackupVerifiedSensor
from airflow_provider_kraken_s3.services.audit import check_record
from airflow_provider_kraken_s3.services.backup import RawFileBackup
from tests.checksum_objects import part_crcs, upload_composite_crc32, upload_full_object
from tests.conftest import aws_connection_json
from tests.faults_sse import ListObjectParts, SseKms
from tests.staging import stage_raw_file

PART = 5 * MIB
LOG = logging.getLogger("kraken.test.backup")
WRITES = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")
RAW = "tool.raw"  # project P1234, a .raw file: its key is its name, in kraken-lab-p1234


def back_up(access) -> RawFileBackup:
    settings = BackupSettings(backup_type="s3", bucket_prefix="kraken-lab", region_name=None, part_size=PART)
    return RawFileBackup(RAW, settings, access, Attempt.new(f"test/{RAW}"), LOG)


def record() -> dict:
    return RawFile._get_collection().find_one({"_id": RAW})


def stored_attributes(s3_client, bucket: str) -> dict:
    return s3_client.get_object_attributes(Bucket=bucket, Key=RAW, ObjectAttributes=["Checksum"])["Checksum"]


def versions(s3_client, bucket: str) -> list[bytes]:
    """Every version's bytes, newest first."""
    listed = s3_client.list_object_versions(Bucket=bucket, Prefix=RAW).get("Versions", [])
    listed.sort(key=lambda version: (not version["IsLatest"], version["LastModified"]), reverse=False)
    return [
        s3_client.get_object(Bucket=bucket, Key=RAW, VersionId=v["VersionId"])["Body"].read() for v in listed
    ]


@pytest.fixture
def local(kraken_mongo, project_bucket, tmp_path: Path):
    """``local(size)``: stage RAW with ``size`` bytes (its inventory their size and MD5); → (path, bytes)."""

    def stage(size: int) -> tuple[Path, bytes]:
        staged = stage_raw_file(tmp_path / "backup", RAW, {RAW: size}, project_id="P1234")
        return staged.backup_dir / RAW, staged.file_data(RAW)

    return stage


@pytest.fixture
def sensor(proxy, monkeypatch):
    """The sensor, its ``aws_default`` pointing at the proxy (so it sees what the proxy makes S3 answer)."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json(proxy.url))
    return S3BackupVerifiedSensor(task_id="verify", raw_file_id=RAW, poke_interval=0.05, timeout=30)


def boto3_upload_file(s3_client, bucket: str, path: Path, part_size: int) -> None:
    """alphakraken's uploader: boto3's ``upload_file``, multipart at ``part_size`` (botocore declares CRC32)."""
    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size)
    s3_client.upload_file(str(path), bucket, RAW, Config=config)


# ------------------------------------------------------------------ (a), (b): proven, skipped, recorded

OTHER_TOOLS = {
    # name: (file size, how the object was written)
    "upload_file at 8 MiB (composite CRC32)": (
        2 * 8 * MIB + 999,
        lambda c, b, path, data: boto3_upload_file(c, b, path, 8 * MIB),
    ),
    "composite CRC32 at 5 MiB parts (alphakraken's 100 MiB, small)": (
        2 * PART + 999,
        lambda c, b, path, data: upload_composite_crc32(c, b, RAW, data, PART),
    ),
    "full-object CRC32 (newer s3transfer)": (
        2 * PART + 999,
        lambda c, b, path, data: upload_full_object(c, b, RAW, data, PART, "CRC32"),
    ),
    # moto 5.2 without the crc32c package computes a multipart CRC32C with CRC32's polynomial; a single PUT
    # stores the CRC32C botocore declared
    "single PUT with CRC32C": (
        3 * MIB + 5,
        lambda c, b, path, data: c.put_object(Bucket=b, Key=RAW, Body=data, ChecksumAlgorithm="CRC32C"),
    ),
}


@pytest.mark.parametrize("tool", list(OTHER_TOOLS))
def test_an_object_another_tool_wrote_under_sse_kms_is_proven_by_one_read_and_skipped(
    proxy, access, s3_client, project_bucket, local, sensor, caplog, tool: str
) -> None:
    size, write = OTHER_TOOLS[tool]
    path, data = local(size)
    write(s3_client, project_bucket, path, data)
    before = s3_client.head_object(Bucket=project_bucket, Key=RAW)["ETag"]
    stored = stored_attributes(s3_client, project_bucket)
    algorithm = next(k.removeprefix("Checksum") for k in stored if k not in ("ChecksumType",))
    kind = "composite" if stored.get("ChecksumType") == "COMPOSITE" else "full-object"  # a PUT's: no type
    assert (kind, algorithm) == (
        "composite" if "composite" in tool else "full-object",
        "CRC32C" if "CRC32C" in tool else "CRC32",
    )  # as the tool made it
    proxy.add(SseKms())
    caplog.set_level(logging.INFO, logger=LOG.name)

    outcome = back_up(access).run()

    assert outcome.status == BackupStatus.DONE and outcome.bytes_uploaded == 0 and outcome.files_skipped == 1
    assert not any(r.operation in WRITES for r in proxy.requests)
    assert s3_client.head_object(Bucket=project_bucket, Key=RAW)["ETag"] == before  # untouched
    # the kind and the parts, which only GetObjectAttributes names, of a multipart object only
    asked = 0 if tool.startswith("single PUT") else 1
    assert len(proxy.records("GetObjectAttributes")) == asked
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("upload summary"))
    assert "skipped=true" in summary and f"bytes_read={size}" in summary
    where = "over the whole file" if kind == "full-object" else "at 3 parts of"
    assert f"already in S3: S3's {kind} {algorithm}" in summary and where in summary
    assert "which have the inventory MD5" in summary
    # The record: S3's stored checksum (composite too), the encryption S3 declared.
    entry = record()["s3_manifest"]["objects"][0]
    value = stored[f"Checksum{algorithm}"]
    assert (entry["checksum_algorithm"], entry["checksum"]) == (algorithm, value)
    assert entry["checksum_full_object"] is (kind == "full-object") and entry["encryption"] == "aws:kms"
    assert entry["md5"] == hashlib.md5(data).hexdigest()

    # The sensor proves the record by that checksum (a HEAD, and GetObjectAttributes where moto's HEAD hides
    # that it is composite).
    returned = sensor.poke(context={})
    assert returned.is_done and [o["key"] for o in returned.xcom_value["objects"]] == [RAW]
    assert len(proxy.records("GetObjectAttributes")) == asked + (kind == "composite")
    # And so does the audit, without a byte downloaded.
    audited = check_record(access, RawFileRecord.of(store.get_raw_file(RAW)))
    assert [(f.kind, f.proof) for f in audited.findings] == [(AuditFindingKind.OK, "checksum")]
    assert (
        f"S3's stored {algorithm} ({kind.replace('-', ' ')}) and size equal the record's"
        in audited.findings[0].detail
    )

    # A re-run of the DONE record: proven by HEAD and the recorded checksum, no byte downloaded, none sent.
    requests = len(proxy.requests)
    again = back_up(access).run()
    assert again.status == BackupStatus.DONE and again.bytes_uploaded == 0
    seen = [r.operation for r in proxy.requests[requests:]]
    assert not any(op in WRITES for op in seen) and "GetObject" not in seen
    assert "RawFile tool.raw is DONE and S3 still proves every object" in caplog.text


# ------------------------------------------------------------------ (c): other bytes behind the key


@pytest.mark.parametrize("listed", [True, False], ids=["parts S3 lists", "parts guessed"])
@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_an_object_one_byte_other_is_refused_or_replaced_and_nothing_is_lost(
    proxy, access, s3_client, project_bucket, local, caplog, listed: bool, versioned: bool
) -> None:
    """The parts S3 lists: a CRC that differs there shows other bytes. Guessed parts: it shows nothing, the
    object cannot be compared. Either way the bucket's policy decides, and no byte of the object is lost."""
    _, data = local(2 * PART + 999)
    other = bytearray(data)
    other[PART + 7] ^= 0x01
    if versioned:
        s3_client.put_bucket_versioning(Bucket=project_bucket, VersioningConfiguration={"Status": "Enabled"})
    upload_composite_crc32(s3_client, project_bucket, RAW, bytes(other), PART)
    proxy.add(SseKms())
    if listed:
        proxy.add(ListObjectParts(parts=part_crcs(bytes(other), PART)))
    caplog.set_level(logging.INFO, logger=LOG.name)

    if versioned:
        outcome = back_up(access).run()
        assert outcome.status == BackupStatus.DONE and outcome.bytes_uploaded == len(data)
        assert versions(s3_client, project_bucket) == [data, bytes(other)]  # the old version kept
        entry = record()["s3_manifest"]["objects"][0]
        assert entry["checksum_algorithm"] == "CRC64NVME"  # the replacement is ours, proven as ours
        reason = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("REPLACING"))
        assert "the bucket keeps the old version" in reason
    else:
        with pytest.raises(ObjectConflictError) as refused:
            back_up(access).run()
        reason = str(refused.value)
        assert record()["backup_status"] == BackupStatus.FAILED
        assert "Enable versioning on the bucket" in record()["s3_backup_details"]
        assert versions(s3_client, project_bucket) == [bytes(other)]  # nothing written over it
        assert not any(r.operation in WRITES for r in proxy.requests)
    assert "its composite CRC32" in reason
    if listed:
        assert "differs from the local file's" in reason and "at the 3 part sizes S3 lists" in reason
    else:
        assert "at none of the common part sizes" in reason and "it cannot be compared" in reason


# ------------------------------------------------------------------ (d): the local copy is not the acquired file


def test_a_local_file_whose_md5_is_not_the_inventorys_is_refused_and_nothing_is_sent(
    proxy, access, s3_client, project_bucket, local
) -> None:
    path, data = local(2 * PART + 999)
    upload_composite_crc32(s3_client, project_bucket, RAW, data, PART)  # S3 holds the acquired bytes
    damaged = bytearray(data)
    damaged[3] ^= 0xFF
    path.write_bytes(bytes(damaged))  # the local copy rotted since the inventory
    proxy.add(SseKms())
    with pytest.raises(IntegrityError) as refused:
        back_up(access).run()
    assert "the local copy is not the acquired file" in str(refused.value)
    assert record()["backup_status"] == BackupStatus.FAILED
    assert not any(r.operation in WRITES for r in proxy.requests)
    assert versions(s3_client, project_bucket) == [data]


# ------------------------------------------------------------------ (e): a layout that cannot be found


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_a_composite_at_an_uncommon_part_size_cannot_be_compared(
    proxy, access, s3_client, project_bucket, local, caplog, versioned: bool
) -> None:
    """7 MiB parts: no common part size gives its 4 parts, and the store lists none: nothing is read, the
    object follows the policy (replaced where the bucket keeps it, refused otherwise), in words that say why."""
    _, data = local(3 * 7 * MIB + 999)
    if versioned:
        s3_client.put_bucket_versioning(Bucket=project_bucket, VersioningConfiguration={"Status": "Enabled"})
    upload_composite_crc32(s3_client, project_bucket, RAW, data, 7 * MIB)
    proxy.add(SseKms())
    caplog.set_level(logging.INFO, logger=LOG.name)
    if versioned:
        outcome = back_up(access).run()
        assert outcome.status == BackupStatus.DONE and outcome.bytes_uploaded == len(data)
        assert versions(s3_client, project_bucket) == [data, data]  # the other tool's object kept
        replacing = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("REPLACING"))
        assert "so it cannot be compared with the local file" in replacing
        return
    with pytest.raises(ObjectConflictError) as refused:
        back_up(access).run()
    reason = str(refused.value)
    assert "its composite CRC32" in reason and "is computed over parts whose sizes S3 does not list" in reason
    assert (
        f"no common part size (5, 8, 15, 16, 50, 64, 100, 500 MiB) cuts {len(data)} bytes into its 4 parts"
        in reason
    )
    assert "so it cannot be compared with the local file" in reason and "Enable versioning" in reason
    assert not any(r.operation in WRITES for r in proxy.requests)
    assert versions(s3_client, project_bucket) == [data]
