"""S3's additional checksums of a byte stream, computed as the bytes arrive: what deep verify and restore
compare with the manifest's checksum and with the one S3 stores, and what an upload's hash-first read
compares with a checksum another tool stored (:mod:`.hashing`).

- The full-object **CRC64NVME** (what every new upload declares): blocks are fed in order; a block whose CRC
  was already computed elsewhere (by the thread that fetched the range, :mod:`.download`) is combined with
  :func:`~..core.checksum.combine_crc64nvme` instead of being read again.
- Optionally a **CRC32 or CRC32C at a part layout** (:class:`LayoutCrc`, at a
  :class:`~..core.part_layouts.CrcLayout`): the part checksums of a
  ``COMPOSITE`` object written by another tool (``aws s3 cp``, boto3's ``upload_file``), or the checksum of
  the whole stream (a layout of one part: a ``FULL_OBJECT`` CRC32/CRC32C).

``awscrt`` computes CRC64NVME and CRC32C (tens of GB/s), ``zlib`` CRC32; each releases the GIL on large
buffers. No Airflow, no S3 calls.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Callable

from awscrt import checksums as crt

from airflow_provider_kraken_s3.core.checksum import ALGORITHM, Checksum, combine_crc64nvme, encode_crc64
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.part_layouts import CrcLayout

#: The 32-bit CRCs S3 keeps as composite (per part) or full-object checksums: name → crc(data, previous).
CRC32_FUNCTIONS: dict[str, Callable[[bytes | memoryview, int], int]] = {
    "CRC32": lambda data, previous: zlib.crc32(data, previous),
    "CRC32C": lambda data, previous: crt.crc32c(data, previous),
}


def crc64nvme(block: bytes | memoryview, previous: int = 0) -> int:
    """The CRC64NVME of ``block`` (continuing ``previous``), as S3 computes it."""
    return int(crt.crc64nvme(block, previous))


class LayoutCrc:
    """A CRC32/CRC32C of a stream at a part :class:`~..core.part_layouts.CrcLayout`, fed in order: the value S3
    keeps for an object cut that way (composite ``…-N``, or full object)."""

    def __init__(self, layout: CrcLayout) -> None:
        self.layout = layout
        self._function = CRC32_FUNCTIONS[layout.algorithm]
        self._part_crcs: list[int] = []
        self._part = 0  # index of the part being fed
        self._in_part = 0  # bytes of it fed so far
        self._part_crc = 0

    def update(self, view: memoryview) -> None:
        """Feed the next bytes, splitting them where a part ends."""
        parts = self.layout.parts
        while len(view):
            room = parts[self._part] - self._in_part
            piece = view[:room]
            self._part_crc = self._function(piece, self._part_crc)
            self._in_part += len(piece)
            view = view[len(piece) :]
            self._close_full_parts()

    def _close_full_parts(self) -> None:
        parts = self.layout.parts
        while self._part < len(parts) and self._in_part == parts[self._part]:
            self._part_crcs.append(self._part_crc)
            self._part, self._in_part, self._part_crc = self._part + 1, 0, 0

    @property
    def part_checksums(self) -> tuple[str, ...]:
        """The base64 CRC of each part (the caller has fed the whole stream)."""
        self._close_full_parts()  # a layout ending in empty parts (an empty stream)
        return tuple(_encode32(value) for value in self._part_crcs)

    @property
    def checksum(self) -> Checksum:
        """The checksum S3 keeps for an object of this layout (the caller has fed the whole stream)."""
        self._close_full_parts()
        if not self.layout.composite:
            return Checksum(self.layout.algorithm, _encode32(self._part_crcs[0]), full_object=True)
        joined = b"".join(value.to_bytes(4, "big") for value in self._part_crcs)
        value = f"{_encode32(self._function(joined, 0))}-{len(self._part_crcs)}"
        return Checksum(self.layout.algorithm, value, full_object=False)


class StreamChecksums:
    """The CRC64NVME of ``size`` bytes fed in order, and optionally a CRC32/CRC32C at a part ``layout``.

    :meth:`update` takes a block, and optionally its CRC64NVME already computed (then only combined).
    """

    def __init__(self, size: int, layout: CrcLayout | None = None) -> None:
        if layout is not None and layout.size != size:
            raise InvalidInputError(f"a part layout of {layout.size} bytes for a stream of {size} bytes")
        self.size = size
        self.offset = 0
        self.layout = layout
        self._crc64 = 0
        self._at_layout = LayoutCrc(layout) if layout is not None else None

    def update(self, block: bytes | memoryview, crc: int | None = None) -> None:
        """Feed the next ``block``; ``crc`` is its CRC64NVME when already known."""
        view = memoryview(block)
        if self.offset + len(view) > self.size:
            raise InvalidInputError(
                f"{self.offset + len(view)} bytes fed into checksums of {self.size} bytes"
            )
        block_crc = crc64nvme(view) if crc is None else crc
        self._crc64 = combine_crc64nvme(self._crc64, block_crc, len(view)) if self.offset else block_crc
        if self._at_layout is not None:
            self._at_layout.update(view)
        self.offset += len(view)

    @property
    def crc64nvme(self) -> Checksum:
        """The stream's full-object CRC64NVME, as S3 writes it."""
        self._check_complete()
        return Checksum(ALGORITHM, encode_crc64(self._crc64))

    @property
    def part_checksums(self) -> tuple[str, ...]:
        """The base64 CRC of each part of the layout (empty without one)."""
        self._check_complete()
        return () if self._at_layout is None else self._at_layout.part_checksums

    def at_layout(self) -> Checksum | None:
        """The checksum S3 keeps for an object of this layout: composite ``…-N`` or full object; None
        without a layout."""
        self._check_complete()
        return None if self._at_layout is None else self._at_layout.checksum

    def _check_complete(self) -> None:
        if self.offset != self.size:
            raise InvalidInputError(f"checksums asked for after {self.offset} of {self.size} bytes")


def _encode32(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode()
