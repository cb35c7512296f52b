"""Which proof a reader (audit, deep verify, restore) uses for an object: S3's stored checksum, or its ETag.

The upload proves the bytes it sent; a reader later asks whether S3 still holds them. Two things S3 says can
prove that without the bytes being read:

- the **stored additional checksum** (HEAD with ``ChecksumMode=ENABLED``, ``GetObjectAttributes``): S3
  validated it against the uploader's on arrival, and it keeps meaning "these bytes" under every encryption
  mode. When the record names one (the manifest's ``checksum``) and S3 stores one of the same algorithm and
  kind, they decide: equal (with the size) is proof, different is a difference — whatever the ETag;
- the **ETag**, as before, but only where it is a digest of the bytes: without encryption or under SSE-S3, as
  S3's response headers say (``ServerSideEncryption``, the SSE-C headers), never from the ETag's shape.

Under SSE-KMS or SSE-C without a usable checksum neither proves anything: the object *cannot be proven
without downloading it* (a deep verify reads and hashes it). Deep verify and restore compare the bytes they
read with the recorded checksum as well (:func:`bytes_against_checksum`); a composite CRC32/CRC32C that
another tool stored is compared where its part layout is known (:func:`describes_bytes`).

Pure module: no Airflow, boto3, MongoDB or I/O.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from airflow_provider_kraken_s3.core.checksum import Checksum, Encryption

#: What a deep verify tells a data steward to run when nothing short of the bytes can prove an object.
DEEP_VERIFY_HINT = "deep-verify it (kraken-s3 verify RAW_FILE_ID --deep, or S3BackupDeepVerifyOperator)"


class ProofKind(str, enum.Enum):
    """What proved (or disproved) an object without reading it."""

    CHECKSUM = "checksum"  # S3's stored additional checksum against the recorded one
    ETAG = "etag"  # S3's ETag, a digest of the bytes (no encryption, SSE-S3)


def _value_and_parts(checksum: Checksum) -> tuple[str, int | None]:
    """The base64 value and, for a composite checksum written ``…-N``, the part count N."""
    return checksum.value.partition("-")[0], checksum.shown_parts


def checksums_agree(recorded: Checksum, stored: Checksum | None) -> bool | None:
    """Whether S3's stored checksum equals the recorded one: True, False (shown different), or None when
    they cannot be compared (no stored checksum, another algorithm, full-object against composite).

    A composite value may be shown with or without its ``-N`` (S3's HEAD and ``GetObjectAttributes`` differ
    there; moto drops it): the part counts are compared only where both show them.
    """
    if stored is None or stored.algorithm != recorded.algorithm or stored.full_object != recorded.full_object:
        return None
    ours, our_parts = _value_and_parts(recorded)
    theirs, their_parts = _value_and_parts(stored)
    if our_parts is not None and their_parts is not None and our_parts != their_parts:
        return False
    return ours == theirs


@dataclass(frozen=True)
class StoredProof:
    """How a recorded object stands by what S3 stores, without its bytes being read.

    ``proven``: True (proven), False (shown different), None (cannot be told without the bytes). ``proof``:
    what decided (None when nothing could).
    """

    proven: bool | None
    proof: ProofKind | None
    reason: str


def by_checksum(
    size: int | None, recorded: Checksum | None, stored: Checksum | None, found_size: int
) -> StoredProof | None:
    """The verdict of the stored checksum on a recorded object, or None when it has none to give (the record
    names no checksum, or S3 stores none comparable with it): then the ETag rule decides, if it can."""
    if recorded is None:
        return None
    agree = checksums_agree(recorded, stored)
    if agree is None:
        return None
    if size is not None and found_size != size:
        return StoredProof(False, ProofKind.CHECKSUM, f"size expected {size} bytes, found {found_size} bytes")
    if not agree:
        return StoredProof(
            False,
            ProofKind.CHECKSUM,
            f"S3's stored {recorded.algorithm} is {stored.value if stored else '?'}, the record's is "
            f"{recorded.value}: the object holds other bytes than the backup vouched for",
        )
    return StoredProof(
        True,
        ProofKind.CHECKSUM,
        f"S3's stored {recorded.algorithm} ({'full object' if recorded.full_object else 'composite'}) and size "
        "equal the record's",
    )


def cannot_prove(encryption: Encryption, stored: Checksum | None, recorded: Checksum | None) -> StoredProof:
    """An object whose ETag is no digest of its bytes (SSE-KMS, SSE-C, a store with other ETags) and that no
    checksum proves: only reading it can."""
    if encryption.etag_is_md5:
        opaque = "its ETag is not an MD5 of its bytes (a store with other ETags)"
    else:
        opaque = f"it is encrypted with {encryption_name(encryption)}, so its ETag is not an MD5 of its bytes"
    if recorded is None:
        missing = "the record names no checksum"
    elif stored is None:
        missing = f"the store keeps no checksum for it (the record names {recorded.algorithm})"
    else:
        missing = f"the store keeps {stored} where the record names {recorded}"
    return StoredProof(
        None, None, f"cannot prove without download: {opaque} and {missing}; {DEEP_VERIFY_HINT}"
    )


def encryption_name(encryption: Encryption) -> str:
    """How S3's documentation names an encryption mode."""
    return {
        Encryption.NONE: "no encryption",
        Encryption.SSE_S3: "SSE-S3",
        Encryption.SSE_KMS: "SSE-KMS",
        Encryption.SSE_KMS_DSSE: "DSSE-KMS",
        Encryption.SSE_C: "SSE-C",
    }[encryption]


# --------------------------------------------------------------------------- bytes that were read


def bytes_against_checksum(computed: Checksum | None, recorded: Checksum | None) -> bool | None:
    """Whether bytes read (their ``computed`` CRC64NVME) have the record's full-object checksum: True, False,
    or None when the record names none of that algorithm (or nothing was computed)."""
    if computed is None or recorded is None or not recorded.full_object:
        return None
    return checksums_agree(recorded, computed)


def describes_bytes(
    stored: Checksum | None, crc64nvme: Checksum | None, at_layout: Checksum | None
) -> bool | None:
    """Whether S3's stored checksum is the checksum of the bytes read: their full-object CRC64NVME, or the
    CRC32/CRC32C computed at the object's part layout. None when it could not be recomputed (no stored
    checksum, an algorithm not computed, or a composite whose part layout is unknown)."""
    if stored is None:
        return None
    for computed in (crc64nvme, at_layout):
        if computed is not None:
            agree = checksums_agree(computed, stored)
            if agree is not None:
                return agree
    return None
