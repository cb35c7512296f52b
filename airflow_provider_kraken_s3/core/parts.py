"""Part planning for multipart uploads: numbers in, numbers out.

The part size decides the ETag S3 will report (see :mod:`.etag`), so it is planned here once and followed
exactly by both the ETag calculation and the uploader, instead of letting a transfer library silently
change it (s3transfer doubles the chunk size above 10,000 parts).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

from airflow_provider_kraken_s3.core.errors import InvalidInputError

MIB = 1024**2
GIB = 1024**3
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * GIB
MAX_PARTS = 10_000
#: alphakraken's chunk size (``S3_UPLOAD_CHUNK_SIZE_MB``): its inventory ETags are computed with it, so a
#: file whose entry is a legacy ``[size, md5]`` is uploaded (and recorded) as their uploader would have.
DEFAULT_PART_SIZE = 100 * MIB


@dataclass(frozen=True)
class Part:
    """One byte range of a file, numbered as S3 numbers parts (from 1)."""

    number: int
    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True)
class PartPlan:
    """How a file of ``file_size`` bytes is cut into parts of ``part_size`` bytes.

    A file no larger than one part is sent with a single PUT (its ETag is a plain MD5, also for the empty
    file); anything larger is a multipart upload of ``part_count`` parts.
    """

    file_size: int
    part_size: int
    adjusted_from: int | None = None

    @property
    def is_multipart(self) -> bool:
        return self.file_size > self.part_size

    @property
    def part_count(self) -> int:
        return max(1, math.ceil(self.file_size / self.part_size))

    @property
    def part_size_mib(self) -> int | float:
        """Part size in MiB: an int when whole (alphakraken stores ``"<etag>__<MiB>"``)."""
        mib = self.part_size / MIB
        return int(mib) if mib.is_integer() else mib

    def parts(self) -> Iterator[Part]:
        if not self.is_multipart:
            yield Part(1, 0, self.file_size)
            return
        for index in range(self.part_count):
            offset = index * self.part_size
            yield Part(index + 1, offset, min(self.part_size, self.file_size - offset))

    def describe_adjustment(self) -> str | None:
        """Log text explaining a raised part size, or None when the requested size was kept."""
        if self.adjusted_from is None:
            return None
        return (
            f"part size raised from {self.adjusted_from / MIB:g} MiB to {self.part_size / MIB:g} MiB: "
            f"{self.file_size} bytes would need more than {MAX_PARTS} parts"
        )


def check_part_size(part_size: object) -> int:
    """Return ``part_size`` if it can be used: S3's limits, and a whole number of MiB.

    Whole MiB because the part size is stored beside the ETag as alphakraken's ``"<etag>__<MiB>"``: a size
    that cannot be written that way would fail only after hours of uploading, so it is refused up front.
    Bools and numeric strings are refused too.
    """
    if isinstance(part_size, bool) or not isinstance(part_size, int):
        raise InvalidInputError(
            f"part_size must be an integer number of bytes, got {type(part_size).__name__} {part_size!r}; "
            f"pass e.g. part_size={DEFAULT_PART_SIZE} (100 MiB)"
        )
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise InvalidInputError(
            f"part_size {part_size} bytes ({part_size / MIB:.2f} MiB) is outside S3's limits; pass a "
            f"value from {MIN_PART_SIZE} (5 MiB) to {MAX_PART_SIZE} (5 GiB) bytes, e.g. {DEFAULT_PART_SIZE} "
            "(100 MiB)"
        )
    if part_size % MIB:
        raise InvalidInputError(
            f"part_size {part_size} bytes is not a whole number of MiB; the part size is recorded as "
            f"'<etag>__<MiB>', so pass a multiple of {MIB}, e.g. {part_size // MIB * MIB}"
        )
    return part_size


def plan_parts(
    file_size: int,
    part_size: int = DEFAULT_PART_SIZE,
    *,
    fixed: bool = False,
) -> PartPlan:
    """Plan the parts of a file within S3's limits (5 MiB–5 GiB parts, at most 10,000 parts).

    With ``fixed=False`` a part size that would need more than 10,000 parts is raised to the smallest whole
    number of MiB that fits (``PartPlan.adjusted_from`` records the request, for the log). With
    ``fixed=True`` (an expected ETag was computed with this part size) the size is kept exactly, and a plan
    that S3 cannot accept is an error, because no valid upload could reproduce that ETag.
    """
    if isinstance(file_size, bool) or not isinstance(file_size, int) or file_size < 0:
        raise InvalidInputError(f"file size must be a non-negative integer, got {file_size!r}")
    check_part_size(part_size)
    if math.ceil(file_size / part_size) <= MAX_PARTS:
        return PartPlan(file_size, part_size)
    if fixed:
        raise InvalidInputError(
            f"a file of {file_size} bytes cut into {part_size / MIB:g} MiB parts needs "
            f"{math.ceil(file_size / part_size)} parts, more than S3's {MAX_PARTS}; the expected ETag "
            "cannot be reproduced, recompute it with a larger part size"
        )
    raised = math.ceil(math.ceil(file_size / MAX_PARTS) / MIB) * MIB
    if raised > MAX_PART_SIZE:
        raise InvalidInputError(
            f"a file of {file_size} bytes is larger than S3's maximum object size "
            f"({MAX_PARTS} parts of {MAX_PART_SIZE / GIB:g} GiB)"
        )
    return PartPlan(file_size, raised, adjusted_from=part_size)
