"""The backup service and the sensor with S3's checksums (issue 17): each manifest entry records the
full-object CRC64NVME S3 validated and the encryption S3 declared; under SSE-KMS (emulated on the wire by the
fault proxy) the upload, the re-run and the sensor all decide by that checksum, never by the opaque ETag."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from awscrt import checksums

from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.core.settings import BackupSettings
from airflow_provider_kraken_s3.core.verdict import DISAGREES_PREFIX
from airflow_provider_kraken_s3.records.lease import Attempt
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.sensors.backup_verified import S3BackupVerifiedSensor
from airflow_provider_kraken_s3.services.backup import RawFileBackup
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag
from tests.conftest import aws_connection_json
from tests.faults_sse import SseKms, opaque_etag
from tests.staging import stage_raw_file

PART = 5 * MIB
LOG = logging.getLogger("kraken.test.backup")
WRITES = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")
SIZES = {"x.d/analysis.tdf_bin": 2 * PART + 3, "x.d/analysis.tdf": 4000, "x.d/meta/a.xml": 10}


def crc(data: bytes) -> str:
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


def back_up(access, raw_file_id: str) -> RawFileBackup:
    settings = BackupSettings(backup_type="s3", bucket_prefix="kraken-lab", region_name=None, part_size=PART)
    return RawFileBackup(raw_file_id, settings, access, Attempt.new(f"test/{raw_file_id}"), LOG)


def manifest_of(raw_file_id: str) -> dict[str, dict]:
    stored = RawFile._get_collection().find_one({"_id": raw_file_id})
    return {item["path"]: item for item in stored["s3_manifest"]["objects"]}


@pytest.fixture
def staged(kraken_mongo, project_bucket, tmp_path: Path):
    def stage(raw_file_id: str, sizes: dict[str, int]) -> Path:
        base = tmp_path / "backup"
        stage_raw_file(base, raw_file_id, sizes, project_id="P1234")
        return base

    return stage


@pytest.fixture
def sensor_via(proxy, monkeypatch):
    """The sensor, its ``aws_default`` pointing at the proxy (so it sees what the proxy makes S3 answer)."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json(proxy.url))

    def make(raw_file_id: str) -> S3BackupVerifiedSensor:
        return S3BackupVerifiedSensor(
            task_id="verify", raw_file_id=raw_file_id, poke_interval=0.05, timeout=30
        )

    return make


def test_every_manifest_entry_records_the_checksum_s3_validated(proxy, access, staged) -> None:
    base = staged("x.d", SIZES)
    assert back_up(access, "x.d").run().status == BackupStatus.DONE
    for path, item in manifest_of("x.d").items():
        data = (base / path).read_bytes()
        assert (item["checksum_algorithm"], item["checksum"]) == ("CRC64NVME", crc(data))
        assert item["checksum_full_object"] is True and "encryption" not in item
        assert item["etag"] == compute_s3_etag(base / path, PART)  # the ETag still proves here


def test_under_sse_kms_the_backup_the_rerun_and_the_sensor_decide_by_checksum(
    proxy, access, s3_client, staged, sensor_via
) -> None:
    proxy.add(SseKms())
    base = staged("x.d", SIZES)
    outcome = back_up(access, "x.d").run()
    assert outcome.status == BackupStatus.DONE and outcome.bytes_uploaded == sum(SIZES.values())
    entries = manifest_of("x.d")
    for path, item in entries.items():
        data = (base / path).read_bytes()
        assert item["checksum"] == crc(data) and item["encryption"] == "aws:kms"
        assert item["etag"] == opaque_etag(compute_s3_etag(base / path, PART))  # S3's answer, opaque
    # alphakraken's precomputed "<etag>__<MiB>" is an MD5-derived ETag: an opaque one is never written there
    file_info = RawFile._get_collection().find_one({"_id": "x.d"})["file_info"]
    assert all(len(entry) == 2 for entry in file_info.values())

    # A re-run of the DONE record: re-proven by HEAD and the recorded checksums; nothing read, nothing sent.
    before = len(proxy.requests)
    again = back_up(access, "x.d").run()
    seen = [r.operation for r in proxy.requests[before:]]
    assert again.status == BackupStatus.DONE and again.bytes_uploaded == 0
    assert not any(op in WRITES for op in seen) and "GetObject" not in seen
    assert seen.count("HeadObject") >= len(SIZES)  # never a listing's opaque ETag

    # The sensor: every object HEADed and proven by the recorded checksum.
    returned = sensor_via("x.d").poke(context={})
    assert returned.is_done and {o["key"] for o in returned.xcom_value["objects"]} == set(SIZES)

    # Other bytes of the same size behind the key: the checksum says so, whatever the ETag.
    other = bytes(4000)
    s3_client.put_object(
        Bucket=outcome.bucket, Key="x.d/analysis.tdf", Body=other, ChecksumAlgorithm="CRC64NVME"
    )
    with pytest.raises(AirflowFailException) as failure:
        sensor_via("x.d").poke(context={})
    message = str(failure.value)
    assert message.startswith(DISAGREES_PREFIX) and "x.d/analysis.tdf" in message
    assert (
        f"its full-object CRC64NVME {crc(other)} differs from the file's {crc((base / 'x.d/analysis.tdf').read_bytes())}"
        in message
    )
