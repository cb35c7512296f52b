"""scripts/demo.py shows the provider's lines while a DAG runs, not only after it (the follower, on a log
file written line by line as Airflow 2 and 3 write them)."""

from __future__ import annotations

import importlib.util
import os
import select
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("kraken_demo", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["kraken_demo"] = module  # dataclasses and annotations look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["kraken_demo"]


def shown(read_fd: int) -> str:
    """What the follower wrote to the terminal next; fails (instead of hanging) if nothing comes."""
    ready, _, _ = select.select([read_fd], [], [], 60)
    assert ready, "the follower showed nothing within a minute"
    return os.read(read_fd, 65536).decode()


def test_the_providers_lines_are_shown_as_they_are_logged(demo, tmp_path) -> None:
    log = tmp_path / "airflow.log"
    log.write_text("[2026-01-01T00:00:00.000+0000] {dag.py:1} INFO - before this run: not shown\n")
    read_fd, write_fd = os.pipe()
    af3 = "2026-12-02T14:13:21.044523Z [info     ] {} [airflow.task.operators.x] loc=backup.py:1\n"
    af2 = "[2026-12-02T14:13:21.043+0000] {{backup.py:1}} INFO - {}\n"
    try:
        with log.open("a") as airflow, demo.LogFollower(log, write_fd, poll_seconds=0.01) as follower:
            airflow.write(af3.format("backup start raw_file=x.raw files=1"))
            airflow.flush()
            assert shown(read_fd) == "    backup start raw_file=x.raw files=1\n"  # while the run goes on

            airflow.write(af2.format("some other Airflow line"))
            airflow.write(af2.format("progress file=x.raw done_mib=16.00 pct=50.00"))
            airflow.write(af2.format("progress file=x.raw done_mib=16.00 pct=50.00"))  # Airflow 2: twice
            airflow.flush()
            assert shown(read_fd) == "    progress file=x.raw done_mib=16.00 pct=50.00\n"

            airflow.write(af3.format("backup summary raw_file=x.raw bytes_uploaded=10"))  # the last line
            airflow.flush()
        assert shown(read_fd) == "    backup summary raw_file=x.raw bytes_uploaded=10\n"
    finally:
        os.close(read_fd)
        os.close(write_fd)
    assert follower.steward_lines == [
        "backup start raw_file=x.raw files=1",
        "backup summary raw_file=x.raw bytes_uploaded=10",
    ]
