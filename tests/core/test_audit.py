"""The audit's pure part: what to ask S3 for a record, the findings from its answer, and their rendering."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from airflow_provider_kraken_s3.core.audit import (
    FIELDS,
    AuditFindingKind,
    AuditSummary,
    AuditTarget,
    RecordAudit,
    bucket_missing,
    compare,
    not_checked,
    plan_audit,
    render_json_lines,
    render_table,
)
from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.verdict import RawFileRecord

MD5_A, MD5_B, MD5_C = "a" * 32, "b" * 32, "c" * 32
ETAG_A, ETAG_B = f"{'1' * 32}-3", "2" * 32
OTHER = "9" * 32


def record(raw_file_id: str, file_info: dict, **fields) -> RawFileRecord:
    values = {"backup_status": "upload_done", "s3_bucket": "bkt", "project_id": "P1", **fields}
    return RawFileRecord(id=raw_file_id, file_info=file_info, **values)


D_FOLDER = record("x.d", {"x.d/a": [30, MD5_A, f"{ETAG_A}__5"], "x.d/sub/b": [7, MD5_B, f"{ETAG_B}__5"]})


def target_of(rec: RawFileRecord) -> AuditTarget:
    planned = plan_audit(rec)
    assert isinstance(planned, AuditTarget), planned
    return planned


def kinds(audit: RecordAudit) -> list[tuple[str, str | None]]:
    return [(finding.kind.value, finding.key) for finding in audit.findings]


# --------------------------------------------------------------------------- plan


@pytest.mark.parametrize(
    ("rec", "folder", "keys"),
    [
        (record("s.raw", {"s.raw": [30, MD5_A, f"{ETAG_A}__5"]}), "", ["s.raw"]),
        (D_FOLDER, "x.d/", ["x.d/a", "x.d/sub/b"]),
        (
            record("w.wiff", {"w.wiff": [30, MD5_A, f"{ETAG_A}__5"], "w.wiff2": [7, MD5_B, f"{ETAG_B}__5"]}),
            "w.wiff/",
            ["w.wiff/w.wiff", "w.wiff/w.wiff2"],
        ),
        (  # the fallback project's prefix, for a single file and for a folder
            record(
                "f.raw",
                {"f.raw": [30, MD5_A, f"{ETAG_A}__5"]},
                project_id="_FALLBACK",
                instrument_id="astral1",
                created_at=datetime(2024, 2, 3, tzinfo=timezone.utc),
            ),
            "",
            ["astral1/2024_02/f.raw"],
        ),
        (
            record(
                "f.d",
                {"f.d/a": [30, MD5_A, f"{ETAG_A}__5"]},
                project_id="_FALLBACK",
                instrument_id="astral1",
                created_at=datetime(2024, 2, 3, tzinfo=timezone.utc),
            ),
            "astral1/2024_02/f.d/",
            ["astral1/2024_02/f.d/a"],
        ),
    ],
    ids=["raw", "d-folder", "wiff-set", "fallback-raw", "fallback-d"],
)
def test_plan_lists_a_sets_folder_and_heads_a_single_object(rec, folder, keys) -> None:
    target = target_of(rec)
    assert (target.bucket, target.folder, [item.key for item in target.objects]) == ("bkt", folder, keys)


def test_an_inventory_path_outside_the_raw_file_is_a_record_finding() -> None:
    planned = plan_audit(
        record("x.d", {"x.d/a": [30, MD5_A, f"{ETAG_A}__5"], "y/b": [7, MD5_B, f"{ETAG_B}__5"]})
    )
    assert isinstance(planned, RecordAudit)
    assert [f.kind for f in planned.findings] == [
        AuditFindingKind.RECORD
    ] and "not one of its files" in planned.findings[0].detail


@pytest.mark.parametrize(
    ("rec", "expected_detail"),
    [
        (record("n.raw", {"n.raw": [30, MD5_A, f"{ETAG_A}__5"]}, s3_bucket=None), "records no backup"),
        (record("e.raw", {}), "empty file_info"),
        (record("b.raw", {"b.raw": [30, "not-an-md5"]}), "md5 'not-an-md5'"),
        (record("p.raw", {"p.raw": [30, MD5_A]}, backup_status="upload_failed"), "'upload_failed'"),
        (record("f.raw", {"f.raw": [30, MD5_A]}, project_id="_FALLBACK"), "instrument_id"),
    ],
    ids=["no-bucket", "empty-inventory", "bad-entry", "not-done", "fallback-without-instrument"],
)
def test_a_record_that_cannot_be_audited_is_a_record_finding(rec, expected_detail) -> None:
    planned = plan_audit(rec)
    assert isinstance(planned, RecordAudit) and not planned.ok
    assert [finding.kind for finding in planned.findings] == [AuditFindingKind.RECORD]
    assert expected_detail in planned.findings[0].detail


# --------------------------------------------------------------------------- compare


def test_everything_as_recorded_is_ok() -> None:
    audit = compare(
        target_of(D_FOLDER), {"x.d/a": RemoteObject(f'"{ETAG_A}"', 30), "x.d/sub/b": RemoteObject(ETAG_B, 7)}
    )
    assert audit.ok and kinds(audit) == [("ok", "x.d/a"), ("ok", "x.d/sub/b")]
    first = audit.findings[0]
    assert (first.path, first.expected_etag, first.found_etag, first.expected_size, first.found_size) == (
        "x.d/a",
        ETAG_A,
        ETAG_A,
        30,
        30,
    )


def test_missing_different_and_extra_objects_of_a_set() -> None:
    found = {
        "x.d/a": RemoteObject(f"{OTHER}-3", 30),  # other bytes, same size
        "x.d/extra.tmp": RemoteObject(OTHER, 4),  # not in the inventory
    }
    audit = compare(target_of(D_FOLDER), found)
    assert kinds(audit) == [("different", "x.d/a"), ("missing", "x.d/sub/b"), ("extra", "x.d/extra.tmp")]
    different, missing, extra = audit.findings
    assert (different.expected_etag, different.found_etag) == (ETAG_A, f"{OTHER}-3")
    assert f"ETag expected {ETAG_A}, found {OTHER}-3" in different.detail
    assert (missing.expected_etag, missing.found_etag, missing.found_size) == (ETAG_B, None, None)
    assert (extra.path, extra.found_etag, extra.found_size) == (None, OTHER, 4)
    assert "not in the inventory of x.d" in extra.detail


def test_a_size_difference_alone_is_different() -> None:
    audit = compare(
        target_of(D_FOLDER), {"x.d/a": RemoteObject(ETAG_A, 31), "x.d/sub/b": RemoteObject(ETAG_B, 7)}
    )
    assert kinds(audit) == [("different", "x.d/a"), ("ok", "x.d/sub/b")]
    assert "size expected 30 bytes, found 31 bytes" in audit.findings[0].detail


def test_a_single_object_target_reports_no_extras() -> None:
    target = target_of(record("s.raw", {"s.raw": [30, MD5_A, f"{ETAG_A}__5"]}))
    audit = compare(target, {"s.raw": RemoteObject(ETAG_A, 30), "s.raw.bak": RemoteObject(OTHER, 1)})
    assert kinds(audit) == [("ok", "s.raw")]


def test_an_entry_without_a_recorded_etag_is_a_record_finding_beside_the_others() -> None:
    rec = record("x.d", {"x.d/a": [30, MD5_A, f"{ETAG_A}__5"], "x.d/b": [7, MD5_B]})
    audit = compare(target_of(rec), {"x.d/a": RemoteObject(ETAG_A, 30)})
    assert kinds(audit) == [("ok", "x.d/a"), ("record", "x.d/b")]


def test_contradicting_metadata_is_shown_but_does_not_decide() -> None:
    target = target_of(record("s.raw", {"s.raw": [30, MD5_A, f"{ETAG_A}__5"]}))
    audit = compare(target, {"s.raw": RemoteObject(ETAG_A, 30, {"kraken-md5": MD5_C})})
    assert audit.ok and "contradicts the inventory MD5" in audit.findings[0].detail


def test_not_checked_and_a_missing_bucket() -> None:
    target = target_of(D_FOLDER)
    unchecked = not_checked(target, "S3 error (ExpiredToken); retrying will resume")
    assert kinds(unchecked) == [("unchecked", "x.d/")] and not unchecked.ok
    assert unchecked.findings[0].detail == "could not check: S3 error (ExpiredToken); retrying will resume"
    gone = bucket_missing(target, "bucket bkt does not exist")
    assert kinds(gone) == [("missing", "x.d/a"), ("missing", "x.d/sub/b")]
    assert {finding.detail for finding in gone.findings} == {"bucket bkt does not exist"}


# --------------------------------------------------------------------------- summary and rendering


def sample() -> tuple[list, AuditSummary]:
    summary = AuditSummary()
    audits = [
        compare(
            target_of(D_FOLDER), {"x.d/a": RemoteObject(ETAG_A, 30), "x.d/extra": RemoteObject(OTHER, 4)}
        ),
        compare(
            target_of(record("s.raw", {"s.raw": [1234567, MD5_A, f"{ETAG_A}__5"]})),
            {"s.raw": RemoteObject(ETAG_A, 1234567)},
        ),
    ]
    for audit in audits:
        summary.add(audit)
    return [finding for audit in audits for finding in audit.findings], summary


def test_summary_counts_and_verdict() -> None:
    _, summary = sample()
    assert not summary.ok
    assert summary.as_dict() == {
        "ok": False,
        "records": 2,
        "records_with_problems": 1,
        "objects_ok": 2,
        "missing": 1,
        "different": 0,
        "extra": 1,
        "record_problems": 0,
        "unchecked": 0,
    }
    assert summary.describe() == (
        "audited 2 raw file(s): 2 object(s) ok, 1 missing, 0 different, 1 extra, 0 record problem(s), "
        "0 not checked — NOT OK: 1 raw file(s) with problems"
    )


def test_table_of_a_healthy_audit_is_the_summary_line() -> None:
    summary = AuditSummary()
    audit = compare(
        target_of(D_FOLDER), {"x.d/a": RemoteObject(ETAG_A, 30), "x.d/sub/b": RemoteObject(ETAG_B, 7)}
    )
    summary.add(audit)
    assert summary.ok and summary.describe().endswith("— OK")
    assert render_table(audit.findings, summary) == f"{summary.describe()}\n"


def test_an_audit_of_nothing_is_not_called_ok() -> None:
    assert AuditSummary().describe().endswith("— NOTHING CHECKED: no upload_done raw file matched")


def test_json_lines_parse_and_carry_every_field() -> None:
    findings, summary = sample()
    lines = render_json_lines(findings, summary).splitlines()
    parsed = [json.loads(line) for line in lines]
    assert [list(item) for item in parsed[:-1]] == [list(FIELDS)] * len(findings)
    assert [(item["kind"], item["key"]) for item in parsed[:-1]] == [
        ("ok", "x.d/a"),
        ("missing", "x.d/sub/b"),
        ("extra", "x.d/extra"),
        ("ok", "s.raw"),
    ]
    assert parsed[1]["expected_etag"] == ETAG_B and parsed[1]["found_etag"] is None
    assert parsed[-1]["kind"] == "summary" and parsed[-1]["ok"] is False and parsed[-1]["missing"] == 1


def test_table_aligns_columns_hides_ok_rows_and_ends_with_the_summary() -> None:
    findings, summary = sample()
    lines = render_table(findings, summary).splitlines()
    assert lines[0].split() == ["STATUS", "RAW", "FILE", "KEY", "EXPECTED", "FOUND", "PROOF", "DETAIL"]
    assert [line.split()[0] for line in lines[1:3]] == ["MISSING", "EXTRA"]
    for column in ("RAW FILE", "KEY", "EXPECTED", "FOUND", "PROOF", "DETAIL"):
        start = lines[0].index(column)
        assert all(line[start - 2 : start] == "  " and line[start] != " " for line in lines[1:3]), column
    assert lines[-2:] == ["", summary.describe()]
    with_ok = render_table(findings, summary, include_ok=True).splitlines()
    assert [line.split()[0] for line in with_ok[1:5]] == ["ok", "MISSING", "EXTRA", "ok"]
    assert "1,234,567 B" in with_ok[4]
