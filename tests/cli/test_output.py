"""What ``kraken-s3`` shows a person: hashes whole on an 80-column terminal, a ``.d`` folder hashed file by
file, progress in one unit, and no Airflow chatter on stderr without ``-v``."""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys

import pytest
from rich.progress import Progress

from airflow_provider_kraken_s3.cli import output
from airflow_provider_kraken_s3.cli.main import main
from airflow_provider_kraken_s3.cli.output import ExitCode, MiBColumn, MiBSpeedColumn, Output
from airflow_provider_kraken_s3.core.parts import MIB
from kraken_standins import mongo as standin_mongo
from tests.cli.test_cli import multipart_etag
from tests.conftest import random_bytes
from tests.dag_runner import REPO_ROOT

_WITH_STANDIN = (
    "import sys; sys.argv[0] = 'kraken-s3'; from kraken_standins.mongo import install; install(); "
    "from airflow_provider_kraken_s3.cli.main import main; raise SystemExit(main())"
)


class Terminal(io.StringIO):
    """A terminal's stdout, for rich: it asks ``isatty()`` and then the width (``COLUMNS``)."""

    def isatty(self) -> bool:
        return True


def terminal_80(monkeypatch) -> Terminal:
    """From here on, stdout is an 80-column terminal (set in the test: pytest sets its own before each)."""
    monkeypatch.setenv("COLUMNS", "80")
    screen = Terminal()
    monkeypatch.setattr(sys, "stdout", screen)
    return screen


def test_etag_hashes_stay_whole_on_an_80_column_terminal(make_file, monkeypatch) -> None:
    path = make_file("20240101_astral1_P1234_a_rather_long_sample_name_S1-A1.raw", 11 * MIB)
    data = path.read_bytes()
    screen = terminal_80(monkeypatch)

    assert main(["etag", str(path), "--part-size", "5", "--no-progress"]) == ExitCode.OK

    lines = [line.rstrip() for line in screen.getvalue().splitlines()]
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    for value in (
        hashlib.md5(data).hexdigest(),
        multipart_etag(data, 5 * MIB),
        f"{multipart_etag(data, 5 * MIB)}__5",
    ):
        assert any(re.search(rf"\s{re.escape(value)}$", line) for line in lines), (value, lines)


def test_verify_table_keeps_etags_whole(monkeypatch) -> None:
    screen = terminal_80(monkeypatch)
    etag = "0123456789abcdef0123456789abcdef-12"
    out = Output(as_json=False, progress=False)
    rows = [(f"astral1/2024_01/{'x' * 60}.d/analysis.tdf_bin", "1,000,000,000", etag)]
    out.table("s.d: verified", ("key", "bytes", "ETag"), rows, whole=("ETag",))
    assert etag in screen.getvalue()


def test_etag_of_a_bruker_folder_hashes_every_file_in_it(tmp_path, capsys) -> None:
    folder = tmp_path / "run.d"
    sizes = {"analysis.tdf": 3000, "analysis.tdf_bin": 6 * MIB + 1, "method.m/submethods.xml": 10, "empty": 0}
    for seed, (relative, size) in enumerate(sizes.items()):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(random_bytes(size, seed))

    assert main(["etag", str(folder), "--part-size", "5", "--json"]) == ExitCode.OK

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["path"] for line in lines] == [str(folder / relative) for relative in sorted(sizes)]
    for line in lines:
        data = (tmp_path / line["path"]).read_bytes()
        assert line["size"] == len(data) and line["etag"] == multipart_etag(data, 5 * MIB)

    assert main(["etag", str(folder)]) == ExitCode.OK
    shown = capsys.readouterr().out
    for relative in sizes:  # named as alphakraken's inventory names them
        assert f"run.d/{relative}" in shown


def test_etag_of_an_empty_folder(tmp_path, capsys) -> None:
    (tmp_path / "empty.d").mkdir()
    assert main(["etag", str(tmp_path / "empty.d")]) == ExitCode.UNAVAILABLE
    assert "without files" in capsys.readouterr().err


def test_progress_shows_bytes_and_speed_in_mib() -> None:
    progress = Progress()
    task_id = progress.add_task("hashing", total=10 * MIB)
    progress.update(task_id, completed=3 * MIB)
    [task] = progress.tasks
    task.finished_speed = 2.5 * MIB
    assert MiBColumn().render(task).plain == "3.0/10.0 MiB"
    assert MiBSpeedColumn().render(task).plain == "2.5 MiB/s"
    for column in (MiBColumn, MiBSpeedColumn):
        assert column in {type(c) for c in _byte_progress_columns()}


def _byte_progress_columns() -> list[object]:
    """The columns :meth:`Output.bytes_progress` puts on a terminal."""
    seen: list[object] = []
    real = output.Progress

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, *columns: object, **kwargs: object) -> None:
            seen.extend(columns)
            super().__init__(*columns, **kwargs)

    out = Output(as_json=False, progress=True)
    out.show_progress = True
    output.Progress = Spy
    try:
        with out.bytes_progress("x", 1) as advance:
            advance(1)
    finally:
        output.Progress = real
    return seen


@pytest.mark.slow
def test_no_airflow_lines_on_stderr_without_verbose(moto_server, tmp_path) -> None:
    """The console script as a person runs it: a misspelled connection is one line, and an empty audit
    one warning; Airflow's logging and deprecation warnings (2.11) are not shown unless ``-v``."""
    env = {
        "PATH": "/usr/bin:/bin",
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "AIRFLOW_CONN_KRAKEN_MONGO_DEFAULT": json.dumps(standin_mongo.connection("k")),
        "PYTHONPATH": str(REPO_ROOT),
    }
    # The console script's own entry point, in a process that first installs the in-memory MongoDB stand-in
    # behind the mongomock:// connection (as a deployment would point it at a MongoDB server).
    script = [sys.executable, "-c", _WITH_STANDIN]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*script, *args], capture_output=True, text=True, env=env, check=False)

    missing = run("audit", "--aws-conn-id", "nope")
    assert missing.returncode == ExitCode.UNAVAILABLE
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()], missing.stderr
    assert missing.stderr.startswith("error: Airflow connection 'nope' (--aws-conn-id) is not defined")

    env["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
        {"conn_type": "aws", "login": "t", "password": "t", "extra": {"endpoint_url": moto_server.url}}
    )
    empty = run("audit")
    assert empty.returncode == ExitCode.NOTHING_CHECKED
    ours = [
        line
        for line in empty.stderr.splitlines()
        if "kraken_mongo points at an in-memory MongoDB stand-in" not in line
    ]
    assert ours == [line for line in ours if line.startswith("warning: no upload_done")], empty.stderr
    verbose = run("audit", "-v")
    assert "audit summary" in verbose.stderr  # the services' INFO lines, and Airflow's, with -v
