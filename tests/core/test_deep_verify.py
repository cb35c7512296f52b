"""core/deep_verify.py: the deep-verification verdict and the sampling order, pure."""

from __future__ import annotations

import ast
import hashlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import airflow_provider_kraken_s3.core.deep_verify as deep_verify
from airflow_provider_kraken_s3.core.deep_verify import (
    DeepVerifyOutcome,
    Downloaded,
    SampleCandidate,
    archived_finding,
    judge_download,
    judge_restored,
    missing_finding,
    needs_restore,
    select_sample,
    worst,
)
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.etag import (
    etag_from_part_digests,
    format_precomputed_etag,
    one_part_etag,
)
from airflow_provider_kraken_s3.core.inventory import backup_objects
from airflow_provider_kraken_s3.core.parts import MIB

PART = 5 * MIB
DATA = bytes(range(256)) * (PART * 2 // 256 + 1)  # a little over two parts
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def etag_at(data: bytes, part_size: int) -> str:
    if len(data) <= part_size:
        return hashlib.md5(data).hexdigest()
    parts = [hashlib.md5(data[i : i + part_size]).digest() for i in range(0, len(data), part_size)]
    return etag_from_part_digests(parts, multipart=True)


def item(data: bytes, *, part_size: int | None = PART, etag: str | None = None):
    entry: list = [len(data), hashlib.md5(data).hexdigest()]
    if part_size is not None:
        entry.append(format_precomputed_etag(etag or etag_at(data, part_size), part_size))
    return backup_objects("x.raw", {"x.raw": entry})[0]


def downloaded(
    data: bytes, *, s3_etag: str | None = None, sizes=(PART,), known: int | None = PART
) -> Downloaded:
    return Downloaded(
        size=len(data),
        md5=hashlib.md5(data).hexdigest(),
        etags={size: etag_at(data, size) for size in sizes if size < len(data)},
        s3_etag=s3_etag or etag_at(data, PART),
        object_part_size=known,
    )


def test_module_is_pure() -> None:
    tree = ast.parse(Path(deep_verify.__file__).read_text())
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not imported & {"airflow", "boto3", "botocore", "mongoengine", "pymongo", "os", "pathlib"}


# ------------------------------------------------------------------ judge_download


def test_bytes_matching_the_inventory_and_s3s_etag_are_ok() -> None:
    finding = judge_download("b", item(DATA), downloaded(DATA))
    assert finding.outcome is DeepVerifyOutcome.OK
    assert "is the ETag of those bytes at 5 MiB parts" in finding.reason


def test_one_flipped_byte_differs_and_says_what_to_do() -> None:
    rotten = bytearray(DATA)
    rotten[123] ^= 0xFF
    # S3 still reports the original ETag (what HEAD shows): only the bytes tell.
    finding = judge_download("b", item(DATA), downloaded(bytes(rotten), s3_etag=etag_at(DATA, PART)))
    assert finding.outcome is DeepVerifyOutcome.DIFFERS
    assert f"have MD5 {hashlib.md5(bytes(rotten)).hexdigest()}" in finding.reason
    assert f"the inventory says {hashlib.md5(DATA).hexdigest()}" in finding.reason
    assert "s3://b/x.raw" in finding.reason and "Keep the instrument's copy" in finding.reason


def test_another_size_differs() -> None:
    finding = judge_download("b", item(DATA), downloaded(DATA[:-1]))
    assert finding.outcome is DeepVerifyOutcome.DIFFERS and f"holds {len(DATA) - 1} bytes" in finding.reason


def test_right_bytes_under_an_etag_that_does_not_describe_them_differ() -> None:
    """S3's ETag is what HEAD-based checks trust: if it no longer describes the bytes, they are misled."""
    wrong = f"{'0' * 32}-3"
    finding = judge_download("b", item(DATA), downloaded(DATA, s3_etag=wrong))
    assert finding.outcome is DeepVerifyOutcome.DIFFERS
    assert f"S3 reports ETag {wrong}" in finding.reason and "are right (MD5" in finding.reason


def test_a_wrong_recorded_etag_differs() -> None:
    finding = judge_download("b", item(DATA, etag=f"{'1' * 32}-3"), downloaded(DATA))
    assert finding.outcome is DeepVerifyOutcome.DIFFERS and "the record's ETag is wrong" in finding.reason


def test_single_part_objects_are_judged_by_their_md5_etag() -> None:
    small = DATA[:1000]
    ok = judge_download("b", item(small), downloaded(small, s3_etag=hashlib.md5(small).hexdigest()))
    assert ok.outcome is DeepVerifyOutcome.OK
    bad = judge_download("b", item(small), downloaded(small, s3_etag="f" * 32))
    assert bad.outcome is DeepVerifyOutcome.DIFFERS


def test_a_one_part_multipart_etag_follows_from_the_md5() -> None:
    exact = DATA[:PART]  # s3transfer uploads a file exactly its threshold as one part: "…-1"
    one = one_part_etag(hashlib.md5(exact).hexdigest())
    finding = judge_download("b", item(exact, etag=one), downloaded(exact, s3_etag=one))
    assert finding.outcome is DeepVerifyOutcome.OK


def test_an_unknown_part_size_leaves_the_md5_as_the_proof() -> None:
    """A legacy [size, md5] entry and an object uploaded at a part size nobody hashed: the MD5 decides."""
    s3_etag = etag_at(DATA, 7 * MIB)
    finding = judge_download(
        "b", item(DATA, part_size=None), downloaded(DATA, s3_etag=s3_etag, sizes=(PART,), known=None)
    )
    assert finding.outcome is DeepVerifyOutcome.OK and "only the MD5 proves the bytes" in finding.reason


def test_candidate_part_sizes_find_s3s_etag() -> None:
    s3_etag = etag_at(DATA, 8 * MIB)
    got = downloaded(DATA, s3_etag=s3_etag, sizes=(PART, 8 * MIB), known=None)
    finding = judge_download("b", item(DATA, part_size=None), got)
    assert finding.outcome is DeepVerifyOutcome.OK and "at 8 MiB parts" in finding.reason


def test_judge_restored_ignores_s3s_etag_but_not_the_inventory() -> None:
    assert (
        judge_restored("/r/x.raw", item(DATA), downloaded(DATA, s3_etag="zz")).outcome is DeepVerifyOutcome.OK
    )
    rotten = bytearray(DATA)
    rotten[0] ^= 1
    finding = judge_restored("/r/x.raw", item(DATA), downloaded(bytes(rotten)))
    assert finding.outcome is DeepVerifyOutcome.DIFFERS and "/r/x.raw" in finding.reason


# ------------------------------------------------------------------ archive, missing, worst


@pytest.mark.parametrize(
    ("storage_class", "restore", "archive_status", "expected"),
    [
        ("GLACIER", None, None, True),
        ("DEEP_ARCHIVE", None, None, True),
        ("GLACIER", 'ongoing-request="true"', None, True),
        ("GLACIER", 'ongoing-request="false", expiry-date="Fri, 1 Jan 2027 00:00:00 GMT"', None, False),
        ("INTELLIGENT_TIERING", None, "DEEP_ARCHIVE_ACCESS", True),
        ("INTELLIGENT_TIERING", None, None, False),
        ("GLACIER_IR", None, None, False),
        (None, None, None, False),
        ("STANDARD", None, None, False),
    ],
)
def test_needs_restore(storage_class, restore, archive_status, expected) -> None:
    assert needs_restore(storage_class, restore, archive_status) is expected


def test_archived_and_missing_findings_say_what_to_do() -> None:
    archived = archived_finding("b", "x.raw", "DEEP_ARCHIVE")
    assert archived.outcome is DeepVerifyOutcome.NEEDS_RESTORE
    assert (
        "restore-object --bucket b --key 'x.raw'" in archived.reason and "Nothing is wrong" in archived.reason
    )
    running = archived_finding("b", "x.raw", "GLACIER", 'ongoing-request="true"')
    assert "still running" in running.reason
    missing = missing_finding("b", "x.raw")
    assert missing.outcome is DeepVerifyOutcome.MISSING and "run the backup again" in missing.reason


def test_worst_outcome_of_a_set() -> None:
    F = DeepVerifyOutcome
    assert worst([F.OK, F.NEEDS_RESTORE]) is F.NEEDS_RESTORE
    assert worst([F.NEEDS_RESTORE, F.UNVERIFIED, F.OK]) is F.UNVERIFIED
    assert worst([F.UNVERIFIED, F.MISSING]) is F.MISSING
    assert worst([F.MISSING, F.DIFFERS, F.OK]) is F.DIFFERS
    assert worst([]) is F.OK
    assert [o for o in F if o.proves_record_wrong] == [F.DIFFERS, F.MISSING]


# ------------------------------------------------------------------ sampling


def candidates() -> list[SampleCandidate]:
    return [
        SampleCandidate("recent", 10, NOW - timedelta(days=1)),
        SampleCandidate("never-b", 30, None),
        SampleCandidate("old", 20, NOW - timedelta(days=90)),
        SampleCandidate("never-a", 40, None),
        SampleCandidate("naive-middle", 50, (NOW - timedelta(days=30)).replace(tzinfo=None)),
    ]


def test_never_verified_first_then_oldest_verified() -> None:
    chosen = select_sample(candidates(), fraction=1.0)
    assert [c.raw_file_id for c in chosen] == ["never-a", "never-b", "old", "naive-middle", "recent"]


def test_a_fraction_rounds_up() -> None:
    assert [c.raw_file_id for c in select_sample(candidates(), fraction=0.3)] == ["never-a", "never-b"]
    assert len(select_sample(candidates(), fraction=0.01)) == 1
    assert select_sample([], fraction=0.5) == []


def test_a_byte_budget_keeps_the_order_and_always_takes_one() -> None:
    assert [c.raw_file_id for c in select_sample(candidates(), byte_budget=90)] == [
        "never-a",
        "never-b",
        "old",
    ]
    # never-a (40) + never-b (30) = 70; old (20) would make 90 > 85: stop, the smaller "recent" does not jump ahead
    assert [c.raw_file_id for c in select_sample(candidates(), byte_budget=85)] == ["never-a", "never-b"]
    assert [c.raw_file_id for c in select_sample(candidates(), byte_budget=1)] == ["never-a"]


def test_both_limits_whichever_first() -> None:
    assert len(select_sample(candidates(), fraction=0.2, byte_budget=1000)) == 1
    assert len(select_sample(candidates(), fraction=1.0, byte_budget=70)) == 2


@pytest.mark.parametrize(
    "kwargs", [{}, {"fraction": 0}, {"fraction": 1.5}, {"byte_budget": 0}, {"byte_budget": True}]
)
def test_bad_limits_are_refused(kwargs) -> None:
    with pytest.raises(InvalidInputError):
        select_sample(candidates(), **kwargs)
