"""The Celery lane's processes: Redis, the MongoDB wire emulator, Airflow's components and Celery workers.

Every process is started in a session (process group) of its own on 127.0.0.1 and a free port, with its
output in a log file under the lane's work folder, and stopped by its process group: SIGTERM, then SIGKILL
after a grace period. Airflow 3.3 puts each task runner in a process group of its own, so stopping (or
killing) a worker also signals the groups of every process below it, found before the first signal.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[2]


def say(text: str) -> None:
    """One line of the lane's own output (flushed: CI prints it as it comes)."""
    print(text, flush=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, ready: Callable[[], Any], timeout: float, poll: float = 0.2) -> Any:
    """Poll ``ready`` until it returns something truthy (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(poll)


def process_groups(pid: int) -> set[int]:
    """Process groups of ``pid`` and of every process below it (each task runner has its own)."""
    groups: set[int] = set()
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for process in [root, *root.children(recursive=True)]:
            with contextlib.suppress(ProcessLookupError, psutil.NoSuchProcess):
                groups.add(os.getpgid(process.pid))
    return groups


def signal_groups(groups: set[int], signum: int) -> None:
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signum)


@dataclass
class Service:
    """One long-running process of the lane, in its own session, its output in ``log``."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_start: int = 0

    def start(self) -> Service:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log_start = self.log.stat().st_size if self.log.exists() else 0  # a restart appends
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=REPO,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_has(self, text: str) -> bool:
        """Whether this start's output (not a previous start's) contains ``text``."""
        if not self.log.exists():
            return False
        with self.log.open("rb") as log:
            log.seek(self.log_start)
            return text.encode() in log.read()

    def check_alive(self) -> bool:
        """True while running; raises with the log's tail once it has exited (so waits fail fast)."""
        if self.alive():
            return True
        tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
        raise RuntimeError(f"{self.name} exited (code {self.process and self.process.returncode}):\n{tail}")

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to its process groups (its own and its task runners'), SIGKILL after ``grace`` seconds."""
        if self.process is None:
            return
        groups = process_groups(self.pid) | {self.pid}
        signal_groups(groups, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(grace)
        signal_groups(groups | process_groups(self.pid), signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        self.process = None

    def kill_hard(self) -> set[int]:
        """``kill -9`` the process and every process group below it: a machine lost at once."""
        groups = process_groups(self.pid) | {self.pid}
        signal_groups(groups, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)
        self.process = None
        return groups


class Redis:
    """Debian's ``redis-server`` as the Celery broker: loopback, a free port, append-only file (a restart
    keeps the queued messages, as a broker with persistence does)."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.service = Service(
            "redis",
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--protected-mode",
                "yes",
            ],
            work / "logs" / "redis.log",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.service.start()
        wait_for("redis answers PING", self._pong, 30)

    def _pong(self) -> bool:
        self.service.check_alive()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: Redis writes its append-only file, so a start on the same port has the queues back."""
        self.service.stop()


class WireServer:
    """The MongoDB wire emulator (``scripts/mongo-server``, mongoeco) as alphakraken's MongoDB of record."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "mongo"
        self.port = 0
        self.uri = ""

    def _run(self, command: str) -> str:
        env = {**os.environ, "KRAKEN_MONGO_DIR": str(self.dir), "KRAKEN_MONGO_PORT": str(self.port)}
        done = subprocess.run(
            [str(REPO / "scripts" / "mongo-server"), command],
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    def start(self) -> None:
        """Start (a free port the first time, the same port afterwards, so clients reconnect)."""
        self.uri = self._run("start").splitlines()[-1]
        self.port = int(self.uri.split(":")[2].split("/")[0])

    def stop(self) -> None:
        self._run("stop")


class AirflowApi:
    """The few REST calls the lane makes (Airflow 3's public API; the simple auth manager with every user an
    admin, so no token is needed on this loopback-only deployment)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, tries: int = 5) -> Any:
        """One call; a 5xx answer (SQLite busy under load) is tried again, up to ``tries`` times."""
        request = urllib.request.Request(
            f"{self.base}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json"},
        )
        for attempt in range(1, tries + 1):
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return json.load(response)
            except urllib.error.HTTPError as error:
                if error.code < 500 or attempt == tries:
                    raise
                time.sleep(attempt)
        raise AssertionError("unreachable")

    def get(self, path: str) -> Any | None:
        """GET, or None when the answer is an error or there is none yet (not found, starting up)."""
        try:
            return self.call("GET", path)
        except (urllib.error.URLError, OSError, ValueError):
            return None
