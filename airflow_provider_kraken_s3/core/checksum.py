"""S3's additional checksums and the encryption that decides whether an ETag can prove anything. Pure module.

Under SSE-S3 (and without encryption) S3's ETag is the MD5 of the bytes it stored (of each part, for multipart
objects), so it proves our bytes. Under SSE-KMS and SSE-C it is not: it is opaque, even when it has the shape
of an MD5. What survives every encryption mode is an **additional checksum** that S3 validated against the
value the client sent: the full-object CRC64NVME here (part-size independent: S3 combines the part CRCs and
checks the whole at completion).

This module holds the arithmetic and the reading of S3's answers; the CRC itself is computed in
:mod:`..transfer` (with ``awscrt``, in the same read pass as the MD5s), and the proof rule in
:mod:`.decision`.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The checksum declared on every new upload: full-object capable, and the fastest S3 offers.
ALGORITHM = "CRC64NVME"

#: S3's response (and request) fields, by algorithm; the first present one is the object's checksum.
_FIELDS = {
    "CRC64NVME": "ChecksumCRC64NVME",
    "CRC32C": "ChecksumCRC32C",
    "CRC32": "ChecksumCRC32",
    "SHA1": "ChecksumSHA1",
    "SHA256": "ChecksumSHA256",
}

#: CRC-64/NVME, reflected: the polynomial 0xAD93D23594C93659 with its bits reversed.
_POLY = 0x9A6C9329AC4BC9B5
_TOP = 1 << 63  # x^0 in the reflected representation


class Encryption(str, enum.Enum):
    """How S3 says it encrypted an object, read from its response headers (never from the ETag's shape)."""

    NONE = "none"
    SSE_S3 = "AES256"
    SSE_KMS = "aws:kms"
    SSE_KMS_DSSE = "aws:kms:dsse"
    SSE_C = "SSE-C"

    @property
    def etag_is_md5(self) -> bool:
        """Whether S3's ETag is MD5-derived: true without encryption and under SSE-S3 only."""
        return self in (Encryption.NONE, Encryption.SSE_S3)


def encryption_of(response: Mapping[str, Any]) -> Encryption:
    """The encryption an S3 response (PUT, UploadPart, completion, HEAD, GET) declares."""
    if response.get("SSECustomerAlgorithm"):
        return Encryption.SSE_C
    declared = str(response.get("ServerSideEncryption") or "")
    try:
        return Encryption(declared) if declared else Encryption.NONE
    except ValueError:  # a value newer than this code: not provably MD5, so treated as opaque
        return Encryption.SSE_KMS


@dataclass(frozen=True)
class Checksum:
    """An additional checksum as S3 shows it: the algorithm, the base64 value, and whether it covers the whole
    object (FULL_OBJECT) or is a checksum of part checksums (COMPOSITE, value ``…-N`` on S3)."""

    algorithm: str
    value: str
    full_object: bool = True

    @property
    def shown_parts(self) -> int | None:
        """The part count N a composite value shows as ``…-N`` (None where it shows none: moto drops it)."""
        count = self.value.partition("-")[2]
        return int(count) if count.isdigit() else None

    @property
    def field(self) -> str:
        """The request/response field carrying it (``ChecksumCRC64NVME``, …)."""
        return _FIELDS[self.algorithm]

    def __str__(self) -> str:
        kind = "full object" if self.full_object else "composite"
        return f"{self.algorithm} {self.value} ({kind})"


def checksum_of(response: Mapping[str, Any]) -> Checksum | None:
    """The additional checksum in a HEAD/GET/PUT/completion answer, or in ``GetObjectAttributes``'
    ``Checksum`` member; None when the store keeps none (Ceph RGW 16, objects uploaded without one)."""
    for algorithm, name in _FIELDS.items():
        value = response.get(name)
        if value:
            text = str(value)
            kind = str(response.get("ChecksumType") or "")
            composite = kind == "COMPOSITE" or (not kind and "-" in text)
            return Checksum(algorithm, text, full_object=not composite)
    return None


def encode_crc64(value: int) -> str:
    """A CRC-64 as S3 writes it: the 8 bytes big-endian, base64."""
    return base64.b64encode(value.to_bytes(8, "big")).decode()


def decode_crc64(text: str) -> int:
    """The integer of S3's base64 CRC-64; ValueError for anything else."""
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as error:
        raise ValueError(f"{text!r} is not base64") from error
    if len(raw) != 8:
        raise ValueError(f"{text!r} does not encode 8 bytes")
    return int.from_bytes(raw, "big")


def _multiply(a: int, b: int) -> int:
    """a(x)·b(x) modulo the CRC polynomial, both reflected."""
    product = 0
    mask = _TOP
    while a:
        if a & mask:
            product ^= b
            a ^= mask
        mask >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1
    return product


def _powers() -> list[int]:
    """x^(2^k) modulo the polynomial, k = 0…63."""
    powers, power = [], _TOP >> 1  # x^1
    for _ in range(64):
        powers.append(power)
        power = _multiply(power, power)
    return powers


_X_2K = _powers()


def _shift(length: int) -> int:
    """x^(8·length) modulo the polynomial: what appending ``length`` zero bytes multiplies a CRC by."""
    result, bits, k = _TOP, 8 * length, 0
    while bits:
        if bits & 1:
            result = _multiply(_X_2K[k % 64], result)
        bits >>= 1
        k += 1
    return result


def combine_crc64nvme(first: int, second: int, second_length: int) -> int:
    """The CRC64NVME of ``A + B`` from the CRC of A, the CRC of B and the length of B (as zlib's
    ``crc32_combine``; valid because the CRC's initial value equals its final XOR)."""
    return _multiply(_shift(second_length), first) ^ second if second_length else first


def full_object_crc64nvme(parts: Iterable[tuple[int, int]]) -> Checksum:
    """The full-object CRC64NVME of consecutive parts, each ``(crc, length)``: what S3 computes at completion
    of a ``FULL_OBJECT`` multipart upload, from the part CRCs we computed while reading."""
    total: int | None = None
    for crc, length in parts:
        total = crc if total is None else combine_crc64nvme(total, crc, length)
    return Checksum(ALGORITHM, encode_crc64(0 if total is None else total))
