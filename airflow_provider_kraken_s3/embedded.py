"""Embedded stand-ins for the demo and the tests: a real moto S3 server process on loopback.

Not used in production. Needs the ``test`` extra (``moto[server]``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MotoServer:
    """A ``moto_server`` process: S3 over real HTTP, in its own process (it does not share our GIL)."""

    url: str
    port: int
    process: subprocess.Popen[bytes]

    @classmethod
    @contextmanager
    def start(cls, extra_env: dict[str, str] | None = None, timeout: float = 60.0) -> Iterator[MotoServer]:
        port = free_port()
        env = {
            **os.environ,
            # Allow MB-sized parts so tests can exercise multipart uploads with small files.
            "S3_UPLOAD_PART_MIN_SIZE": "256",
            **(extra_env or {}),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = cls(url=f"http://127.0.0.1:{port}", port=port, process=process)
        try:
            server._wait_ready(timeout)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto_server did not answer on {self.url} within {timeout} s")


def airflow_dags_test(dag_id: str, conf: dict[str, object]) -> None:
    """Run ``airflow dags test DAG_ID --conf JSON`` in this process, through Airflow's own CLI code.

    In-process on purpose: the embedded MongoDB (mongomock) lives in this process's memory, so the demo and
    the tests can read the RawFile documents the run wrote. Airflow runs every task of ``dags test`` in
    the calling process on 2.11 and 3.x alike. Needs ``AIRFLOW_HOME`` with a migrated database and
    ``AIRFLOW__CORE__DAGS_FOLDER`` set before Airflow is imported. Raises ``SystemExit`` if the run failed.
    """
    import json

    from airflow.cli.cli_parser import get_parser

    args = get_parser().parse_args(["dags", "test", dag_id, "--conf", json.dumps(conf)])
    args.func(args)


def migrate_airflow_db(env: dict[str, str] | None = None) -> None:
    """``airflow db migrate`` for the current ``AIRFLOW_HOME`` (a separate process, as an operator would)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **(env or {})},
        check=True,
        stdout=subprocess.DEVNULL,
    )
