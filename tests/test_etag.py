from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_kraken_s3.errors import InvalidInputError
from airflow_provider_kraken_s3.etag import (
    compute_s3_etag,
    compute_s3_etag_and_md5,
    etag_part_count,
    etags_equal,
    format_precomputed_etag,
    normalize_etag,
    parse_precomputed_etag,
)
from airflow_provider_kraken_s3.parts import MIB

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


def test_etag_comparison_ignores_quotes_and_case() -> None:
    assert etags_equal('"ABCDEF0123456789abcdef0123456789-2"', "abcdef0123456789abcdef0123456789-2")
    assert not etags_equal("abc", "abd")
    assert not etags_equal(None, "abc") and not etags_equal("", "")
    assert normalize_etag('W/"AB"') == "ab"
    assert etag_part_count('"d41d8cd98f00b204e9800998ecf8427e"') is None
    assert etag_part_count("d41d8cd98f00b204e9800998ecf8427e-17") == 17


def test_precomputed_etag_round_trip() -> None:
    parsed = parse_precomputed_etag('"AB0123456789abcdef0123456789abcd-3"__500')
    assert parsed.etag == "ab0123456789abcdef0123456789abcd-3"
    assert parsed.part_size == 500 * MIB
    assert format_precomputed_etag(parsed.etag, 500 * MIB) == "ab0123456789abcdef0123456789abcd-3__500"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc__500",
        "d41d8cd98f00b204e9800998ecf8427e",
        "d41d8cd98f00b204e9800998ecf8427e__0",
        "d41d8cd98f00b204e9800998ecf8427e__x",
        "zz1d8cd98f00b204e9800998ecf8427e__5",
    ],
)
def test_malformed_precomputed_etags_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="not of the form"):
        parse_precomputed_etag(bad)


def test_part_size_must_be_whole_mib_to_be_stored() -> None:
    with pytest.raises(InvalidInputError, match="whole number of MiB"):
        format_precomputed_etag("d41d8cd98f00b204e9800998ecf8427e", 5 * MIB + 1)
