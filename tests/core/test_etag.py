from __future__ import annotations

import pytest

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.etag import (
    etag_part_count,
    etags_equal,
    format_precomputed_etag,
    normalize_etag,
    parse_precomputed_etag,
)
from airflow_provider_kraken_s3.core.parts import MIB

PART = 5 * MIB


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
