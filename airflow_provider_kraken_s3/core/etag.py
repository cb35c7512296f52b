"""The ETag S3 will report for a file, computed locally, and helpers to compare and store ETags.

Rule (the same one our uploader follows, so the value is predictable):

* a file no larger than one part is sent with a single PUT: ETag = hex MD5 of the bytes (empty file too);
* a larger file is a multipart upload: ETag = hex MD5 of the concatenated binary MD5s of its parts,
  followed by ``-<number of parts>``.

Pure: digests in, ETags out. Hashing files lives in :mod:`airflow_provider_kraken_s3.transfer.hashing`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.parts import MIB

_PRECOMPUTED_SEPARATOR = "__"


def normalize_etag(etag: str) -> str:
    """Unquoted, lower-case form: S3 returns ``"..."`` and some stores use upper case."""
    value = etag.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"').lower()


def etags_equal(first: str | None, second: str | None) -> bool:
    """Compare ETags ignoring quotes and case; a missing ETag never equals anything."""
    if not first or not second:
        return False
    return normalize_etag(first) == normalize_etag(second)


def etag_from_part_digests(digests: Sequence[bytes], *, multipart: bool) -> str:
    """Combine binary part MD5s into the ETag S3 reports (single PUT: the one digest itself)."""
    if not multipart:
        if len(digests) != 1:
            raise ValueError("a single PUT has exactly one digest")
        return digests[0].hex()
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def etag_part_count(etag: str) -> int | None:
    """Number of parts encoded in a multipart ETag, or None for a single-PUT ETag."""
    _, dash, count = normalize_etag(etag).partition("-")
    return int(count) if dash and count.isdigit() else None


@dataclass(frozen=True)
class PrecomputedEtag:
    """alphakraken's stored form ``"<etag>__<part size in MiB>"``: an ETag and the part size it assumes."""

    etag: str
    part_size_mib: int

    @property
    def part_size(self) -> int:
        return self.part_size_mib * MIB

    def __str__(self) -> str:
        return f"{self.etag}{_PRECOMPUTED_SEPARATOR}{self.part_size_mib}"


def parse_precomputed_etag(value: str) -> PrecomputedEtag:
    """Parse ``"<etag>__<part MiB>"``; refuse anything else with a message saying what was expected."""
    etag, sep, mib = str(value).strip().rpartition(_PRECOMPUTED_SEPARATOR)
    etag = normalize_etag(etag)
    hex_part, _, count = etag.partition("-")
    valid = (
        sep
        and mib.isdigit()
        and int(mib) > 0
        and len(hex_part) == 32
        and all(c in "0123456789abcdef" for c in hex_part)
        and (not count or count.isdigit())
    )
    if not valid:
        raise InvalidInputError(
            f"precomputed ETag {value!r} is not of the form '<32 hex digits>[-<parts>]__<part size in MiB>'"
        )
    return PrecomputedEtag(etag, int(mib))


def format_precomputed_etag(etag: str, part_size: int) -> str:
    """The ``"<etag>__<MiB>"`` text stored in ``file_info[path][2]``; the part size must be whole MiB."""
    if part_size % MIB:
        raise InvalidInputError(f"part size {part_size} bytes is not a whole number of MiB")
    return str(PrecomputedEtag(normalize_etag(etag), part_size // MIB))


def one_part_etag(md5: str) -> str:
    """The ETag of a multipart upload of one part (``…-1``), from the file's MD5: s3transfer makes these for a
    file exactly as large as its threshold (alphakraken's uploader at 100 MiB)."""
    return f"{hashlib.md5(bytes.fromhex(md5)).hexdigest()}-1"
