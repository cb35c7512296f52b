"""Hashing files into the ETag S3 reports, checked against an obvious reference implementation."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.transfer.hashing import (
    compute_s3_etag,
    compute_s3_etag_and_md5,
    compute_s3_etags,
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
