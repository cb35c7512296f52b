"""The Celery lane: the provider under Airflow 3.3's CeleryExecutor with two workers, and what it survives.

Deployment (all on 127.0.0.1, free ports, a private work folder): Debian's ``redis-server`` as the broker
(append-only file), the MongoDB wire emulator (``scripts/mongo-server``) as alphakraken's MongoDB of record,
``moto_server`` as S3, Airflow's api-server, scheduler and dag-processor (SQLite metadata), and two Celery
workers as separate processes with their own hostnames, serving the upload queue
``kraken_queue_s3_uploader``; the upload task runs in the pool ``s3_upload_pool``, as alphakraken's does.

Three runs of the same 20 raw files (``seed.py``), each on fresh records and buckets:

1. one worker, 2. two workers: the wall time of each, for the README;
3. two workers and three faults: ``kill -9`` of the worker (and its task runner's process group) that is in
   the middle of the large file's multipart upload, caught from the RawFile's ``s3_uploads`` entry and the
   parts S3 lists; Redis restarted while runs are being queued; the wire server restarted while uploads
   run. The killed task's retry must run on the other worker, take the lease over once it expired, resume
   (reuse every part S3 holds, send only the rest) and end DONE; the others' retries finish the job.

After every run, ``checks.py`` reads S3 and MongoDB. Exit 0 only if every check passed; everything started
is stopped, also on failure or SIGTERM. Run it with ``scripts/celery-lane`` (``--keep`` keeps the work folder).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services import REPO, AirflowApi, Redis, Service, WireServer, free_port, say, wait_for

DAG_ID = "s3_uploader"
TASK_ID = "upload_to_s3"
LANE_DIR = Path(__file__).resolve().parent
POOL_SLOTS = 4  # two uploads per worker; alphakraken runs ~2 per uploader
WORKER_CONCURRENCY = 2
LEASE_TTL = 30  # seconds; production keeps the 10-minute default
HEARTBEAT_TIMEOUT = 30  # seconds without a task heartbeat before the scheduler fails the task (default 300)
ACCESS_KEY, SECRET_KEY = "lane-access", "lane-secret-key-not-a-real-one"


@dataclass
class Deployment:
    """Every process of the lane, started in order and stopped in reverse."""

    work: Path
    stack: ExitStack = field(default_factory=ExitStack)
    workers: dict[str, Service] = field(default_factory=dict)
    core: list[Service] = field(default_factory=list)  # api-server, scheduler, dag-processor

    def __post_init__(self) -> None:
        self.home = self.work / "airflow"
        os.environ["AIRFLOW_HOME"] = str(self.home)  # before anything here imports Airflow
        self.logs = self.work / "logs"
        self.api_port = free_port()
        self.api = AirflowApi(self.api_port)
        self.redis = Redis(self.work)
        self.wire = WireServer(self.work)

    def start(self) -> None:
        sys.path.insert(0, str(REPO))  # kraken_standins: at the repository root
        from kraken_standins.s3 import MotoServer

        self.redis.start()
        self.stack.callback(self.redis.stop)
        self.wire.start()
        self.stack.callback(self.wire.stop)
        self.s3_url = self.stack.enter_context(MotoServer.start()).url
        say(f"redis {self.redis.url}, wire server {self.wire.uri}, S3 {self.s3_url}")
        os.environ.update(self._airflow_env())
        self._airflow("db-migrate", ["db", "migrate"]).process.wait()  # type: ignore[union-attr]
        # Write-ahead logging: readers no longer block the writer (the mode is stored in the file).
        with contextlib.closing(sqlite3.connect(self.home / "airflow.db")) as db:
            db.execute("PRAGMA journal_mode=WAL")
        for name, argv in (
            ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "-w", "1"]),
            ("scheduler", ["scheduler", "--skip-serve-logs"]),
            ("dag-processor", ["dag-processor"]),
        ):
            service = self._airflow(name, argv)
            self.core.append(service)
            self.stack.callback(service.stop)
        wait_for(
            "DAG s3_uploader parsed and served by the API",
            lambda: self.api.get(f"/api/v2/dags/{DAG_ID}"),
            180,
        )
        self.api.call(
            "POST",
            "/api/v2/pools",
            {"name": "s3_upload_pool", "slots": POOL_SLOTS, "description": "S3 uploads (as alphakraken)"},
        )

    def _airflow_env(self) -> dict[str, str]:
        return {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            # SQLite as the metadata DB keeps the lane small; under load its default 5 s lock wait is too short
            # for four writers (api-server, scheduler, dag-processor, and the lane's triggers).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}?timeout=60",
            "AIRFLOW__CORE__DAGS_FOLDER": str(LANE_DIR / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "lane_hostname.hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__CELERY__BROKER_URL": f"{self.redis.url}/0",
            # Task states go back through a database, as in Airflow's docker-compose (and alphakraken's): with
            # Redis also as the result backend, a Redis outage ends Airflow 3.3's scheduler loop (seen here).
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+sqlite:///{self.work / 'celery-results.db'}?timeout=60",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            "PYTHONPATH": str(LANE_DIR),
            "KRAKEN_LANE_LEASE_TTL": str(LEASE_TTL),
            "KRAKEN_LANE_RETRY_DELAY": "10",
            "KRAKEN_LANE_RETRIES": "8",
            "AIRFLOW_CONN_KRAKEN_MONGO_DEFAULT": json.dumps(
                {
                    "conn_type": "kraken_mongo",
                    # Fail fast when the server is away (pymongo waits 30 s by default); the task is retried.
                    "host": f"{self.wire.uri}&serverSelectionTimeoutMS=5000",
                    "schema": "alphakraken",
                }
            ),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                {
                    "conn_type": "aws",
                    "login": ACCESS_KEY,
                    "password": SECRET_KEY,
                    "extra": {"endpoint_url": self.s3_url, "region_name": "us-east-1"},
                }
            ),
        }

    def s3_client(self) -> Any:
        """boto3 S3 client of the lane's moto_server, for the checks."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def _airflow(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Service:
        airflow = str(Path(sys.executable).parent / "airflow")
        return Service(name, [airflow, *argv], self.logs / f"{name}.log", env or {}).start()

    def start_worker(self, hostname: str) -> Service:
        """A Celery worker serving the upload queue, naming itself ``hostname`` (Celery and Airflow)."""
        worker = self._airflow(
            hostname,
            [
                "celery",
                "worker",
                "--queues",
                "kraken_queue_s3_uploader",
                "--celery-hostname",
                f"{hostname}@lane",
                "--skip-serve-logs",
                "--pid",
                str(self.work / f"{hostname}.pid"),
            ],
            env={"KRAKEN_LANE_HOSTNAME": hostname},
        )
        wait_for(f"{hostname} ready", lambda: worker.check_alive() and worker.log_has(" ready."), 120)
        self.workers[hostname] = worker
        return worker

    def wait(self, what: str, ready: Callable[[], Any], timeout: float, poll: float = 1.0) -> Any:
        """``wait_for`` that fails at once, with the log's tail, if an Airflow component or worker exited."""

        def guarded() -> Any:
            for service in [*self.core, *self.workers.values()]:
                service.check_alive()
            return ready()

        return wait_for(what, guarded, timeout, poll)

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        self.stack.close()

    # ----------------------------------------------------------------- runs

    def trigger(self, run_id: str, raw_file_id: str, bucket_prefix: str) -> None:
        self.api.call(
            "POST",
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            {
                "dag_run_id": run_id,
                "logical_date": None,
                "conf": {"raw_file_id": raw_file_id, "bucket_prefix": bucket_prefix},
            },
        )

    def task(self, run_id: str) -> dict[str, Any]:
        return self.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK_ID}") or {}

    def run(self, run_id: str) -> dict[str, Any]:
        return self.api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}") or {}

    def task_log(self, run_id: str, attempt: int) -> list[str]:
        """The provider's messages in one attempt's task log (Airflow 3 writes JSON lines)."""
        path = self.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={TASK_ID}"
        path = path / f"attempt={attempt}.log"
        if not path.exists():
            return []
        events = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                events.append(str(json.loads(line).get("event", "")))
            except ValueError:
                events.append(line)
        return events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    parser.add_argument("--faults-only", action="store_true", help="skip the two timed runs")
    options = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop everything on the way out
    work = Path(tempfile.mkdtemp(prefix="kraken-celery-lane-"))
    deployment = Deployment(work)
    try:
        from runs import run_all

        return run_all(deployment, faults_only=options.faults_only)
    finally:
        deployment.stop()
        if options.keep:
            say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
