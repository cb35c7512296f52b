"""``kraken-s3`` against moto_server and mongomock: answers, JSON lines and exit codes.

The CLI is called in-process (``main([...])``): mongomock lives in this process only, so a ``kraken-s3``
subprocess would see an empty database. :func:`test_console_script_is_installed_and_explains_itself` runs
the console script itself with a command that needs no MongoDB.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from airflow_provider_kraken_s3.cli.main import main
from airflow_provider_kraken_s3.cli.output import ExitCode
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.records.models import RawFile
from tests.checksum_objects import crc64
from tests.conftest import BACKED_UP_BUCKET as BUCKET


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def multipart_etag(data: bytes, part_size: int) -> str:
    """Written out here, independently of the package's ETag code."""
    parts = [data[offset : offset + part_size] for offset in range(0, len(data), part_size)]
    if len(parts) <= 1:  # an empty file too
        return hashlib.md5(data).hexdigest()
    joined = b"".join(hashlib.md5(part).digest() for part in parts)
    return f"{hashlib.md5(joined).hexdigest()}-{len(parts)}"


def test_etag_prints_md5_etag_crc64nvme_and_alphakraken_form(make_file, capsys) -> None:
    path = make_file("x.raw", 12 * MIB + 7)
    data = path.read_bytes()

    assert main(["etag", str(path), "--part-size", "5", "--json"]) == ExitCode.OK

    [line] = json_lines(capsys.readouterr().out)
    expected = multipart_etag(data, 5 * MIB)
    assert line == {
        "path": str(path),
        "size": len(data),
        "md5": hashlib.md5(data).hexdigest(),
        "etag": expected,
        "part_size_mib": 5,
        "alphakraken_etag": f"{expected}__5",
        "checksum": {"algorithm": "CRC64NVME", "value": crc64(data)},
    }


def test_etag_table_for_people(make_file, capsys) -> None:
    small = make_file("small.raw", 1000)
    assert main(["etag", str(small), "--part-size", "100"]) == ExitCode.OK
    out = capsys.readouterr().out
    digest = hashlib.md5(small.read_bytes()).hexdigest()
    assert f"{digest}__100" in out and "100 MiB parts" in out
    assert re.search(rf"^  CRC64NVME +{re.escape(crc64(small.read_bytes()))} *$", out, re.MULTILINE)


@pytest.mark.parametrize("part_size", ["0", "4", "abc"])
def test_etag_refuses_a_bad_part_size_as_a_usage_error(make_file, part_size, capsys) -> None:
    path = make_file("x.raw", 10)
    with pytest.raises(SystemExit) as exited:
        main(["etag", str(path), "--part-size", part_size])
    assert exited.value.code == ExitCode.USAGE
    assert "--part-size" in capsys.readouterr().err


def test_etag_of_a_missing_file(tmp_path, capsys) -> None:
    assert main(["etag", str(tmp_path / "nope.raw")]) == ExitCode.UNAVAILABLE
    assert "cannot read" in capsys.readouterr().err


def test_verify_a_backed_up_set(backed_up, capsys) -> None:
    backed_up("s1.d", {"s1.d/analysis.tdf": 3000, "s1.d/analysis.tdf_bin": 2 * 5 * MIB + 1})
    capsys.readouterr()  # the backup's own task log

    assert main(["verify", "s1.d", "--json"]) == ExitCode.OK

    [line] = json_lines(capsys.readouterr().out)
    assert line["verified"] is True
    assert sorted(item["path"] for item in line["objects"]) == ["s1.d/analysis.tdf", "s1.d/analysis.tdf_bin"]


def test_verify_reports_a_vanished_object(backed_up, s3_client, capsys) -> None:
    backed_up("s2.raw", {"s2.raw": 4096})
    s3_client.delete_object(Bucket=BUCKET, Key=RawFile.objects.get(id="s2.raw").s3_backup_key)
    capsys.readouterr()

    assert main(["verify", "s2.raw"]) == ExitCode.PROBLEM

    out = capsys.readouterr().out
    assert "NOT verified" in out and "object missing" in out


def test_verify_an_unknown_raw_file_says_so(aws_conn, kraken_mongo, capsys) -> None:
    assert main(["verify", "never-acquired.raw"]) == ExitCode.UNAVAILABLE
    assert "never-acquired.raw" in capsys.readouterr().err


def test_console_script_is_installed_and_explains_itself() -> None:
    [script] = [ep for ep in entry_points(group="console_scripts") if ep.name == "kraken-s3"]
    assert script.value == "airflow_provider_kraken_s3.cli.main:main"
    done = subprocess.run(
        [sys.executable, "-m", "airflow_provider_kraken_s3.cli.main", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "exit codes:" in done.stdout
    for command in ("etag", "verify", "restore", "audit", "reconcile"):
        assert command in done.stdout


def test_audit_finds_a_missing_object_and_fails(backed_up, s3_client, capsys) -> None:
    backed_up("a1.raw", {"a1.raw": 2048})
    backed_up("a2.d", {"a2.d/analysis.tdf": 1000, "a2.d/analysis.tdf_bin": 3000})
    s3_client.delete_object(Bucket=BUCKET, Key=RawFile.objects.get(id="a1.raw").s3_backup_key)
    capsys.readouterr()

    assert main(["audit", "--json"]) == ExitCode.PROBLEM

    lines = json_lines(capsys.readouterr().out)
    summary = lines[-1]
    assert summary["kind"] == "summary" and summary["records"] == 2 and summary["missing"] == 1
    [missing] = [line for line in lines if line.get("kind") == "missing"]
    assert missing["raw_file_id"] == "a1.raw"
    assert {line["raw_file_id"] for line in lines if line.get("kind") == "ok"} == {"a2.d"}


def test_audit_of_a_healthy_store_is_ok_and_filters_apply(backed_up, capsys) -> None:
    backed_up("h1.raw", {"h1.raw": 100})
    capsys.readouterr()

    assert main(["audit", "--instrument", "astral1"]) == ExitCode.OK
    assert "audited 1 raw file(s)" in capsys.readouterr().out
    assert main(["audit", "--project", "P9999", "--allow-empty"]) == ExitCode.OK
    assert "audited 0 raw file(s)" in capsys.readouterr().out
    assert main(["audit", "--since", "2030-01-01", "--allow-empty"]) == ExitCode.OK
    assert "audited 0 raw file(s)" in capsys.readouterr().out


def test_reconcile_fails_a_dead_attempt_and_aborts_an_orphan_only_when_asked(
    aws_conn, kraken_mongo, s3_client, bucket, capsys
) -> None:
    from datetime import datetime, timedelta, timezone

    from tests.conftest_mongo import insert_raw_file

    insert_raw_file(
        "dead.raw",
        backup_status="upload_in_progress",
        s3_bucket=bucket,
        s3_lease_owner="upload_to_s3/run/try1#dead",
        s3_lease_expires_at=datetime.now(timezone.utc) - timedelta(minutes=5),
    )
    orphan = s3_client.create_multipart_upload(Bucket=bucket, Key="lost/x.raw")["UploadId"]  # moto: "2010"

    assert main(["reconcile", "--json", "--bucket", bucket]) == ExitCode.OK
    [report] = json_lines(capsys.readouterr().out)
    assert [(s["raw_file_id"], s["action"]) for s in report["stuck"]] == [("dead.raw", "failed")]
    assert [(o["upload_id"], o["action"]) for o in report["orphans"]] == [(orphan, "listed")]
    dead = RawFile.objects.get(id="dead.raw")
    assert dead.backup_status == "upload_failed" and "#dead" in dead.s3_backup_details
    still_there = s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [upload["UploadId"] for upload in still_there] == [orphan]

    assert main(["reconcile", "--abort-orphans", "--bucket", bucket]) == ExitCode.OK
    assert "1 aborted" in capsys.readouterr().out
    assert s3_client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_deep_verify_and_restore_round_trip(backed_up, s3_client, tmp_path, capsys) -> None:
    base = backed_up("r.d", {"r.d/a.tdf": 700, "r.d/a.tdf_bin": 6 * MIB + 1})
    capsys.readouterr()

    assert main(["verify", "r.d", "--deep", "--json"]) == ExitCode.OK
    [report] = json_lines(capsys.readouterr().out)
    assert report["outcome"] == "ok" and report["bytes"] == 700 + 6 * MIB + 1

    destination = tmp_path / "restored"
    assert main(["restore", "r.d", str(destination)]) == ExitCode.OK
    for relative in ("r.d/a.tdf", "r.d/a.tdf_bin"):
        assert (destination / relative).read_bytes() == (base / relative).read_bytes()
    assert "restored" in capsys.readouterr().out
    assert main(["restore", "r.d", str(destination), "--json"]) == ExitCode.OK  # already there: left alone
    assert {f["outcome"] for f in json_lines(capsys.readouterr().out)[-1]["files"]} == {"already_present"}

    s3_client.put_object(Bucket=BUCKET, Key="r.d/a.tdf", Body=b"q" * 700)
    assert main(["verify", "r.d", "--deep"]) == ExitCode.PROBLEM
    assert "differs" in capsys.readouterr().out
