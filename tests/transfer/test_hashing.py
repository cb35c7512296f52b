"""Hashing files into the ETag S3 reports, checked against an obvious reference implementation."""

from __future__ import annotations

import hashlib
import io
import random
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_kraken_s3.core.errors import BackupInterrupted
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.transfer.hashing import (
    READ_BLOCK,
    Digests,
    compute_s3_etag,
    compute_s3_etag_and_md5,
    compute_s3_etags,
    hash_into,
)

PART = 5 * MIB


def reference_etag(data: bytes, part_size: int) -> str:
    """Independent, obvious implementation of S3's rule, to check the parallel one against."""
    if len(data) <= part_size:
        return hashlib.md5(data).hexdigest()
    chunks = [data[i : i + part_size] for i in range(0, len(data), part_size)]
    return hashlib.md5(b"".join(hashlib.md5(c).digest() for c in chunks)).hexdigest() + f"-{len(chunks)}"


@pytest.mark.parametrize("size", [0, 1, PART - 1, PART, PART + 1, 3 * PART, 3 * PART + 12345])
def test_etag_follows_s3s_rule(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f.raw"
    path.write_bytes(data)
    assert compute_s3_etag(path, PART) == reference_etag(data, PART)
    assert compute_s3_etag_and_md5(path, PART) == (reference_etag(data, PART), hashlib.md5(data).hexdigest())


@settings(max_examples=25, deadline=None)
@given(size=st.integers(0, 4 * PART + 7), part_mib=st.sampled_from([5, 6]))
def test_etag_matches_reference_for_random_sizes(tmp_path_factory, size: int, part_mib: int) -> None:
    data = random.Random(size).randbytes(size)
    path = tmp_path_factory.mktemp("etag") / "f.bin"
    path.write_bytes(data)
    assert compute_s3_etag_and_md5(path, part_mib * MIB) == (
        reference_etag(data, part_mib * MIB),
        hashlib.md5(data).hexdigest(),
    )


@pytest.mark.parametrize("size", [0, 1, PART, PART + 1, 3 * PART + 12345, 8 * MIB * 2 + 7])
def test_etags_at_several_part_sizes_from_one_pass(tmp_path: Path, size: int) -> None:
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f.raw"
    path.write_bytes(data)
    sizes = [5 * MIB, 8 * MIB, 16 * MIB]
    etags, md5 = compute_s3_etags(path, sizes)
    assert etags == {s: reference_etag(data, s) for s in sizes}
    assert md5 == hashlib.md5(data).hexdigest()


class CountingFile(io.FileIO):
    """A file that counts the bytes read from it and sets ``cancel`` after the first read."""

    def __init__(self, path: Path, cancel: threading.Event) -> None:
        super().__init__(path, "rb")
        self.cancel = cancel
        self.bytes_read = 0

    def readinto(self, buffer) -> int:
        got = super().readinto(buffer)
        self.bytes_read += got or 0
        self.cancel.set()
        return got


def test_hash_into_stops_at_the_next_block_once_cancelled(tmp_path: Path) -> None:
    """Defect 6: a cancel is heard within one block, not after the whole file."""
    path = tmp_path / "f.raw"
    path.write_bytes(bytes(5 * READ_BLOCK))
    cancel = threading.Event()
    with CountingFile(path, cancel) as handle, pytest.raises(BackupInterrupted):
        hash_into(Digests(5 * READ_BLOCK, [PART]), handle, 5 * READ_BLOCK, cancel=cancel)
    assert handle.bytes_read == READ_BLOCK


@pytest.mark.parametrize("hasher", ["etag_and_md5", "etags"])
def test_hashing_a_file_stops_at_the_next_block_once_cancelled(tmp_path: Path, hasher: str) -> None:
    """Defect 6: hash-before-skip and prove-before-put both read through a loop that looks at the cancel."""
    path = tmp_path / "f.raw"
    path.write_bytes(bytes(5 * READ_BLOCK))
    cancel = threading.Event()
    blocks: list[int] = []

    def cancel_after_the_first_block(count: int) -> None:
        blocks.append(count)
        cancel.set()

    with pytest.raises(BackupInterrupted, match="interrupted"):
        if hasher == "etag_and_md5":
            compute_s3_etag_and_md5(path, PART, on_bytes=cancel_after_the_first_block, cancel=cancel)
        else:
            cancel.set()
            compute_s3_etags(path, [PART, 8 * MIB], cancel=cancel)
    assert sum(blocks) <= READ_BLOCK
