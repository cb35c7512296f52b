"""The example DAGs under Airflow's real scheduler: ``scripts/demo --scheduler``.

Where ``scripts/demo`` runs each DAG with ``airflow dags test`` in one process, this starts what a deployment
runs, each component a process of its own, all on 127.0.0.1: the MongoDB wire emulator
(``scripts/mongo-server``, standing in for alphakraken's MongoDB), moto_server (S3), and Airflow's api-server,
scheduler (LocalExecutor: every task in its own process), dag-processor and triggerer, without their log
servers (the api-server reads the task logs from the files the tasks wrote). It writes a Bruker ``.d``
folder and a Thermo ``.raw`` into an instrument folder, as an acquisition leaves them, then triggers through
the REST API, as the UI does: ``acquisition_handler`` for each (which registers the RawFile, inventories,
copies and uploads), then ``verified_cleanup`` (deletes the instrument copies once S3 is verified) and
``backup_audit``. It waits for every run, reads the task logs back through the API (what the UI shows),
prints what a data steward reads, and compares every object in S3 with the instrument's bytes.

Exit status 0 only if every run succeeded, the provider's lines are in the task logs, and S3 holds exactly
the instrument's bytes. Everything it started is stopped on the way out (also on Ctrl-C or a failure).
``--keep`` leaves the services running (UI included) until Ctrl-C, and keeps the work folder. Airflow 3.x
only: 2.11's LocalExecutor needs PostgreSQL.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import datetime
from pathlib import Path

from demo import (
    ACCESS_KEY,
    BUCKET_PREFIX,
    PART_SIZE_MIB,
    PROJECT,
    REPO,
    SECRET_KEY,
    STEWARD_LINES,
    generate_data,
    report,
    step,
)

#: The steward's account in the UI (Airflow's simple auth manager generates its password).
UI_USER = "steward"
#: A run that takes longer than this has failed, whatever Airflow still thinks.
RUN_TIMEOUT = 20 * 60
#: Lines each upload's task log must carry: progress, the upload and backup summaries, the link to S3.
REQUIRED_UPLOAD_LINES = ("progress ", "upload summary", "backup summary", "S3 backup:")
#: Besides the upload's (STEWARD_LINES): what the sensor, the cleanup, the reconcile, the audit and the deep
#: verification say in one line each.
MORE_STEWARD_LINES = (
    "verified ",
    "not verified yet",
    "deleted ",
    "reconcile summary",
    "audit summary",
    "deep verify summary",
    "deep-verified ",
)
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def run_scheduler_demo(keep: bool) -> int:
    from importlib.metadata import version

    from kraken_standins.s3 import MotoServer, free_port

    if int(version("apache-airflow").split(".")[0]) < 3:
        print(
            "scripts/demo --scheduler needs Airflow 3 (2.11's LocalExecutor refuses SQLite)", file=sys.stderr
        )
        return 2
    work = Path(tempfile.mkdtemp(prefix="kraken-scheduler-demo-"))
    started = time.monotonic()
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the finally blocks stop what was started.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with ExitStack() as stack:
            step("1. MongoDB wire emulator, S3 (moto_server), Airflow's components, all on 127.0.0.1")
            mongo_uri = stack.enter_context(mongo_wire_server(work / "mongo"))
            s3_server = stack.enter_context(MotoServer.start())
            port = free_port()
            env = airflow_env(work, port, mongo_uri, s3_server.url)
            os.environ.update(env)  # this process reads the same connections (RawFile report, S3 client)
            subprocess.run([airflow(), "db", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
            logs = work / "components"
            stack.enter_context(airflow_components(env, port, logs))
            api = stack.enter_context(Api.login(f"http://127.0.0.1:{port}", work / "airflow"))
            print(f"MongoDB {mongo_uri} (wire emulator, database alphakraken); S3 {s3_server.url}")
            print(f"Airflow UI http://127.0.0.1:{port}  user {UI_USER}  password {api.password}")
            print(f"components' own output: {logs}")
            ok = demo_runs(api, work)
            print(f"\nscheduler demo {'passed' if ok else 'FAILED'} in {time.monotonic() - started:.0f} s")
            if keep:
                print(f"--keep: services running, UI at http://127.0.0.1:{port}; Ctrl-C stops everything")
                with suppress(KeyboardInterrupt):
                    signal.pause()
            return 0 if ok else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopped everything the demo started", file=sys.stderr)
        return 130
    finally:
        if keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def demo_runs(api: Api, work: Path) -> bool:
    """Seed, trigger, wait, read the logs back, check S3; True when all of it holds."""
    import boto3

    step("2. instrument data, as an acquisition leaves it")
    instrument_dir = work / "instrument" / "Data"
    raw_files = generate_data(instrument_dir)
    s3 = boto3.client(
        "s3",
        endpoint_url=json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])["extra"]["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    bucket = f"{BUCKET_PREFIX}-{PROJECT.lower()}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    api.wait_for_dags(["acquisition_handler", "verified_cleanup", "backup_audit"])
    ok = True

    step("3. acquisition_handler, one run per raw file (both at once, each task in its own process)")
    runs = {
        raw_file_id: api.trigger(
            "acquisition_handler",
            {
                "raw_file_id": raw_file_id,
                "project_id": PROJECT,
                "instrument_id": "timstof1" if raw_file_id.endswith(".d") else "astral1",
                "instrument_dir": str(instrument_dir),
                "backup_dir": str(work / "backup"),
                "bucket_prefix": BUCKET_PREFIX,
                "part_size_mib": PART_SIZE_MIB,
            },
        )
        for raw_file_id in raw_files
    }
    for raw_file_id, run_id in runs.items():
        ok &= api.wait_and_show("acquisition_handler", run_id)
        lines = api.task_log_lines("acquisition_handler", run_id, "upload_to_s3")
        missing = [marker for marker in REQUIRED_UPLOAD_LINES if not any(marker in line for line in lines)]
        if missing:
            print(f"  the upload_to_s3 log of {raw_file_id} lacks {missing}")
            ok = False
    identical = s3_equals_instrument(s3, raw_files, instrument_dir)
    report(s3, bucket, raw_files, work / "report.log")

    step("4. verified_cleanup: delete the instrument copies whose S3 backup is verified")
    run_id = api.trigger(
        "verified_cleanup",
        {"raw_file_ids": raw_files, "instrument_base_path": str(instrument_dir), "dry_run": False},
    )
    ok &= api.wait_and_show("verified_cleanup", run_id)
    left = [raw_file_id for raw_file_id in raw_files if (instrument_dir / raw_file_id).exists()]
    print(f"  instrument copies left: {left or 'none'}")
    ok &= not left

    step("5. backup_audit: reconcile, audit against S3, deep-verify (download and hash)")
    run_id = api.trigger("backup_audit", {"deep_verify": "always"})
    ok &= api.wait_and_show("backup_audit", run_id)

    step("done")
    print(f"S3 holds the instrument's bytes for {', '.join(raw_files)}: {'yes' if identical else 'NO'}")
    return ok and identical


def s3_equals_instrument(s3, raw_files: list[str], instrument_dir: Path) -> bool:
    """Every file of every raw file is in S3 where its RawFile says, with the instrument's bytes (SHA-256)."""
    from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook
    from airflow_provider_kraken_s3.records.models import RawFile

    KrakenMongoHook().connect()
    same = checked = 0
    for raw_file_id in raw_files:
        raw = RawFile.objects.get(id=raw_file_id)
        bucket, _, prefix = (raw.s3_upload_path or "s3://").removeprefix("s3://").partition("/")
        for relative in raw.file_info:
            checked += 1
            local, remote = hashlib.sha256(), hashlib.sha256()
            with open(instrument_dir / relative, "rb") as handle:
                while block := handle.read(8 * 2**20):
                    local.update(block)
            try:
                body = s3.get_object(Bucket=bucket, Key=prefix + relative)["Body"]
            except s3.exceptions.NoSuchKey:
                print(f"  MISSING in S3: s3://{bucket}/{prefix}{relative}")
                continue
            for block in body.iter_chunks(8 * 2**20):
                remote.update(block)
            if local.digest() == remote.digest():
                same += 1
            else:
                print(f"  DIFFERENT in S3: s3://{bucket}/{prefix}{relative}")
    print(f"\n{same} of {checked} objects in S3 are byte-identical to the instrument's files (SHA-256)")
    return checked > 0 and same == checked


class Api:
    """Airflow's REST API as the UI uses it: a token from the simple auth manager, then /api/v2."""

    def __init__(self, url: str, password: str, token: str) -> None:
        import httpx

        self.url, self.password = url, password
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)

    @classmethod
    @contextmanager
    def login(cls, url: str, airflow_home: Path) -> Iterator[Api]:
        import httpx

        passwords = airflow_home / "simple_auth_manager_passwords.json.generated"
        password = json.loads(passwords.read_text())[UI_USER]
        answer = httpx.post(f"{url}/auth/token", json={"username": UI_USER, "password": password}, timeout=60)
        answer.raise_for_status()
        api = cls(url, password, answer.json()["access_token"])
        try:
            yield api
        finally:
            api.http.close()

    def wait_for_dags(self, dag_ids: list[str]) -> None:
        """Until the dag-processor has parsed them (the scheduler knows a DAG only after that)."""
        deadline = time.monotonic() + 300
        for dag_id in dag_ids:
            while self.http.get(f"/api/v2/dags/{dag_id}").status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"DAG {dag_id} was not parsed within 5 minutes")
                time.sleep(1)
            # Unpausing backup_audit also starts its latest nightly run (catchup=False): an early audit of
            # an empty archive, before the one triggered below.
            self.http.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, dag_id: str, conf: dict[str, object]) -> str:
        answer = self.http.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        answer.raise_for_status()
        return answer.json()["dag_run_id"]

    def wait_and_show(self, dag_id: str, run_id: str) -> bool:
        """Wait for the run to end; print its tasks' states and the steward's lines of their logs."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while (run := self.http.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json())["state"] not in (
            "success",
            "failed",
        ):
            if time.monotonic() > deadline:
                run["state"] = f"still {run['state']} after {RUN_TIMEOUT} s"
                break
            time.sleep(2)
        took = ""
        if run.get("start_date") and run.get("end_date"):
            seconds = datetime.fromisoformat(run["end_date"]) - datetime.fromisoformat(run["start_date"])
            took = f" in {seconds.total_seconds():.0f} s"
        print(f"{dag_id} {run_id}: {run['state']}{took}")
        for task in self.task_instances(dag_id, run_id):
            label = task["task_id"] + (f"[{task['map_index']}]" if task["map_index"] >= 0 else "")
            print(f"  {label}: {task['state']}")
            for line in self.task_log_lines(dag_id, run_id, task["task_id"], task["map_index"]):
                if line.startswith(STEWARD_LINES + MORE_STEWARD_LINES):
                    print(f"      {line}")
        return run["state"] == "success"

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        answer = self.http.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        answer.raise_for_status()
        return sorted(answer.json()["task_instances"], key=lambda t: (t["start_date"] or "", t["map_index"]))

    def task_log_lines(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[str]:
        """The messages of a task's last try, as the UI's log view gets them."""
        tries = [
            t
            for t in self.task_instances(dag_id, run_id)
            if (t["task_id"], t["map_index"]) == (task_id, map_index)
        ]
        if not tries or not tries[0]["try_number"]:
            return []
        answer = self.http.get(
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{tries[0]['try_number']}",
            params={"map_index": map_index, "full_content": True},
            headers={"Accept": "application/json"},
        )
        answer.raise_for_status()
        return [entry["event"] for entry in answer.json()["content"] if isinstance(entry, dict)]


def airflow() -> str:
    return str(Path(sys.executable).parent / "airflow")


def airflow_env(work: Path, port: int, mongo_uri: str, s3_url: str) -> dict[str, str]:
    """One configuration for every component and every task: loopback only, LocalExecutor, SQLite metadata."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    return {
        **base,
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",  # the LocalExecutor's worker processes; 2 cores here
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",  # unpaused by the demo, after parsing
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{UI_USER}:admin",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
        "AIRFLOW_CONN_KRAKEN_MONGO_DEFAULT": json.dumps(
            {"conn_type": "kraken_mongo", "host": mongo_uri, "schema": "alphakraken"}
        ),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": ACCESS_KEY,
                "password": SECRET_KEY,
                "extra": {"endpoint_url": s3_url, "region_name": "us-east-1"},
            }
        ),
    }


@contextmanager
def mongo_wire_server(state: Path) -> Iterator[str]:
    """``scripts/mongo-server`` with a state folder of the demo's own; yields the URI."""
    env = {**os.environ, "KRAKEN_MONGO_DIR": str(state)}
    command = [str(REPO / "scripts" / "mongo-server")]
    started = subprocess.run([*command, "start"], env=env, capture_output=True, text=True)
    if started.returncode != 0:
        subprocess.run([*command, "stop"], env=env, check=False, capture_output=True)
        raise RuntimeError(f"scripts/mongo-server start failed ({started.returncode}):\n{started.stderr}")
    uri = started.stdout.strip()
    try:
        yield uri
    finally:
        subprocess.run([*command, "stop"], env=env, check=False, capture_output=True)


@contextmanager
def airflow_components(env: dict[str, str], port: int, logs: Path) -> Iterator[None]:
    """Start api-server, scheduler, dag-processor and triggerer; wait until the API says all are healthy."""
    import httpx
    import psutil

    logs.mkdir(parents=True, exist_ok=True)
    arguments = {
        "api-server": ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        "scheduler": ["--skip-serve-logs"],  # no log server: the api-server reads the task log files
        "dag-processor": [],
        "triggerer": ["--skip-serve-logs"],
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name in COMPONENTS:
            with open(logs / f"{name}.log", "wb") as output:
                processes.append(
                    subprocess.Popen(
                        [airflow(), name, *arguments[name]],
                        env=env,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
                    )
                )
        deadline = time.monotonic() + 180
        while True:
            for name, process in zip(COMPONENTS, processes, strict=True):
                if process.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited ({process.returncode}); see {logs / name}.log")
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5).json()
                if all(
                    (health.get(part) or {}).get("status") == "healthy"
                    for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
                ):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Airflow's components were not healthy within 180 s; see {logs}")
            time.sleep(1)
        yield
    finally:
        # Task runners may sit in process groups of their own: collect every descendant before stopping.
        descendants = [child for process in processes for child in _children(psutil, process.pid)]
        for process in processes:
            _signal_group(process, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        for child in descendants:
            with suppress(psutil.Error):  # already gone
                child.kill()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _children(psutil, pid: int) -> list:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signum)
