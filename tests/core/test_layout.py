"""Tests of the S3 key layout: path checks, key mapping, backup key, set ETag and local paths."""

from __future__ import annotations

import hashlib
import pathlib
import re
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.layout import (
    FALLBACK_PROJECT_ID,
    MAX_KEY_BYTES,
    backup_key,
    check_etag,
    check_raw_file_id,
    check_relative_path,
    key_prefix,
    local_path,
    object_keys,
    set_etag,
    upload_path,
)

MD5_A = "9e107d9d372bb6826bd81d3542a419d6"
MD5_B = "e4d909c290d0fb1ca068ffaddf22cbd0"

# --- check_relative_path -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "x.raw",
        "x.d/analysis.tdf",
        "x.d/sub dir/file with spaces.bin",
        "x.d/.hidden",
        "x.d/...",
        "x.d/..foo",
        "Müller/数据.raw",
        "ab:c",
        "x.d/c:d",
        "x" * MAX_KEY_BYTES,
        "é" * (MAX_KEY_BYTES // 2),
    ],
)
def test_check_relative_path_accepts_and_returns_unchanged(path: str) -> None:
    assert check_relative_path(path) is path


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("", "is empty"),
        ("/x.raw", "is absolute"),
        ("/", "is absolute"),
        ("C:\\x", "backslash; use POSIX separators"),
        ("a\\b", "backslash; use POSIX separators"),
        ("C:/x", "Windows drive ('C:')"),
        ("c:x", "Windows drive"),
        ("..", "'..' segment"),
        ("../x.raw", "'..' segment"),
        ("x.d/../../etc/passwd", "'..' segment"),
        ("x.d/..", "'..' segment"),
        (".", "'.' segment"),
        ("./x.raw", "'.' segment"),
        ("x.d/./a", "'.' segment"),
        ("a//b", "empty segment"),
        ("x.d/", "empty segment"),
        ("x\x00.raw", "control characters (U+0000)"),
        ("x\n.raw", "control characters (U+000A)"),
        ("x\t.raw", "control characters (U+0009)"),
        ("x\x7f.raw", "control characters (U+007F)"),
        ("x\x85.raw", "control characters (U+0085)"),
        ("x" * (MAX_KEY_BYTES + 1), "1025 bytes in UTF-8"),
        ("é" * (MAX_KEY_BYTES // 2 + 1), "1026 bytes in UTF-8"),
        ("x\udcff.raw", "not valid Unicode text"),
    ],
)
def test_check_relative_path_refuses(path: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_relative_path(path)
    assert fragment in str(info.value)


@pytest.mark.parametrize("value", [None, 3, b"x.raw", pathlib.PurePosixPath("x.raw")])
def test_check_relative_path_refuses_non_strings(value: object) -> None:
    with pytest.raises(InvalidInputError, match="must be a string"):
        check_relative_path(value)  # type: ignore[arg-type]


# --- check_raw_file_id -------------------------------------------------------------------------------


@pytest.mark.parametrize("raw_file_id", ["x.raw", "x.d", "x.wiff", "20240101_sample 1.raw"])
def test_check_raw_file_id_accepts(raw_file_id: str) -> None:
    assert check_raw_file_id(raw_file_id) == raw_file_id


@pytest.mark.parametrize(
    ("raw_file_id", "fragment"),
    [
        ("x.d/a", "contains '/'"),
        ("/x.raw", "contains '/'"),
        ("", "raw_file_id is empty"),
        (".", "raw_file_id '.' contains a '.' segment"),
        ("..", "'..' segment"),
        ("a\\b", "backslash"),
        ("C:x", "Windows drive"),
        ("x\x00", "control characters"),
        ("x" * (MAX_KEY_BYTES + 1), "bytes in UTF-8"),
        (None, "raw_file_id must be a string"),
    ],
)
def test_check_raw_file_id_refuses(raw_file_id: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_raw_file_id(raw_file_id)
    assert fragment in str(info.value)


# --- object_keys -------------------------------------------------------------------------------------


def test_object_keys_single_raw_file_keeps_path() -> None:
    assert object_keys("x.raw", ["x.raw"]) == {"x.raw": "x.raw"}


def test_object_keys_bruker_folder_keeps_paths_sorted() -> None:
    file_info = {
        "x.d/analysis.tdf_bin": [3, MD5_A],
        "x.d/analysis.tdf": [1, MD5_B],
        "x.d/sub/chromatography.xml": [2, MD5_A],
    }
    keys = object_keys("x.d", file_info)
    assert keys == {
        "x.d/analysis.tdf": "x.d/analysis.tdf",
        "x.d/analysis.tdf_bin": "x.d/analysis.tdf_bin",
        "x.d/sub/chromatography.xml": "x.d/sub/chromatography.xml",
    }
    assert list(keys) == sorted(file_info)


def test_object_keys_folder_with_single_file() -> None:
    assert object_keys("x.d", ["x.d/analysis.tdf"]) == {"x.d/analysis.tdf": "x.d/analysis.tdf"}


def test_object_keys_sciex_siblings_go_under_the_id_prefix() -> None:
    """alphakraken's uploader: a ``.wiff`` set lives under ``{raw_file_id}/``, nothing else gets a prefix."""
    prefix = key_prefix("x.wiff", project_id="P1", instrument_id="sciex1", created_at=None)
    assert prefix == "x.wiff/"
    keys = object_keys("x.wiff", ["x.wiff.scan", "x.wiff", "x.wiff2"], prefix=prefix)
    assert keys == {
        "x.wiff": "x.wiff/x.wiff",
        "x.wiff.scan": "x.wiff/x.wiff.scan",
        "x.wiff2": "x.wiff/x.wiff2",
    }
    assert list(keys) == ["x.wiff", "x.wiff.scan", "x.wiff2"]
    assert object_keys("x.wiff", ["x.wiff"], prefix=prefix) == {"x.wiff": "x.wiff/x.wiff"}


def test_fallback_project_keys_go_under_instrument_and_month() -> None:
    """``_FALLBACK`` raw files share one bucket: alphakraken files them by instrument and month, then wiff."""
    created = datetime(2024, 3, 9, 23, 59, tzinfo=timezone.utc)
    raw = key_prefix("x.raw", project_id=FALLBACK_PROJECT_ID, instrument_id="astral1", created_at=created)
    wiff = key_prefix("y.wiff", project_id=FALLBACK_PROJECT_ID, instrument_id="sciex1", created_at=created)
    assert (raw, wiff) == ("astral1/2024_03/", "sciex1/2024_03/y.wiff/")
    assert object_keys("x.raw", ["x.raw"], prefix=raw) == {"x.raw": "astral1/2024_03/x.raw"}
    assert backup_key("x.raw", {"x.raw": "astral1/2024_03/x.raw"}, prefix=raw) == "astral1/2024_03/x.raw"
    assert backup_key("x.d", {"x.d/a": "astral1/2024_03/x.d/a"}, prefix=raw) == "astral1/2024_03/x.d/"
    assert backup_key("y.wiff", {"y.wiff": "sciex1/2024_03/y.wiff/y.wiff"}, prefix=wiff) == wiff
    assert upload_path("b", wiff) == "s3://b/sciex1/2024_03/y.wiff/" and upload_path("b", "") == "s3://b"
    with pytest.raises(InvalidInputError, match=r"fallback project.*created_at"):
        key_prefix("x.raw", project_id=FALLBACK_PROJECT_ID, instrument_id="astral1", created_at=None)


@pytest.mark.parametrize(
    ("raw_file_id", "path"),
    [("x.raw", "y.raw"), ("x.d", "x.dx/a"), ("a.d", "b.raw"), ("x.wiff", "y.wiff2"), ("x.wiff", "x.wiff2/a")],
)
def test_object_keys_refuses_paths_that_are_not_the_raw_files_own(raw_file_id: str, path: str) -> None:
    """Issue 13 defect 8: b.raw in the inventory of a.d would overwrite another raw file's object."""
    with pytest.raises(InvalidInputError, match="not one of its files"):
        object_keys(raw_file_id, [raw_file_id if raw_file_id.endswith(".raw") else f"{raw_file_id}/ok", path])


def test_object_keys_accepts_the_file_its_folder_and_a_wiff_sets_siblings() -> None:
    assert object_keys("x.d", ["x.d/a", "x.d/b/c"]) == {"x.d/a": "x.d/a", "x.d/b/c": "x.d/b/c"}
    siblings = ["x.wiff", "x.wiff2", "x.wiff.scan", "x.timeseries.data"]
    assert object_keys("x.wiff", siblings, prefix="x.wiff/") == {p: f"x.wiff/{p}" for p in siblings}


def test_object_keys_accepts_generators_and_duplicates() -> None:
    assert object_keys("x.raw", (p for p in ["x.raw", "x.raw"])) == {"x.raw": "x.raw"}


def test_object_keys_empty_file_info() -> None:
    with pytest.raises(InvalidInputError, match=re.escape("file_info is empty for raw file 'x.raw'")):
        object_keys("x.raw", {})


def test_object_keys_refuses_single_string() -> None:
    with pytest.raises(InvalidInputError, match=r"pass e.g. \['x.raw'\]"):
        object_keys("x.raw", "x.raw")


@pytest.mark.parametrize("bad", ["../y.raw", "/x.raw", "x.d//a", "x.d\\a", "x.d/./a", ""])
def test_object_keys_checks_every_path(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        object_keys("x.d", ["x.d/fine", bad])


def test_object_keys_checks_the_id() -> None:
    with pytest.raises(InvalidInputError, match="contains '/'"):
        object_keys("a/x.d", ["a/x.d/f"])


def test_object_keys_refuses_file_that_is_also_a_folder() -> None:
    with pytest.raises(
        InvalidInputError, match=re.escape("lists 'x.d' as a file and also 'x.d/a' inside it")
    ):
        object_keys("x.d", ["x.d", "x.d/a"])
    with pytest.raises(InvalidInputError, match=re.escape("lists 'x.d/s' as a file")):
        object_keys("x.d", ["x.d/s", "x.d/s/t/u", "x.d/s-t"])


def test_object_keys_refuses_key_too_long_after_prefixing() -> None:
    long_path = "x." + "y" * (MAX_KEY_BYTES - 4)
    assert check_relative_path(long_path) == long_path
    with pytest.raises(InvalidInputError, match=r"would be 1029 bytes in UTF-8"):
        object_keys("x.wiff", [long_path], prefix="x.wiff/")


# --- backup_key --------------------------------------------------------------------------------------


def test_backup_key_single_raw_file_is_the_object_key() -> None:
    assert backup_key("x.raw", object_keys("x.raw", ["x.raw"])) == "x.raw"


def test_backup_key_folder_is_prefix_even_with_one_file() -> None:
    assert backup_key("x.d", object_keys("x.d", ["x.d/analysis.tdf"])) == "x.d/"
    assert backup_key("x.d", object_keys("x.d", ["x.d/a", "x.d/b"])) == "x.d/"


def test_backup_key_sibling_set_is_prefix() -> None:
    keys = object_keys("x.wiff", ["x.wiff", "x.wiff2", "x.wiff.scan"], prefix="x.wiff/")
    assert backup_key("x.wiff", keys, prefix="x.wiff/") == "x.wiff/"


def test_backup_key_refuses_empty_keys_and_bad_id() -> None:
    with pytest.raises(InvalidInputError, match="no object keys given"):
        backup_key("x.raw", {})
    with pytest.raises(InvalidInputError, match="contains '/'"):
        backup_key("x/y", {"x/y": "x/y"})


# --- set_etag ----------------------------------------------------------------------------------------


def test_set_etag_matches_documented_format() -> None:
    etags = {"x.d/b": f'"{MD5_B}-2"', "x.d/a": MD5_A.upper()}
    text = f"x.d/a {MD5_A}\nx.d/b {MD5_B}-2\n"
    assert set_etag(etags) == hashlib.md5(text.encode()).hexdigest()


def test_set_etag_single_object() -> None:
    assert set_etag({"x.raw": MD5_A}) == hashlib.md5(f"x.raw {MD5_A}\n".encode()).hexdigest()
    assert set_etag({"x.raw": MD5_A}) != MD5_A


def test_set_etag_keys_with_spaces_and_unicode() -> None:
    text = f"x.d/a b é {MD5_A}\n"
    assert set_etag({"x.d/a b é": MD5_A}) == hashlib.md5(text.encode("utf-8")).hexdigest()


def test_set_etag_sorts_by_code_point() -> None:
    # "x.d/B" < "x.d/a" in code point order; the digest must use that order, not case-folded order.
    text = f"x.d/B {MD5_B}\nx.d/a {MD5_A}\n"
    assert set_etag({"x.d/a": MD5_A, "x.d/B": MD5_B}) == hashlib.md5(text.encode()).hexdigest()


def test_set_etag_normalises_quotes_and_case() -> None:
    assert set_etag({"k": f'"{MD5_A.upper()}"'}) == set_etag({"k": MD5_A})
    assert set_etag({"k": f' "{MD5_A}" '}) == set_etag({"k": MD5_A})


def test_set_etag_depends_on_keys() -> None:
    assert set_etag({"a": MD5_A}) != set_etag({"b": MD5_A})


@pytest.mark.parametrize(
    ("etags", "fragment"),
    [
        ({}, "no ETags given"),
        ({"k": ""}, "is empty"),
        ({"k": '""'}, "is empty"),
        ({"k": f"{MD5_A}__500"}, "pass only the part before '__'"),
        ({"k": "ab cd"}, "whitespace"),
        ({"k": 'ab"cd'}, "quotes"),
        ({"k": "ab\x00cd"}, "unprintable"),
        ({"k": 5}, "ETag must be a string"),
        ({"": MD5_A}, "must be a non-empty string"),
        ({3: MD5_A}, "must be a non-empty string"),
        ({"a\nb": MD5_A}, "control characters"),
        ({"a\udcff": MD5_A}, "not valid Unicode"),
    ],
)
def test_set_etag_refuses(etags: dict, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        set_etag(etags)
    assert fragment in str(info.value)


def test_check_etag() -> None:
    assert check_etag(f'"{MD5_A.upper()}-12"') == f"{MD5_A}-12"


# --- local_path --------------------------------------------------------------------------------------


def test_local_path_joins(tmp_path: pathlib.Path) -> None:
    result = local_path(str(tmp_path), "x.d/analysis.tdf")
    assert isinstance(result, pathlib.Path)
    assert result == tmp_path / "x.d" / "analysis.tdf"


def test_local_path_accepts_path_objects_and_relative_base() -> None:
    assert local_path(pathlib.Path("/data/backup"), "x.raw") == pathlib.Path("/data/backup/x.raw")
    assert local_path("backup", "x.raw") == pathlib.Path("backup/x.raw")


@pytest.mark.parametrize("bad", ["../x.raw", "/etc/passwd", "a/../../b", "C:\\x", "", "a//b"])
def test_local_path_refuses_escapes(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        local_path("/data/backup", bad)


@pytest.mark.parametrize("base", ["", None, b"/data"])
def test_local_path_refuses_missing_base(base: object) -> None:
    with pytest.raises(InvalidInputError, match="backup_base_path must be a non-empty path"):
        local_path(base, "x.raw")  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------------------

_segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="/\\"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", "..") and not (len(s) >= 2 and s[1] == ":" and s[0].isascii()))
_relative_path = st.lists(_segment, min_size=1, max_size=4).map("/".join)
_raw_file_id = _segment
_etag = st.from_regex(r"[0-9a-f]{32}(-[1-9][0-9]{0,3})?", fullmatch=True)


def _without_file_folder_clashes(paths: set[str]) -> set[str]:
    return {p for p in paths if not any(q.startswith(f"{p}/") for q in paths)}


@st.composite
def _path_sets(draw: st.DrawFn) -> tuple[str, set[str]]:
    raw_file_id = draw(_raw_file_id)
    inside = draw(st.lists(_relative_path.map(lambda p: f"{raw_file_id}/{p}"), max_size=5))
    paths = _without_file_folder_clashes(set(inside))
    if not paths:
        paths = {raw_file_id}
    return raw_file_id, paths


@given(_path_sets(), st.sampled_from(["", "inst/2024_01/"]))
def test_keys_are_the_prefix_plus_the_path(case: tuple[str, set[str]], prefix: str) -> None:
    raw_file_id, paths = case
    keys = object_keys(raw_file_id, paths, prefix=prefix)
    assert set(keys) == paths
    assert list(keys) == sorted(paths)
    assert keys == {path: f"{prefix}{path}" for path in paths}  # alphakraken's layout, exactly
    marker = backup_key(raw_file_id, keys, prefix=prefix)
    assert marker in (f"{prefix}{raw_file_id}", f"{prefix}{raw_file_id}/")


@given(path=_relative_path)
def test_generated_safe_paths_pass_and_join_below_base(path: str) -> None:
    assert check_relative_path(path) == path
    joined = local_path("/data/backup", path)
    assert joined.parts[:3] == ("/", "data", "backup")
    assert len(joined.parts) == 3 + path.count("/") + 1


@given(etags=st.dictionaries(_relative_path, _etag, min_size=1, max_size=8), data=st.data())
def test_set_etag_is_order_independent(etags: dict[str, str], data: st.DataObject) -> None:
    shuffled = dict(data.draw(st.permutations(list(etags.items()))))
    assert set_etag(shuffled) == set_etag(etags)
    quoted_upper = {k: f'"{v.upper()}"' for k, v in etags.items()}
    assert set_etag(quoted_upper) == set_etag(etags)


@given(etags=st.dictionaries(_relative_path, _etag, min_size=1, max_size=8), data=st.data())
def test_set_etag_changes_when_any_etag_changes(etags: dict[str, str], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(etags)))
    new_etag = data.draw(_etag.filter(lambda e: e != etags[key]))
    assert set_etag({**etags, key: new_etag}) != set_etag(etags)


@given(etags=st.dictionaries(_relative_path, _etag, min_size=2, max_size=8), data=st.data())
def test_set_etag_changes_when_an_object_is_missing(etags: dict[str, str], data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(etags)))
    fewer = {k: v for k, v in etags.items() if k != key}
    assert set_etag(fewer) != set_etag(etags)
