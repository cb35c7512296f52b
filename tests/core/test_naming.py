"""Tests of bucket naming: normalisation examples, refusals, and properties over arbitrary text."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from airflow_provider_kraken_s3.core.errors import InvalidInputError, PermanentBackupError
from airflow_provider_kraken_s3.core.naming import (
    MAX_BUCKET_NAME_LENGTH,
    RESERVED_PREFIXES,
    RESERVED_SUFFIXES,
    alphakraken_bucket_name,
    bucket_name,
    bucket_name_problems,
    check_bucket_prefix,
    normalise_name_part,
)

# --- bucket_name: examples ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "project", "expected"),
    [
        ("mpg-mpi-mann-alphakraken", "PRID001", "mpg-mpi-mann-alphakraken-prid001"),
        ("alphakraken", "PRJ.001", "alphakraken-prj-001"),
        ("alphakraken", "PRJ-001", "alphakraken-prj-001"),
        ("alphakraken", "prj_001", "alphakraken-prj-001"),
        ("alphakraken", "my project  2024", "alphakraken-my-project--2024"),  # alphakraken's own name
        ("alphakraken", "_FALLBACK", "alphakraken--fallback"),  # alphakraken's fallback project
        ("alphakraken", "Müller_Lab", "alphakraken-m-ller-lab"),
        ("alphakraken", "数据01", "alphakraken-01"),
        ("alphakraken", "--A--B--", "alphakraken-a-b"),
        ("alphakraken", "a...b", "alphakraken-a---b"),
        ("Alpha_Kraken.", "P1", "alpha-kraken-p1"),
        ("-alphakraken-", "-p-", "alphakraken-p"),
        ("a", "b", "a-b"),
        ("x", "192.168.5.4", "x-192-168-5-4"),
        ("alphakraken", "\tP1\n", "alphakraken-p1"),
    ],
)
def test_bucket_name_examples(prefix: str, project: str, expected: str) -> None:
    assert bucket_name(prefix, project) == expected
    assert bucket_name_problems(expected) == []


def test_where_alphakrakens_name_is_valid_ours_is_identical() -> None:
    """A lab switching uploaders finds its objects where they are (``str.lower`` and all)."""
    assert bucket_name("ak", "\u212a1") == "ak-k1" == alphakraken_bucket_name("ak", "\u212a1")  # Kelvin sign
    # Where theirs is invalid (non-ASCII), ours is normalised into the alphabet instead.
    assert alphakraken_bucket_name("ak", "\u0130x") != bucket_name("ak", "\u0130x") == "ak-x"
    assert bucket_name("alphakraken", "Müller_2024") == "alphakraken-m-ller-2024"


def test_a_dotted_prefix_is_kept_as_alphakraken_keeps_it() -> None:
    # alphakraken replaces dots in the project only; the bucket it made is where the objects are.
    assert bucket_name("my.org", "a.b.c") == "my.org-a-b-c"


def test_bucket_name_at_exact_length_limit_is_kept_whole() -> None:
    prefix = "p" * 30
    project = "q" * (MAX_BUCKET_NAME_LENGTH - 31)
    name = bucket_name(prefix, project)
    assert len(name) == MAX_BUCKET_NAME_LENGTH
    assert name == f"{prefix}-{project}"


def test_bucket_name_too_long_is_refused_with_length_and_prefix_advice() -> None:
    prefix = "p" * 40
    project = "q" * 30
    with pytest.raises(InvalidInputError) as info:
        bucket_name(prefix, project)
    message = str(info.value)
    assert "71 characters" in message
    assert "at most 63" in message
    assert "bucket_prefix of at most 32 characters" in message
    assert "truncated" in message


def test_bucket_name_too_long_because_of_project_alone_suggests_shorter_project() -> None:
    with pytest.raises(InvalidInputError, match="shorten the project id to at most 61 characters"):
        bucket_name("a", "q" * 62)


def test_bucket_name_length_counts_after_normalisation() -> None:
    # 70 raw characters, but runs collapse: "a-b-...": still fine because it normalises short.
    assert bucket_name("ak", "a" + "." * 70 + "b") == "ak-a-b"


@pytest.mark.parametrize("prefix", ["", "---", "...", "__", "   ", "äöü", "数据"])
def test_bucket_name_refuses_prefix_without_letters_or_digits(prefix: str) -> None:
    with pytest.raises(InvalidInputError, match=r"bucket_prefix .* contains no letters or digits"):
        bucket_name(prefix, "PRID001")


@pytest.mark.parametrize("project", ["", "-", ". .", "___", "数据"])
def test_bucket_name_refuses_project_without_letters_or_digits(project: str) -> None:
    with pytest.raises(InvalidInputError, match=r"project_id .* contains no letters or digits"):
        bucket_name("alphakraken", project)


@pytest.mark.parametrize(
    ("prefix", "project", "reserved"),
    [
        ("sthree", "p1", "sthree-"),
        ("STHREE", "p1", "sthree-"),
        ("sthree-x", "p1", "sthree-"),
        ("amzn-s3-demo", "p1", "amzn-s3-demo-"),
        ("amzn_s3_demo_bucket", "p1", "amzn-s3-demo-"),
    ],
)
def test_bucket_name_refuses_reserved_prefixes(prefix: str, project: str, reserved: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(repr(reserved))) as info:
        bucket_name(prefix, project)
    assert "choose a different bucket_prefix" in str(info.value)


def test_bucket_name_refuses_reserved_prefix_completed_by_project() -> None:
    with pytest.raises(InvalidInputError, match="amzn-s3-demo-") as info:
        bucket_name("amzn-s3", "demo-1")
    assert "choose a different bucket_prefix or project id" in str(info.value)


def test_xn_prefix_cannot_arise_because_hyphens_collapse() -> None:
    assert bucket_name("xn--", "p") == "xn-p"
    assert bucket_name("XN", "--p") == "xn-p"


@pytest.mark.parametrize("project", ["s3alias", "S3ALIAS", "x-s3alias", "x_s3alias"])
def test_bucket_name_refuses_reserved_suffix(project: str) -> None:
    with pytest.raises(InvalidInputError, match="reserved suffix '-s3alias'"):
        bucket_name("alphakraken", project)


@pytest.mark.parametrize("project", ["--ol-s3", "x--x-s3", "t--table-s3", "m.mrap"])
def test_double_hyphen_and_dot_suffixes_cannot_arise(project: str) -> None:
    name = bucket_name("alphakraken", project)
    assert not name.endswith(RESERVED_SUFFIXES)
    assert bucket_name_problems(name) == []


@pytest.mark.parametrize(
    ("prefix", "project"), [(None, "p"), (1, "p"), ("ak", None), ("ak", 7), (b"ak", "p"), ("ak", b"p")]
)
def test_bucket_name_refuses_non_strings(prefix: object, project: object) -> None:
    with pytest.raises(InvalidInputError, match="must be a string"):
        bucket_name(prefix, project)  # type: ignore[arg-type]


def test_invalid_input_error_is_permanent_value_error() -> None:
    with pytest.raises(ValueError):
        bucket_name("", "p")
    with pytest.raises(PermanentBackupError):
        bucket_name("", "p")


# --- check_bucket_prefix / normalise_name_part -------------------------------------------------------


def test_check_bucket_prefix_returns_normalised_prefix() -> None:
    assert check_bucket_prefix("MPG.MPI_Mann") == "mpg-mpi-mann"


def test_check_bucket_prefix_refuses_prefix_leaving_no_room_for_project() -> None:
    assert check_bucket_prefix("p" * 61) == "p" * 61
    with pytest.raises(InvalidInputError, match=r"62 characters.*at most 61"):
        check_bucket_prefix("p" * 62)


def test_normalise_name_part() -> None:
    assert normalise_name_part("A.B_C d--e") == "a-b-c-d-e"
    assert normalise_name_part("") == ""
    assert normalise_name_part("...") == ""
    with pytest.raises(InvalidInputError):
        normalise_name_part(3)  # type: ignore[arg-type]


# --- bucket_name_problems: the independent validator -------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "abc",
        "a" * 63,
        "my-bucket",
        "docexamplebucket1",
        "log-delivery-march-2020",
        "my.dotted.bucket",
        "a.b",
        "1-2",
        "192.168.5.4x",
        "1.2.3",
        "xn-ok",
        "sthree",
        "amzn-s3-demo",
        "bucket-s3alias1",
        "s3alias",
        "ol-s3",
        "my-mrap",
    ],
)
def test_validator_accepts_valid_names(name: str) -> None:
    assert bucket_name_problems(name) == []


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "3 to 63 characters long, is 0"),
        ("ab", "3 to 63 characters long, is 2"),
        ("a" * 64, "3 to 63 characters long, is 64"),
        ("My-Bucket", "only lower-case letters"),
        ("my_bucket", "only lower-case letters"),
        ("my bucket", "only lower-case letters"),
        ("bücket", "only lower-case letters"),
        ("-bucket", "begin and end"),
        ("bucket-", "begin and end"),
        (".bucket", "begin and end"),
        ("bucket.", "begin and end"),
        ("my..bucket", "two adjacent periods"),
        ("192.168.5.4", "IP address"),
        ("10.0.0.1", "IP address"),
        ("999.999.999.999", "IP address"),
        ("xn--bucket", "reserved prefix 'xn--'"),
        ("sthree-bucket", "reserved prefix 'sthree-'"),
        ("amzn-s3-demo-bucket", "reserved prefix 'amzn-s3-demo-'"),
        ("bucket-s3alias", "reserved suffix '-s3alias'"),
        ("bucket--ol-s3", "reserved suffix '--ol-s3'"),
        ("bucket.mrap", "reserved suffix '.mrap'"),
        ("bucket--x-s3", "reserved suffix '--x-s3'"),
        ("bucket--table-s3", "reserved suffix '--table-s3'"),
    ],
)
def test_validator_rejects_known_bad_names(name: str, fragment: str) -> None:
    problems = bucket_name_problems(name)
    assert any(fragment in p for p in problems), problems


def test_validator_reports_all_problems_at_once() -> None:
    problems = bucket_name_problems("-X..")
    assert len(problems) == 3  # characters, begin/end, adjacent periods
    assert any("'X'" in p for p in problems)


def test_validator_handles_non_string() -> None:
    assert bucket_name_problems(None) == ["must be a string, not NoneType"]  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------------------

_valid_part = st.from_regex(r"[a-z0-9]{1,10}(-[a-z0-9]{1,10}){0,2}", fullmatch=True)


@given(prefix=st.text(), project=st.text())
@example(prefix="sthree", project="x")
@example(prefix="x", project="s3alias")
@example(prefix="amzn-s3", project="demo-1")
@example(prefix="p" * 62, project="q")
@example(prefix="", project="")
def test_bucket_name_is_valid_or_refused(prefix: str, project: str) -> None:
    try:
        name = bucket_name(prefix, project)
    except InvalidInputError as exc:
        assert str(exc)
        return
    assert bucket_name_problems(name) == []
    assert "." not in name
    assert len(name) <= MAX_BUCKET_NAME_LENGTH


@given(prefix=_valid_part, project=_valid_part)
def test_already_normal_parts_are_kept(prefix: str, project: str) -> None:
    expected = f"{prefix}-{project}"
    assume(not bucket_name_problems(expected))
    assert bucket_name(prefix, project) == expected


@given(prefix=st.text(), project=st.text())
def test_ours_is_alphakrakens_whenever_theirs_is_valid(prefix: str, project: str) -> None:
    try:
        name = bucket_name(prefix, project)
    except InvalidInputError:
        return
    theirs = alphakraken_bucket_name(prefix, project)
    assert name == theirs or bucket_name_problems(theirs)


@given(text=st.text())
def test_normalise_name_part_is_idempotent_and_in_alphabet(text: str) -> None:
    once = normalise_name_part(text)
    assert normalise_name_part(once) == once
    assert re.fullmatch(r"([a-z0-9]+(-[a-z0-9]+)*)?", once)


@given(
    project=st.text(alphabet=st.characters(max_codepoint=127)),
    case_variant=st.sampled_from([str.upper, str.lower, str.swapcase]),
)
def test_ascii_case_does_not_change_bucket(project: str, case_variant) -> None:
    try:
        expected = bucket_name("ak", project)
    except InvalidInputError:
        return
    assert bucket_name("ak", case_variant(project)) == expected


@given(name=st.text(max_size=70))
def test_validator_agrees_with_the_rules_on_arbitrary_text(name: str) -> None:
    problems = bucket_name_problems(name)
    rules_hold = (
        3 <= len(name) <= 63
        and re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", name) is not None
        and ".." not in name
        and re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name, flags=re.ASCII) is None
        and not name.startswith(RESERVED_PREFIXES)
        and not name.endswith(RESERVED_SUFFIXES)
    )
    assert (problems == []) == rules_hold


@given(stem=_valid_part, reserved=st.sampled_from(RESERVED_PREFIXES))
def test_validator_rejects_every_reserved_prefix(stem: str, reserved: str) -> None:
    assert any("reserved prefix" in p for p in bucket_name_problems(reserved + stem))


@given(stem=_valid_part, reserved=st.sampled_from(RESERVED_SUFFIXES))
def test_validator_rejects_every_reserved_suffix(stem: str, reserved: str) -> None:
    assert any("reserved suffix" in p for p in bucket_name_problems(stem + reserved))
