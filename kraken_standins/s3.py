"""An embedded S3 for the demo and the tests: a real ``moto_server`` process on loopback.

Needs the ``test`` extra (``moto[server]``).
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
