"""Issue 17, the readers: audit, deep verify and restore decide by S3's stored checksum where the record names
one, skip the ETag where S3's headers say it is opaque (SSE-KMS, SSE-C), and say which proof they used.

Against moto_server over HTTP (with awscrt it stores full-object CRC64NVME checksums and returns them on HEAD
and GetObjectAttributes), through the FaultProxy. moto does not emulate SSE-KMS or SSE-C, so
:class:`tests.faults_sse.SseKms` answers as S3 does for an encrypted object: every ETag opaque (32 hex
digits that are no MD5 of the bytes, ``-N`` kept for multipart objects), the encryption headers added, the
request's ``If-Match`` mapped back to moto's ETag; for SSE-C it also refuses an object request that does not
carry the key. What S3 itself validates (a wrong checksum refused on upload, KMS permissions) is not
emulated here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from airflow_provider_kraken_s3.core.audit import AuditFindingKind
from airflow_provider_kraken_s3.core.checksum import Checksum
from airflow_provider_kraken_s3.core.deep_verify import DeepVerifyOutcome
from airflow_provider_kraken_s3.core.layout import key_prefix
from airflow_provider_kraken_s3.core.manifest import MANIFEST_FIELD, Manifest, ManifestObject, Proof
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.core.verdict import RawFileRecord
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.services.audit import check_record
from airflow_provider_kraken_s3.services.deep_verify import deep_verify_raw_file
from airflow_provider_kraken_s3.services.restore import RestoreOutcome, restore_raw_file
from airflow_provider_kraken_s3.transfer.attributes import object_attributes
from tests.checksum_objects import crc64, upload_composite_crc32, upload_full_object
from tests.conftest import random_bytes
from tests.conftest_mongo import insert_raw_file, set_record
from tests.faults import Fault, ProxiedResponse, RequestRecord, flip_response_byte
from tests.faults_sse import KEYED_OPERATIONS, ListObjectParts, SseKms

PART = 5 * MIB
CREATED = datetime(2024, 1, 1, 12, tzinfo=timezone.utc)


# ------------------------------------------------------------------ backups with a manifest


@pytest.fixture
def checksum_backup(s3_client, bucket, kraken_mongo):
    """``checksum_backup(raw_file_id, {path: bytes}, composite=..., checksum=...)``: the objects uploaded as
    our uploads make them (CRC64NVME, full object) or as other tools do (``composite``: CRC32 per part), and an
    ``upload_done`` RawFile whose manifest vouches for them with the checksum S3 stored (``checksum=False``:
    a manifest without checksums, as before issue 17)."""

    def make(
        raw_file_id: str, files: dict[str, bytes], *, composite: bool = False, checksum: bool = True
    ) -> Manifest:
        prefix = key_prefix(raw_file_id, project_id="P1234", instrument_id="astral1", created_at=CREATED)
        objects = []
        for path, data in sorted(files.items()):
            key = prefix + path
            if composite:
                upload_composite_crc32(s3_client, bucket, key, data, PART)
            else:
                upload_full_object(s3_client, bucket, key, data, PART)
            etag = s3_client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
            stored = s3_client.get_object_attributes(Bucket=bucket, Key=key, ObjectAttributes=["Checksum"])
            algorithm, value = next(
                (k, v)
                for k, v in stored["Checksum"].items()
                if k.startswith("Checksum") and k != "ChecksumType"
            )
            full = stored["Checksum"].get("ChecksumType") != "COMPOSITE"
            objects.append(
                ManifestObject(
                    path=path,
                    key=key,
                    size=len(data),
                    md5=hashlib.md5(data).hexdigest(),
                    etag=etag,
                    part_size=PART if "-" in etag else None,
                    proof=Proof.UPLOADED,
                    checksum=Checksum(algorithm.removeprefix("Checksum"), value, full) if checksum else None,
                )
            )
        manifest = Manifest(bucket=bucket, prefix=prefix, objects=tuple(objects), proven_at=CREATED)
        file_info = {item.path: [item.size, item.md5] for item in objects}
        insert_raw_file(
            raw_file_id,
            size=sum(map(len, files.values())),
            file_info=file_info,
            backup_status=BackupStatus.DONE,
            s3_bucket=bucket,
            created_at=CREATED,
        )
        set_record(raw_file_id, **{MANIFEST_FIELD: manifest.as_document()})
        return manifest

    return make


def audit(access, raw_file_id: str):
    return check_record(access, RawFileRecord.of(store.get_raw_file(raw_file_id)))


SET = {
    "x.d/analysis.tdf": random_bytes(2 * PART + 123, seed=1),
    "x.d/analysis.tdf_bin": random_bytes(70_000, seed=2),
    "x.d/sub/meta.xml": b"<meta/>",
}
ONE = {"one.raw": random_bytes(PART + 77, seed=3)}


# ------------------------------------------------------------------ audit


@pytest.mark.parametrize(
    "files", [ONE, SET], ids=["one object: HEAD", "a set: listing + GetObjectAttributes"]
)
def test_audit_proves_checksum_objects_under_opaque_etags_without_a_get(
    access, proxy, checksum_backup, files
) -> None:
    raw_file_id = next(iter(files)).split("/")[0]
    checksum_backup(raw_file_id, files)
    kms = proxy.add(SseKms())
    result = audit(access, raw_file_id)
    assert [(f.kind, f.proof) for f in result.findings] == [(AuditFindingKind.OK, "checksum")] * len(files)
    assert all(
        "S3's stored CRC64NVME (full object) and size equal the record's" in f.detail for f in result.findings
    )
    assert all(f.found_etag in kms.real for f in result.findings)  # every ETag S3 showed was opaque
    assert proxy.records("GetObject") == []  # proven without a byte downloaded
    if len(files) > 1:
        assert len(proxy.records("ListObjectsV2")) == 1
        assert len(proxy.records("GetObjectAttributes")) == len(files) and not proxy.records("HeadObject")


@pytest.mark.parametrize("files", [ONE, SET], ids=["one object", "a set"])
def test_audit_finds_a_replaced_object_by_its_checksum(
    access, proxy, s3_client, bucket, checksum_backup, files
) -> None:
    raw_file_id = next(iter(files)).split("/")[0]
    manifest = checksum_backup(raw_file_id, files)
    victim = manifest.objects[0]
    other = bytearray(files[victim.path])
    other[-1] ^= 0xFF  # same size, one byte other
    upload_full_object(s3_client, bucket, victim.key, bytes(other), PART)
    proxy.add(SseKms())
    result = audit(access, raw_file_id)
    kinds = {f.key: (f.kind, f.proof) for f in result.findings}
    assert kinds.pop(victim.key) == (AuditFindingKind.DIFFERENT, "checksum")
    assert set(kinds.values()) <= {(AuditFindingKind.OK, "checksum")}
    detail = next(f.detail for f in result.findings if f.key == victim.key)
    assert (
        f"S3's stored CRC64NVME is {crc64(bytes(other))}, the record's is {victim.checksum.value}" in detail
    )
    assert proxy.records("GetObject") == []


def test_without_a_recorded_checksum_the_etag_decides_and_under_kms_nothing_can(
    access, proxy, checksum_backup
) -> None:
    checksum_backup("x.d", SET, checksum=False)
    plain = audit(access, "x.d")
    assert [(f.kind, f.proof) for f in plain.findings] == [(AuditFindingKind.OK, "etag")] * len(SET)
    proxy.add(SseKms())
    encrypted = audit(access, "x.d")
    assert [(f.kind, f.proof) for f in encrypted.findings] == [(AuditFindingKind.UNCHECKED, None)] * len(SET)
    detail = encrypted.findings[0].detail
    assert detail.startswith("cannot prove without download: it is encrypted with SSE-KMS")
    assert "the record names no checksum" in detail and "kraken-s3 verify RAW_FILE_ID --deep" in detail
    assert proxy.records("GetObject") == []


def test_json_and_table_say_which_proof(access, proxy, checksum_backup) -> None:
    from airflow_provider_kraken_s3.core.audit import AuditSummary, render_json_lines, render_table

    checksum_backup("one.raw", ONE)
    result = audit(access, "one.raw")
    summary = AuditSummary()
    summary.add(result)
    line = json.loads(render_json_lines(result.findings).splitlines()[0])
    assert line["kind"] == "ok" and line["proof"] == "checksum"
    table = render_table(result.findings, summary, include_ok=True).splitlines()
    assert "PROOF" in table[0] and "checksum" in table[1]


# ------------------------------------------------------------------ deep verify


def test_deep_verify_under_kms_decides_by_checksum_and_md5(access, proxy, checksum_backup) -> None:
    checksum_backup("x.d", SET)
    proxy.add(SseKms())
    report = deep_verify_raw_file(access, "x.d", range_size=MIB, max_concurrency=3)
    assert report.outcome is DeepVerifyOutcome.OK, report.problems()
    assert [o.proof for o in report.objects] == ["md5+checksum"] * len(SET)
    detail = report.objects[0].detail
    assert "S3's ETag was not compared: the object is encrypted with SSE-KMS" in detail
    assert "the CRC64NVME the record vouches for is theirs" in detail and "S3's stored CRC64NVME" in detail


def test_deep_verify_under_kms_catches_rotten_bytes(access, proxy, checksum_backup) -> None:
    checksum_backup("one.raw", ONE)
    proxy.add(SseKms())
    proxy.add(flip_response_byte("GetObject", offset=PART + 3, times=None))
    report = deep_verify_raw_file(access, "one.raw", range_size=MIB, record=False)
    assert report.outcome is DeepVerifyOutcome.DIFFERS  # the MD5 shows it first


def test_deep_verify_without_encryption_uses_all_three_proofs(access, checksum_backup) -> None:
    checksum_backup("one.raw", ONE)
    report = deep_verify_raw_file(access, "one.raw", range_size=MIB, record=False)
    assert report.outcome is DeepVerifyOutcome.OK and report.objects[0].proof == "md5+checksum+etag"


def test_deep_verify_shows_a_stored_checksum_that_no_longer_describes_the_bytes(
    access, proxy, checksum_backup
) -> None:
    """The bytes are right (MD5), but the checksum S3 keeps (which audits trust) is another: DIFFERS."""
    checksum_backup("one.raw", ONE)

    @dataclass
    class StoredChecksum(Fault):
        operation: str = "HeadObject"
        times: int | None = None

        def on_response(self, record: RequestRecord, response: ProxiedResponse) -> None:
            response.set_header("x-amz-checksum-crc64nvme", crc64(b"something else"))

    proxy.add(StoredChecksum())
    report = deep_verify_raw_file(access, "one.raw", range_size=MIB, record=False)
    assert report.outcome is DeepVerifyOutcome.DIFFERS
    assert "the checksum that audits trust no longer describes the object" in report.objects[0].detail


# ------------------------------------------------------------------ restore


def test_restore_under_kms_proves_the_restored_bytes_by_checksum(
    access, proxy, checksum_backup, tmp_path: Path
) -> None:
    checksum_backup("x.d", SET)
    proxy.add(SseKms())
    report = restore_raw_file(access, "x.d", tmp_path / "out", range_size=MIB)
    assert report.ok and {f.outcome for f in report.files} == {RestoreOutcome.RESTORED}
    assert all("and the record's CRC64NVME" in f.detail for f in report.files)
    for path, data in SET.items():
        assert (tmp_path / "out" / path).read_bytes() == data
    gets = len(proxy.records("GetObject"))
    again = restore_raw_file(access, "x.d", tmp_path / "out", range_size=MIB)
    assert {f.outcome for f in again.files} == {RestoreOutcome.ALREADY_PRESENT}
    assert all("and its checksum" in f.detail for f in again.files)
    assert len(proxy.records("GetObject")) == gets  # already present: proven locally, nothing downloaded


def test_restore_refuses_bytes_whose_checksum_is_not_the_records(
    access, checksum_backup, tmp_path: Path
) -> None:
    manifest = checksum_backup("one.raw", ONE)
    document = manifest.as_document()
    document["objects"][0]["checksum"] = crc64(b"not these bytes")
    set_record("one.raw", **{MANIFEST_FIELD: document})
    report = restore_raw_file(access, "one.raw", tmp_path / "out", range_size=MIB)
    assert [f.outcome for f in report.files] == [RestoreOutcome.FAILED]
    assert "the record's checksum is wrong" in report.files[0].detail
    assert not (tmp_path / "out" / "one.raw").exists()


def test_restore_continues_a_partial_file_with_its_checksum(
    access, proxy, checksum_backup, tmp_path: Path
) -> None:
    """A partial file of an earlier run is re-hashed (MD5 and CRC64NVME), the rest fetched: still proven."""
    checksum_backup("one.raw", ONE)
    out = tmp_path / "out"
    out.mkdir()
    head = access.client.head_object(
        Bucket=store.read_fields("one.raw", "s3_bucket")["s3_bucket"], Key="one.raw"
    )
    partial = out / f".one.raw.{head['ETag'].strip(chr(34))}.kraken-restore"
    partial.write_bytes(ONE["one.raw"][: 2 * MIB + 5])
    report = restore_raw_file(access, "one.raw", out, range_size=MIB)
    assert report.ok and report.files[0].resumed_from == 2 * MIB + 5
    assert "and the record's CRC64NVME" in report.files[0].detail


# ------------------------------------------------------------------ composite checksums of other tools


COMPOSITE = {"tool.raw": random_bytes(2 * PART + 999, seed=7)}


def test_a_composite_crc32_object_is_proven_at_the_part_layout_the_etag_gives(
    access, proxy, checksum_backup
) -> None:
    checksum_backup("tool.raw", COMPOSITE, composite=True, checksum=False)
    report = deep_verify_raw_file(access, "tool.raw", range_size=MIB, record=False)
    assert report.outcome is DeepVerifyOutcome.OK and report.objects[0].proof == "md5+checksum+etag"
    assert (
        "S3's stored CRC32 (composite, recomputed at the object's part layout) is theirs"
        in report.objects[0].detail
    )


def test_a_composite_object_under_kms_is_proven_at_the_part_layout_s3_lists(
    access, proxy, checksum_backup
) -> None:
    """Under KMS the ETag tells no part size; GetObjectAttributes' ObjectParts (emulated) does."""
    data = COMPOSITE["tool.raw"]
    checksum_backup("tool.raw", COMPOSITE, composite=True, checksum=False)
    parts = [data[i : i + PART] for i in range(0, len(data), PART)]
    from tests.checksum_objects import crc32

    proxy.add(SseKms())
    listing = proxy.add(ListObjectParts(parts=[(len(p), crc32(p)) for p in parts]))
    assert object_attributes(
        access, store.read_fields("tool.raw", "s3_bucket")["s3_bucket"], "tool.raw"
    ).part_sizes == tuple(len(p) for p in parts)
    report = deep_verify_raw_file(access, "tool.raw", range_size=MIB, record=False)
    assert report.outcome is DeepVerifyOutcome.OK and report.objects[0].proof == "md5+checksum"
    assert listing.fired >= 2


def test_a_composite_object_whose_layout_is_unknown_is_unproven_by_checksum(
    access, proxy, checksum_backup
) -> None:
    checksum_backup("tool.raw", COMPOSITE, composite=True, checksum=False)
    proxy.add(SseKms())  # opaque ETag, no ObjectParts: no part layout anywhere
    report = deep_verify_raw_file(access, "tool.raw", range_size=MIB, record=False)
    assert report.outcome is DeepVerifyOutcome.OK and report.objects[0].proof == "md5"
    assert (
        "could not be recomputed (its part layout is unknown): unproven by checksum"
        in report.objects[0].detail
    )


def test_audit_of_a_composite_checksum_the_record_names(access, proxy, checksum_backup) -> None:
    checksum_backup("tool.raw", COMPOSITE, composite=True)
    proxy.add(SseKms())
    result = audit(access, "tool.raw")
    assert [(f.kind, f.proof) for f in result.findings] == [(AuditFindingKind.OK, "checksum")]
    assert "S3's stored CRC32 (composite) and size equal the record's" in result.findings[0].detail


# ------------------------------------------------------------------ the record never holds a key


def test_records_hold_no_encryption_key(checksum_backup) -> None:
    checksum_backup("one.raw", ONE)
    document = RawFile._get_collection().find_one({"_id": "one.raw"})
    assert "sse" not in json.dumps(document, default=str).lower()


# ------------------------------------------------------------------ SSE-C, end to end


def test_sse_c_backup_deep_verify_and_restore_send_the_key_and_keep_it_to_themselves(
    proxy, s3_client, kraken_mongo, monkeypatch, tmp_path: Path, task_log
) -> None:
    """The key from the connection travels on every object request of a backup, a deep verify and a restore
    (the emulated store refuses reads without it and answers with opaque ETags), and appears in no log line
    and nowhere on the RawFile."""
    import base64
    import uuid

    from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
    from airflow_provider_kraken_s3.operators.raw_file_backup import RawFileS3BackupOperator
    from tests.staging import stage_raw_file

    key = bytes(range(100, 132))
    key_text = base64.b64encode(key).decode()
    key_md5 = base64.b64encode(hashlib.md5(key).digest()).decode()
    connection = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": proxy.url, "region_name": "us-east-1", "sse_customer_key": key_text},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(connection))
    prefix = f"ssec-{uuid.uuid4().hex[:8]}"
    bucket = f"{prefix}-p1234"
    s3_client.create_bucket(Bucket=bucket)
    stage_raw_file(
        tmp_path / "backup", "s.d", {"s.d/a.tdf": 2 * PART + 5, "s.d/b.bin": 1000}, project_id="P1234"
    )
    RawFileS3BackupOperator(
        task_id="upload_to_s3", raw_file_id="s.d", bucket_prefix=prefix, part_size=PART
    ).execute(context={})
    assert store.read_fields("s.d", "backup_status")["backup_status"] == BackupStatus.DONE

    proxy.add(SseKms(encryption="SSE-C", key_md5=key_md5))
    access = KrakenS3Hook(aws_conn_id="aws_default").access()
    report = deep_verify_raw_file(access, "s.d", range_size=MIB)
    assert report.outcome is DeepVerifyOutcome.OK, report.problems()
    assert all("the object is encrypted with SSE-C" in o.detail for o in report.objects)
    restored = restore_raw_file(access, "s.d", tmp_path / "out", range_size=MIB)
    assert restored.ok
    for path in ("s.d/a.tdf", "s.d/b.bin"):
        assert (tmp_path / "out" / path).read_bytes() == (tmp_path / "backup" / path).read_bytes()

    object_requests = [r for r in proxy.requests if r.operation in KEYED_OPERATIONS]
    assert {"PutObject", "CreateMultipartUpload", "UploadPart", "HeadObject", "GetObject"} <= {
        r.operation for r in object_requests
    }
    assert all(
        r.headers.get("x-amz-server-side-encryption-customer-key") == key_text
        and r.headers.get("x-amz-server-side-encryption-customer-key-md5") == key_md5
        and r.headers.get("x-amz-server-side-encryption-customer-algorithm") == "AES256"
        for r in object_requests
    )
    document = json.dumps(RawFile._get_collection().find_one({"_id": "s.d"}), default=str)
    assert key_text not in document and key_md5 not in document
    assert key_text not in task_log()
    for item in s3_client.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3_client.delete_object(Bucket=bucket, Key=item["Key"])
    s3_client.delete_bucket(Bucket=bucket)
