"""The full-object CRC64NVME computed in the same read pass as the MD5s (issue 17): per part as a part body is
first read, whole-file in the hashing passes (the hash-first step, ``kraken-s3 etag``), and combined from the
parts exactly as S3 combines a FULL_OBJECT multipart upload."""

from __future__ import annotations

import base64
import hashlib
import random
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from awscrt import checksums

from airflow_provider_kraken_s3.core.checksum import ALGORITHM, Checksum, encode_crc64, full_object_crc64nvme
from airflow_provider_kraken_s3.core.errors import InvalidInputError, LocalFileChangedError
from airflow_provider_kraken_s3.core.part_layouts import CrcLayout
from airflow_provider_kraken_s3.core.parts import MIB, plan_parts
from airflow_provider_kraken_s3.transfer.hashing import (
    READ_BLOCK,
    Digests,
    compute_s3_digests,
    compute_s3_etag_and_md5,
    compute_s3_etags,
    hash_file,
    hash_into,
)
from airflow_provider_kraken_s3.transfer.stream_checksums import StreamChecksums
from airflow_provider_kraken_s3.transfer.streams import STREAM_BLOCK, PartBody

PART = 5 * MIB


def _reference_crc64nvme(data: bytes) -> int:
    """CRC-64/NVME bit by bit (reflected polynomial, all-ones start and end): independent of awscrt."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x9A6C9329AC4BC9B5 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFFFFFFFFFF


def _crc(data: bytes) -> Checksum:
    """What S3 reports for ``data``: awscrt's CRC64NVME of all of it in one call, base64."""
    return Checksum(ALGORITHM, encode_crc64(checksums.crc64nvme(data)))


def test_the_reference_is_crc64nvme() -> None:
    """The catalogue's check value (CRC-64/NVME of "123456789"), and awscrt agrees with the reference."""
    assert _reference_crc64nvme(b"123456789") == 0xAE8B14860A799888
    sample = random.Random(0).randbytes(3000)
    assert checksums.crc64nvme(sample) == _reference_crc64nvme(sample)


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = random.Random(17).randbytes(3 * PART + 3 * STREAM_BLOCK + 777)
    path = tmp_path / "x.raw"
    path.write_bytes(data)
    return path, data


def test_part_body_checksums_each_byte_once_at_its_first_read(data_file) -> None:
    """botocore rewinds and re-reads a body (a retry, a checksum computed before sending): the CRC, like the
    MD5, covers each byte once, as first read."""
    path, data = data_file
    plan = plan_parts(len(data), PART)
    for part in plan.parts():
        body = PartBody(path, part)
        body.read(1000)
        body.seek(0)
        body.read(STREAM_BLOCK + 5)
        body.seek(0)
        assert body.read() == data[part.offset : part.end]
        body.seek(3)
        body.read()
        wanted = data[part.offset : part.end]
        assert body.checksum() == _crc(wanted)
        assert body.crc64nvme() == checksums.crc64nvme(wanted)
        assert body.hexdigest() == hashlib.md5(wanted).hexdigest()
        body.close()


def test_part_body_refuses_a_checksum_before_the_part_was_read(data_file) -> None:
    path, data = data_file
    body = PartBody(path, next(plan_parts(len(data), PART).parts()))
    body.read(10)
    with pytest.raises(RuntimeError, match="was read only"):
        body.checksum()


def test_part_checksums_combine_into_the_whole_files(data_file) -> None:
    """What S3 computes at completion of a FULL_OBJECT upload, from the part CRCs read on the way."""
    path, data = data_file
    plan = plan_parts(len(data), PART)
    crcs = []
    for part in plan.parts():
        body = PartBody(path, part)
        body.drain()
        crcs.append((body.crc64nvme(), part.length))
        body.close()
    assert len(crcs) == 4
    assert full_object_crc64nvme(crcs) == _crc(data)


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 2 * READ_BLOCK + 3])
def test_compute_s3_digests_adds_the_checksum_to_the_same_pass(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f.raw"
    path.write_bytes(data)
    digests = compute_s3_digests(path, PART)
    assert (digests.etag, digests.md5) == compute_s3_etag_and_md5(path, PART)
    assert digests.md5 == hashlib.md5(data).hexdigest()
    assert digests.checksum == _crc(data)


def test_hash_file_gives_the_checksum_beside_every_candidate_etag(data_file) -> None:
    path, data = data_file
    hashed = hash_file(path, [PART, 8 * MIB, 100 * MIB])
    assert (hashed.etags, hashed.md5) == compute_s3_etags(path, [PART, 8 * MIB, 100 * MIB])
    assert hashed.checksum == _crc(data)
    assert hash_file(path, [PART], checksum=False).checksum is None


@pytest.mark.parametrize("threads", [False, True])
def test_digests_checksum_whether_blocks_are_hashed_on_a_pool_or_not(data_file, threads: bool) -> None:
    path, data = data_file
    with ThreadPoolExecutor(max_workers=3) as pool:
        digests = Digests(len(data), [PART], pool=pool if threads else None, checksum=True)
        with path.open("rb") as handle:
            assert hash_into(digests, handle, len(data)) == len(data)
    assert digests.checksum == _crc(data)
    assert digests.md5 == hashlib.md5(data).hexdigest()
    unasked = Digests(4, [])
    unasked.update(b"abcd")
    assert unasked.checksum is None


def test_hash_file_gives_another_tools_crc32_at_every_layout_in_the_same_pass(data_file) -> None:
    """The hash-first read of an object written by another tool: its CRC32 (composite at each candidate part
    size, or of the whole file) beside the MD5, the ETags and the CRC64NVME, from one read."""
    path, data = data_file
    layouts = (
        CrcLayout.uniform("CRC32", len(data), PART),
        CrcLayout.uniform("CRC32", len(data), 8 * MIB),
        CrcLayout.whole("CRC32C", len(data)),
    )
    hashed = hash_file(path, [32 * MIB], layouts=layouts)
    assert hashed.md5 == hashlib.md5(data).hexdigest() and hashed.checksum == _crc(data)
    assert [layout for layout, _ in hashed.at_layouts] == list(layouts)
    for layout, checksum in hashed.at_layouts:
        alone = StreamChecksums(len(data), layout)
        alone.update(data)
        assert checksum == alone.at_layout()
    parts = [zlib.crc32(data[i : i + PART]) for i in range(0, len(data), PART)]
    joined = zlib.crc32(b"".join(crc.to_bytes(4, "big") for crc in parts))
    assert hashed.at_layouts[0][1] == Checksum(
        "CRC32", f"{base64.b64encode(joined.to_bytes(4, 'big')).decode()}-4", full_object=False
    )
    with pytest.raises(LocalFileChangedError):  # the file is no longer the size it was compared as
        hash_file(path, [PART], layouts=(CrcLayout.whole("CRC32", len(data) + 1),))


@pytest.mark.parametrize("threads", [False, True])
def test_digests_feed_crc_layouts_whether_on_a_pool_or_not(data_file, threads: bool) -> None:
    path, data = data_file
    layout = CrcLayout.uniform("CRC32C", len(data), 8 * MIB)
    with ThreadPoolExecutor(max_workers=3) as pool:
        digests = Digests(len(data), [PART], pool=pool if threads else None, layouts=[layout])
        with path.open("rb") as handle:
            assert hash_into(digests, handle, len(data)) == len(data)
    alone = StreamChecksums(len(data), layout)
    alone.update(data)
    assert digests.at_layouts == ((layout, alone.at_layout()),)
    with pytest.raises(InvalidInputError):
        Digests(len(data), layouts=[CrcLayout.whole("CRC32", 1)])
