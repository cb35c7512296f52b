"""Every exit code ``kraken-s3 --help`` documents, each reached the way an operator would reach it.

In-process (``main([...])``) against moto_server and mongomock, like tests/cli/test_cli.py.
"""

from __future__ import annotations

import json
import re

import pytest

from airflow_provider_kraken_s3.cli.main import EPILOG, main
from airflow_provider_kraken_s3.cli.output import ExitCode
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.records.models import RawFile
from kraken_standins.s3 import free_port
from tests.conftest import BACKED_UP_BUCKET as BUCKET
from tests.conftest import aws_connection_json
from tests.conftest_mongo import insert_raw_file


def test_help_documents_every_exit_code() -> None:
    documented = {int(code) for code in re.findall(r"^  (\d+)  ", EPILOG, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}


# ------------------------------------------------------------------ 0 and 1 are in test_cli.py; 2:


def test_bad_arguments_are_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["audit", "--since", "yesterday"])
    assert exited.value.code == ExitCode.USAGE
    assert "YYYY-MM-DD" in capsys.readouterr().err


# ------------------------------------------------------------------ 3: could not check


def one_line_error(err: str) -> str:
    [line] = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    return line


@pytest.mark.parametrize(
    "command", [["audit"], ["verify", "x.raw"], ["reconcile"], ["restore", "x.raw", "d"]]
)
def test_a_missing_mongo_connection_is_one_line_naming_it(command, aws_conn, monkeypatch, capsys) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_KRAKEN_MONGO_DEFAULT", raising=False)

    assert main(command) == ExitCode.UNAVAILABLE

    line = one_line_error(capsys.readouterr().err)
    assert "'kraken_mongo_default' (--mongo-conn-id) is not defined" in line
    assert "AIRFLOW_CONN_KRAKEN_MONGO_DEFAULT=" in line and "--conn-type kraken_mongo" in line


def test_a_misspelled_mongo_connection_is_named(aws_conn, kraken_mongo, capsys) -> None:
    assert main(["audit", "--mongo-conn-id", "kraken_mogno"]) == ExitCode.UNAVAILABLE
    line = one_line_error(capsys.readouterr().err)
    assert "'kraken_mogno' (--mongo-conn-id) is not defined" in line and "AIRFLOW_CONN_KRAKEN_MOGNO=" in line


def test_a_misspelled_aws_connection_is_an_error_not_default_credentials(backed_up, capsys) -> None:
    """The Amazon provider would go on with boto3's default credentials; the audit would answer OK."""
    backed_up("m.raw", {"m.raw": 100})
    capsys.readouterr()

    assert main(["audit", "--aws-conn-id", "aws_defualt"]) == ExitCode.UNAVAILABLE

    captured = capsys.readouterr()
    line = one_line_error(captured.err)
    assert "'aws_defualt' (--aws-conn-id) is not defined" in line and '"conn_type": "aws"' in line
    assert "audited" not in captured.out


def test_an_unknown_raw_file(aws_conn, kraken_mongo, capsys) -> None:
    assert main(["verify", "never-acquired.raw"]) == ExitCode.UNAVAILABLE
    assert "never-acquired.raw" in capsys.readouterr().err


def unreachable_s3(monkeypatch) -> None:
    """``aws_default`` pointing at a port nothing listens on, asked once (no retries to wait for)."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection_json(endpoint, retries={"max_attempts": 1}))


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_audit_against_an_unreachable_endpoint(backed_up, monkeypatch, capsys) -> None:
    backed_up("u.raw", {"u.raw": 100})
    unreachable_s3(monkeypatch)
    capsys.readouterr()

    assert main(["audit"]) == ExitCode.UNAVAILABLE
    out = capsys.readouterr().out
    assert "NOT OK" in out and " — OK" not in out


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_reconcile_against_an_unreachable_endpoint_gives_one_verdict(
    kraken_mongo, monkeypatch, capsys
) -> None:
    unreachable_s3(monkeypatch)
    for bucket in ("p1", "p2", "p3"):
        insert_raw_file(f"{bucket}.raw", backup_status="upload_done", s3_bucket=f"kraken-{bucket}")

    assert main(["reconcile", "--bucket", "kraken-extra"]) == ExitCode.UNAVAILABLE

    out = capsys.readouterr().out
    assert "0 bucket(s)" not in out and "0 orphan(s)" not in out
    assert "NOT LISTED in any of the 4 bucket(s)" in out
    [problem] = [line for line in out.splitlines() if line.startswith("problem:")]
    assert "S3 could not be asked" in problem and "4 bucket(s) were not listed" in problem
    assert out.rstrip().endswith("NOT OK: 1 problem(s)")

    assert main(["reconcile", "--json"]) == ExitCode.UNAVAILABLE
    [report] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert report["buckets"] == [] and report["unlisted_buckets"] == ["kraken-p1", "kraken-p2", "kraken-p3"]


# ------------------------------------------------------------------ 4: archived objects


def test_deep_verify_of_an_archived_object_says_restore_it_first(backed_up, s3_client, capsys) -> None:
    backed_up("g.raw", {"g.raw": 2048})
    key = RawFile.objects.get(id="g.raw").s3_backup_key
    s3_client.copy_object(
        Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": key}, StorageClass="GLACIER"
    )
    capsys.readouterr()

    assert main(["verify", "g.raw", "--deep", "--json"]) == ExitCode.NEEDS_RESTORE


# ------------------------------------------------------------------ 5: nothing checked


def test_an_audit_that_matched_nothing_warns_and_fails_unless_allowed(backed_up, capsys) -> None:
    backed_up("n.raw", {"n.raw": 100})
    capsys.readouterr()

    assert main(["audit", "--project", "P9999"]) == ExitCode.NOTHING_CHECKED
    captured = capsys.readouterr()
    assert "audited 0 raw file(s)" in captured.out and "NOTHING CHECKED" in captured.out
    assert "warning: no upload_done raw file matched" in captured.err and "--allow-empty" in captured.err

    assert main(["audit", "--project", "P9999", "--allow-empty"]) == ExitCode.OK
    assert main(["audit", "--project", "P1234"]) == ExitCode.OK


def test_an_audit_of_an_empty_store(aws_conn, kraken_mongo, capsys) -> None:
    assert main(["audit", "--json"]) == ExitCode.NOTHING_CHECKED
    [summary] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert summary["kind"] == "summary" and summary["records"] == 0


# ------------------------------------------------------------------ etag: what could be read is kept


def test_etag_keeps_the_good_files_when_one_is_missing(make_file, tmp_path, capsys) -> None:
    good = make_file("good.raw", 6 * MIB)
    missing = tmp_path / "missing.raw"

    assert main(["etag", str(good), str(missing), "--part-size", "5"]) == ExitCode.UNAVAILABLE

    captured = capsys.readouterr()
    assert "good.raw" in captured.out and "-2__5" in captured.out
    assert f"cannot read {missing}" in captured.err

    assert main(["etag", str(missing), str(good), "--json"]) == ExitCode.UNAVAILABLE
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["path"] for line in lines] == [str(missing), str(good)]
    assert "error" in lines[0] and lines[1]["size"] == 6 * MIB
