"""``kraken-s3`` against moto_server and mongomock: answers, JSON lines and exit codes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from airflow_provider_kraken_s3.cli.main import main
from airflow_provider_kraken_s3.cli.output import ExitCode
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.records.models import RawFile
from tests.cli.conftest import BUCKET


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def multipart_etag(data: bytes, part_size: int) -> str:
    """Written out here, independently of the package's ETag code."""
    parts = [data[offset : offset + part_size] for offset in range(0, len(data), part_size)]
    if len(parts) == 1:
        return hashlib.md5(data).hexdigest()
    joined = b"".join(hashlib.md5(part).digest() for part in parts)
    return f"{hashlib.md5(joined).hexdigest()}-{len(parts)}"


def test_etag_prints_md5_etag_and_alphakraken_form(make_file, capsys) -> None:
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
    }


def test_etag_table_for_people(make_file, capsys) -> None:
    small = make_file("small.raw", 1000)
    assert main(["etag", str(small), "--part-size", "100"]) == ExitCode.OK
    out = capsys.readouterr().out
    digest = hashlib.md5(small.read_bytes()).hexdigest()
    assert f"{digest}__100" in out and "100 MiB parts" in out


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
    for command in ("etag", "verify"):
        assert command in done.stdout
