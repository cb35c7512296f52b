"""The checksum arithmetic against awscrt's own CRC64NVME, and the reading of S3's answers."""

from __future__ import annotations

import pytest
from awscrt import checksums
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_kraken_s3.core.checksum import (
    ALGORITHM,
    Checksum,
    Encryption,
    checksum_of,
    combine_crc64nvme,
    decode_crc64,
    encode_crc64,
    encryption_of,
    full_object_crc64nvme,
)


@given(st.binary(max_size=4096), st.binary(max_size=4096))
def test_combining_two_crcs_gives_the_crc_of_the_concatenation(first: bytes, second: bytes) -> None:
    combined = combine_crc64nvme(checksums.crc64nvme(first), checksums.crc64nvme(second), len(second))
    assert combined == checksums.crc64nvme(first + second)


@given(st.lists(st.binary(min_size=1, max_size=2048), min_size=1, max_size=8))
def test_full_object_checksum_of_parts_is_the_crc_of_the_whole(parts: list[bytes]) -> None:
    checksum = full_object_crc64nvme([(checksums.crc64nvme(part), len(part)) for part in parts])
    assert checksum == Checksum(ALGORITHM, encode_crc64(checksums.crc64nvme(b"".join(parts))))


def test_a_large_part_length_combines_without_materialising_bytes() -> None:
    zeros = bytes(5 * 1024**2)
    expected = checksums.crc64nvme(b"head" + zeros)
    assert combine_crc64nvme(checksums.crc64nvme(b"head"), checksums.crc64nvme(zeros), len(zeros)) == expected


def test_encoding_round_trips_and_refuses_other_lengths() -> None:
    assert decode_crc64(encode_crc64(0x0123456789ABCDEF)) == 0x0123456789ABCDEF
    with pytest.raises(ValueError, match="8 bytes"):
        decode_crc64("AAAA")
    with pytest.raises(ValueError, match="base64"):
        decode_crc64("not base64!")


def test_checksum_of_reads_the_first_algorithm_and_its_type() -> None:
    assert checksum_of({"ChecksumCRC64NVME": "abc=", "ChecksumType": "FULL_OBJECT"}) == Checksum(
        "CRC64NVME", "abc="
    )
    composite = checksum_of({"ChecksumCRC32": "xyz=-3"})
    assert composite == Checksum("CRC32", "xyz=-3", full_object=False)
    assert checksum_of({"ChecksumSHA256": "s=", "ChecksumType": "COMPOSITE"}) == Checksum(
        "SHA256", "s=", full_object=False
    )
    assert checksum_of({"ETag": '"d41d8cd98f00b204e9800998ecf8427e"'}) is None


@pytest.mark.parametrize(
    ("response", "encryption", "etag_is_md5"),
    [
        ({}, Encryption.NONE, True),
        ({"ServerSideEncryption": "AES256"}, Encryption.SSE_S3, True),
        ({"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "arn:aws:kms:k"}, Encryption.SSE_KMS, False),
        ({"ServerSideEncryption": "aws:kms:dsse"}, Encryption.SSE_KMS_DSSE, False),
        ({"SSECustomerAlgorithm": "AES256"}, Encryption.SSE_C, False),
        ({"ServerSideEncryption": "aws:future"}, Encryption.SSE_KMS, False),
    ],
)
def test_encryption_is_read_from_the_headers(
    response: dict, encryption: Encryption, etag_is_md5: bool
) -> None:
    assert encryption_of(response) is encryption
    assert encryption.etag_is_md5 is etag_is_md5


def test_a_manifest_entry_keeps_its_checksum() -> None:
    from airflow_provider_kraken_s3.core.manifest import ManifestObject, Proof

    entry = ManifestObject(
        "a.raw",
        "p/a.raw",
        3,
        "m" * 32,
        "e" * 32,
        proof=Proof.UPLOADED,
        checksum=Checksum(ALGORITHM, "AAAAAAAAAAA="),
    )
    document = entry.as_document()
    assert document["checksum_algorithm"] == ALGORITHM
    assert ManifestObject.from_document(document) == entry
    without = ManifestObject.from_document(
        {k: v for k, v in document.items() if not k.startswith("checksum")}
    )
    assert without.checksum is None
