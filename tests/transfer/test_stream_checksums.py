"""transfer/stream_checksums.py, transfer/attributes.py and the checksums a download computes in flight
(transfer/download.py), against moto_server with awscrt (it stores full-object CRC64NVME checksums)."""

from __future__ import annotations

import base64
import random
import zlib

import pytest
from awscrt import checksums as crt

from airflow_provider_kraken_s3.core.checksum import Checksum
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.part_layouts import CrcLayout
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.transfer.attributes import object_attributes
from airflow_provider_kraken_s3.transfer.download import ObjectDownload, download_object, head_object
from airflow_provider_kraken_s3.transfer.hashing import Digests
from airflow_provider_kraken_s3.transfer.stream_checksums import StreamChecksums
from tests.checksum_objects import crc32, crc64, upload_composite_crc32, upload_full_object
from tests.conftest import random_bytes

PART = 5 * MIB


# ------------------------------------------------------------------ pure


def test_crc64nvme_of_blocks_in_any_cut_with_or_without_their_crcs() -> None:
    data = random_bytes(3 * MIB + 11, seed=4)
    rng = random.Random(2)
    checksums = StreamChecksums(len(data))
    position = 0
    while position < len(data):
        block = data[position : position + rng.choice([1, 999, MIB, 2 * MIB + 1])]
        known = crt.crc64nvme(block) if rng.random() < 0.5 else None
        checksums.update(block, known)
        position += len(block)
    assert checksums.crc64nvme == Checksum("CRC64NVME", crc64(data))


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C"])
def test_composite_and_full_object_32_bit_crcs_at_a_layout(algorithm: str) -> None:
    data = random_bytes(12 * MIB + 5, seed=9)
    crc = (lambda b: zlib.crc32(b)) if algorithm == "CRC32" else (lambda b: crt.crc32c(b))
    parts = [data[i : i + PART] for i in range(0, len(data), PART)]
    checksums = StreamChecksums(len(data), CrcLayout.uniform(algorithm, len(data), PART))
    for start in range(0, len(data), 3 * MIB):
        checksums.update(data[start : start + 3 * MIB])
    encode = lambda v: base64.b64encode(v.to_bytes(4, "big")).decode()  # noqa: E731
    assert checksums.part_checksums == tuple(encode(crc(part)) for part in parts)
    composite = encode(crc(b"".join(crc(part).to_bytes(4, "big") for part in parts)))
    assert checksums.at_layout() == Checksum(algorithm, f"{composite}-3", full_object=False)
    whole = StreamChecksums(len(data), CrcLayout.whole(algorithm, len(data)))
    whole.update(data)
    assert whole.at_layout() == Checksum(algorithm, encode(crc(data)), full_object=True)


def test_refuses_a_layout_of_another_size_too_many_bytes_and_early_answers() -> None:
    with pytest.raises(InvalidInputError):
        StreamChecksums(10, CrcLayout("CRC32", (4, 4)))
    checksums = StreamChecksums(4, CrcLayout.uniform("CRC32", 4, 2))
    checksums.update(b"ab")
    with pytest.raises(InvalidInputError):
        _ = checksums.crc64nvme
    with pytest.raises(InvalidInputError):
        checksums.update(b"cde")
    empty = StreamChecksums(0, CrcLayout.uniform("CRC32", 0, PART))
    assert empty.crc64nvme.value == crc64(b"") and empty.part_checksums == (crc32(b""),)


# ------------------------------------------------------------------ against moto


@pytest.mark.parametrize("size", [0, 1000, 2 * PART + 123])
def test_download_computes_the_crc64nvme_s3_stores(access, s3_client, bucket, size: int) -> None:
    data = random_bytes(size, seed=size)
    upload_full_object(s3_client, bucket, "x.raw", data)
    head = head_object(access, bucket, "x.raw")
    assert head is not None and head.checksum == Checksum("CRC64NVME", crc64(data))
    result = download_object(access, bucket, head, range_size=MIB, max_concurrency=4)
    assert result.crc64nvme == head.checksum  # ranges fetched in parallel, their CRCs combined in order
    assert result.md5 is not None and result.at_layout is None


def test_a_continued_download_carries_the_checksums_of_the_bytes_it_had(access, s3_client, bucket) -> None:
    data = random_bytes(3 * MIB + 7, seed=3)
    upload_full_object(s3_client, bucket, "y.raw", data)
    head = head_object(access, bucket, "y.raw")
    assert head is not None
    start = MIB + 1
    digests = Digests(len(data))
    digests.update(data[:start])
    checksums = StreamChecksums(len(data), CrcLayout.uniform("CRC32", len(data), MIB))
    checksums.update(data[:start])
    result = ObjectDownload(
        access, bucket, head, digests, start=start, checksums=checksums, range_size=MIB
    ).run()
    assert result.bytes_fetched == len(data) - start
    assert result.crc64nvme == Checksum("CRC64NVME", crc64(data))
    assert result.at_layout is not None and result.at_layout.value.endswith("-4")
    digests = Digests(len(data))
    digests.update(data[:start])
    without = ObjectDownload(access, bucket, head, digests, start=start, range_size=MIB).run()
    assert without.crc64nvme is None  # no checksums of the first bytes: none claimed for the whole


def test_attributes_of_full_object_and_composite_objects(access, s3_client, bucket) -> None:
    data = random_bytes(2 * PART + 9, seed=5)
    upload_full_object(s3_client, bucket, "full.raw", data)
    upload_composite_crc32(s3_client, bucket, "composite.raw", data)
    full = object_attributes(access, bucket, "full.raw")
    assert full is not None and full.size == len(data)
    assert full.checksum == Checksum("CRC64NVME", crc64(data), full_object=True)
    composite = object_attributes(access, bucket, "composite.raw")
    assert composite is not None and composite.checksum is not None
    assert composite.checksum.algorithm == "CRC32" and not composite.checksum.full_object
    assert object_attributes(access, bucket, "nothing.raw") is None
