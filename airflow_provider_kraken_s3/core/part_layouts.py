"""The part layouts an object may have been cut into, and which of them a 32-bit CRC of it must be computed at.

Other tools store CRC32 or CRC32C checksums: boto3's ``upload_file`` (botocore ≥ 1.36 declares CRC32 by
default; a multipart upload through s3transfer gives a ``COMPOSITE`` one, newer s3transfer a ``FULL_OBJECT``
one), ``aws s3 cp``, rclone. A full-object CRC32/CRC32C is the CRC of the bytes, whatever the parts. A
composite one is the CRC of the part CRCs, so it says nothing until the local file is cut exactly as the
object was: at the part sizes S3 lists (``GetObjectAttributes``' ``ObjectParts``) — then a mismatch is a
difference S3 shows — else at the common part sizes that give the object's part count (from the checksum's
``-N`` or the ETag's), which are guesses: a mismatch at a guess shows nothing.

Its own module because the choice is the same for an upload's skip (:mod:`.decision`) and for the readers,
and neither the decision nor the hashing (:mod:`..transfer.stream_checksums`) should hold it. Pure: no
Airflow, boto3 or I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from airflow_provider_kraken_s3.core.checksum import Checksum
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.proof import checksums_agree

_MIB = 1024**2

#: Part sizes uploaders commonly use (MiB): boto3/s3transfer's 8, the AWS CLI's 8 and 16, rclone's 5 and 64,
#: alphakraken's 100, ours 500. Tried when an object's part size is unknown (no hint, and a store such as Ceph
#: RGW 16 that ignores HEAD ``partNumber``; an encrypted object's composite CRC where S3 lists no parts).
COMMON_PART_SIZES_MIB = (5, 8, 15, 16, 50, 64, 100, 500)

#: The 32-bit CRCs S3 keeps as composite (per part) or full-object checksums.
CRC32_ALGORITHMS = frozenset({"CRC32", "CRC32C"})


def candidate_part_sizes(size: int, part_count: int) -> tuple[int, ...]:
    """Common part sizes (bytes, ascending) that cut ``size`` bytes into exactly ``part_count`` parts.

    None for a one-part object: every part size at least the file's gives it, and its ETag follows from the
    file's MD5 alone (:func:`~.etag.one_part_etag`).
    """
    if size <= 0 or part_count < 2:
        return ()
    return tuple(
        sorted(mib * _MIB for mib in COMMON_PART_SIZES_MIB if -(-size // (mib * _MIB)) == part_count)
    )


@dataclass(frozen=True)
class CrcLayout:
    """A 32-bit CRC to compute at a part layout: ``algorithm`` (CRC32, CRC32C) and the part lengths in order.

    ``composite``: S3's value is the CRC of the concatenated big-endian part CRCs, ``-<parts>`` appended (a
    multipart upload with ``ChecksumType=COMPOSITE``); otherwise it is the CRC of the whole stream (one part).
    """

    algorithm: str
    parts: tuple[int, ...]
    composite: bool = True

    def __post_init__(self) -> None:
        if self.algorithm not in CRC32_ALGORITHMS:
            raise InvalidInputError(f"no CRC layout for algorithm {self.algorithm!r}")
        if any(length < 0 for length in self.parts):
            raise InvalidInputError("part lengths must not be negative")

    @classmethod
    def uniform(cls, algorithm: str, size: int, part_size: int) -> CrcLayout:
        """Parts of ``part_size`` bytes, the last one shorter: how every uploader cuts a file."""
        if part_size < 1:
            raise InvalidInputError(f"part size must be positive, got {part_size}")
        return cls(
            algorithm, tuple(min(part_size, size - start) for start in range(0, size, part_size)) or (0,)
        )

    @classmethod
    def whole(cls, algorithm: str, size: int) -> CrcLayout:
        """A full-object CRC32/CRC32C: one part, no CRC of CRCs."""
        return cls(algorithm, (size,), composite=False)

    @property
    def size(self) -> int:
        return sum(self.parts)


def layout_from_parts(algorithm: str, sizes: Sequence[int]) -> CrcLayout:
    """The layout ``GetObjectAttributes``' ``ObjectParts`` describes (part sizes in part-number order)."""
    return CrcLayout(algorithm, tuple(int(size) for size in sizes))


def needs_listed_parts(stored: Checksum | None, multipart: bool) -> bool:
    """Whether only ``GetObjectAttributes`` can tell how to compute ``stored``: a CRC32/CRC32C of a multipart
    object (HEAD lists no part sizes, and may hide that a checksum is composite: moto drops the type and the
    ``-N``). A single PUT's checksum is always of the whole object."""
    return (
        stored is not None and stored.algorithm in CRC32_ALGORITHMS and (multipart or not stored.full_object)
    )


@dataclass(frozen=True)
class CrcLayouts:
    """Where to compute the local file's CRC to compare with a stored CRC32/CRC32C.

    ``known``: the layouts are the object's (a full-object CRC, the parts S3 lists, a single part), so a CRC
    that differs at them shows other bytes; otherwise they are guesses, and a mismatch shows nothing.
    ``unknown``: why there is no layout to try, when there is none.
    """

    stored: Checksum
    layouts: tuple[CrcLayout, ...]
    known: bool
    unknown: str = ""

    def at(self, layout: CrcLayout) -> str:
        """Where a CRC was computed, in a person's words."""
        if not layout.composite:
            return "over the whole file"
        if len(layout.parts) == 1:
            return "as one part"
        if self.known:
            return f"at the {len(layout.parts)} part sizes S3 lists"
        return f"at {len(layout.parts)} parts of {layout.parts[0] // _MIB} MiB"  # a common part size

    @property
    def plan(self) -> str:
        """What hashing the local file will compare, in a person's words."""
        return f"S3's {checksum_words(self.stored)} with the file's {' or '.join(map(self.at, self.layouts))}"

    def judge(self, computed: Sequence[tuple[CrcLayout, Checksum]]) -> tuple[str | None, str]:
        """What the local file's CRCs at the layouts tried show: ``(proof, "")`` where one equals S3's, else
        ``(None, difference)`` — a difference shown where the layouts are the object's, otherwise the words
        saying that nothing could be compared (a guess that failed shows nothing)."""
        stored = checksum_words(self.stored)
        for layout, local in computed:
            if checksums_agree(local, self.stored):
                return (
                    f"S3's {stored} (validated by S3 against the one its uploader declared) and size equal those "
                    f"of the local bytes {self.at(layout)}",
                    "",
                )
        tried = "; ".join(f"{local.value} {self.at(layout)}" for layout, local in computed)
        if self.known:
            return None, f"its {stored} differs from the local file's ({tried})"
        return None, (
            f"its {stored} equals the local file's at none of the common part sizes that give its part count "
            f"({tried}) and S3 lists no part sizes, so nothing is shown to differ: it cannot be compared with the "
            "local file"
        )


def crc_layouts(
    stored: Checksum | None, size: int, *, listed: Sequence[int] = (), etag_parts: int | None = None
) -> CrcLayouts | None:
    """The layouts at which the local file's CRC is comparable with ``stored`` (None: not a CRC32/CRC32C).

    :param listed: the part sizes S3 lists for the object (``GetObjectAttributes``), where it does.
    :param etag_parts: the part count of the object's ETag (its ``-N``; kept by S3 under SSE-KMS too).
    """
    if stored is None or stored.algorithm not in CRC32_ALGORITHMS:
        return None
    algorithm = stored.algorithm
    if stored.full_object:
        return CrcLayouts(stored, (CrcLayout.whole(algorithm, size),), known=True)
    count = stored.shown_parts or etag_parts
    if listed and sum(listed) == size and count in (None, len(listed)):
        return CrcLayouts(stored, (layout_from_parts(algorithm, listed),), known=True)
    if count == 1:
        return CrcLayouts(stored, (CrcLayout(algorithm, (size,)),), known=True)
    guesses = candidate_part_sizes(size, count or 0)
    if guesses:
        return CrcLayouts(stored, tuple(CrcLayout.uniform(algorithm, size, p) for p in guesses), known=False)
    if count is None:
        why = "its part count is unknown (neither the checksum nor the ETag shows it)"
    else:
        common = ", ".join(str(mib) for mib in COMMON_PART_SIZES_MIB)
        why = f"no common part size ({common} MiB) cuts {size} bytes into its {count} parts"
    return CrcLayouts(
        stored,
        (),
        known=False,
        unknown=f"its {checksum_words(stored)} is computed over parts whose sizes S3 does not list, and {why}, "
        "so it cannot be compared with the local file",
    )


def checksum_words(checksum: Checksum) -> str:
    """A stored checksum in a person's words: ``composite CRC32 …`` or ``full-object CRC32C …``."""
    return f"{'full-object' if checksum.full_object else 'composite'} {checksum.algorithm} {checksum.value}"
