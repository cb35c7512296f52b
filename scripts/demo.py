"""The demo: the acquisition DAG backing up two raw files to an embedded S3, with RawFiles in an embedded MongoDB.

Starts moto_server on loopback (S3 over real HTTP) and uses mongomock (``kraken_standins.mongo``) through the same
``mongoengine.connect`` path production uses; generates a Bruker-like ``.d`` folder (nested, ~175 MiB) and
a Thermo ``.raw``; runs ``airflow dags test acquisition_handler`` for each (Airflow's own CLI code, in this
process); prints what a data steward reads (the provider's log lines, the bucket listing, the RawFile
documents); then runs everything again to show that nothing is uploaded twice; and ends with the proof
that does not trust the uploader: ``kraken-s3 verify --deep`` downloads and hashes the ``.d`` folder's
objects, ``kraken-s3 restore`` brings them back into a scratch folder, compared byte for byte with the
instrument's. Airflow's own output goes to a log file whose path is printed.

Run it with ``scripts/demo`` (which installs the project first). Options: ``--keep`` keeps the work folder;
``--scheduler`` runs the example DAGs under Airflow's real scheduler instead (scripts/demo_scheduler.py).
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # kraken_standins (the embedded S3, Airflow's CLI) lives at the repository root
MIB = 2**20
PROJECT = "P1234"
BUCKET_PREFIX = "demo-lab"
PART_SIZE_MIB = 16  # small parts so the demo's files are multipart uploads, like 10–100 GB files are

BRUKER_FILES = {  # ~175 MiB in 10 files, nested like a timsTOF .d folder
    "analysis.tdf": 6 * MIB,
    "analysis.tdf_bin": 150 * MIB,
    "chromatography-data.sqlite": 3 * MIB,
    "SampleInfo.xml": 20_000,
    "Storage.mcf_idx": 2 * MIB,
    "Storage.mcf": 12 * MIB,
    "method.m/microTOFQImpacTemAcquisition.method": 150_000,
    "method.m/submethods.xml": 8_000,
    "method.m/hystar.method": 30_000,
    "calib/calibration.ini": 0,
}
THERMO_SIZE = 70 * MIB + 12_345

#: The demo's S3 credentials (AWS's documented example keys; moto accepts any). Long enough for Airflow to
#: mask the secret in its logs, as it would a real one.
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

#: The provider's log lines a data steward reads, shown as the DAG runs (the rest stays in the log file).
STEWARD_LINES = (
    "backup start",
    "upload summary",
    "already in S3",
    "RawFile ",
    "backup summary",
    "S3 backup:",
    "REPLACING",
    "backup of ",  # ... failed: why, and what happens next
)
#: Shown as they come too, so a minute of uploading is not a minute of silence; not kept for the summary.
PROGRESS_LINES = ("progress ",)
#: The message of a log line: Airflow 3 (structlog: ``time [level] message [logger] key=value``) or Airflow
#: 2 (logging: ``[time] {file.py:n} LEVEL - message``).
LOG_MESSAGE = re.compile(
    r"^(?:\S+ \[\w+\s*\] (?P<af3>.*?)(?: \[airflow\.task\.[^\]]*\].*)?|\[[^\]]+\] \{[^}]+\} \w+ - (?P<af2>.*))$"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the work folder (its path is printed)")
    parser.add_argument(
        "--scheduler",
        action="store_true",
        help="run the example DAGs under Airflow's real scheduler instead (see scripts/demo_scheduler.py); "
        "with --keep the services stay up until Ctrl-C",
    )
    options = parser.parse_args()
    if options.scheduler:
        from demo_scheduler import run_scheduler_demo

        return run_scheduler_demo(keep=options.keep)
    work = Path(tempfile.mkdtemp(prefix="kraken-demo-"))
    # Outside the work folder, so it outlives the demo for a look afterwards.
    airflow_log = Path(tempfile.mkstemp(prefix="kraken-demo-airflow-", suffix=".log")[1])
    _configure_airflow(work)
    try:
        return _run(work, airflow_log)
    finally:
        if options.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _configure_airflow(work: Path) -> None:
    """Airflow reads these at import time: a private home, our example DAGs, quiet startup."""
    from kraken_standins import mongo as standin_mongo

    # Said by Airflow's own imports about optional packages the demo does not use (graph rendering, the
    # test client of its in-process API): nothing a steward could act on.
    warnings.filterwarnings("ignore", message="Could not import graphviz")
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    os.environ.update(
        {
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
            "AIRFLOW__METRICS__TIMER_UNIT_CONSISTENCY": "True",  # Airflow 2.11 warns without it
            "AIRFLOW_CONN_KRAKEN_MONGO_DEFAULT": json.dumps(standin_mongo.connection("alphakraken")),
        }
    )


def _run(work: Path, airflow_log: Path) -> int:
    from kraken_standins import mongo as standin_mongo
    from kraken_standins.airflow_cli import migrate_airflow_db
    from kraken_standins.s3 import MotoServer

    standin_mongo.install()  # the in-memory MongoDB behind mongomock:// (the DAGs run in this process)

    step("1. embedded S3 (moto_server on loopback) and MongoDB (mongomock)")
    with MotoServer.start() as s3_server:
        os.environ["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(
            {
                "conn_type": "aws",
                "login": ACCESS_KEY,
                "password": SECRET_KEY,
                "extra": {"endpoint_url": s3_server.url, "region_name": "us-east-1"},
            }
        )
        print(f"S3 endpoint {s3_server.url}; MongoDB mongomock://localhost/alphakraken (in this process)")
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=s3_server.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )
        bucket = f"{BUCKET_PREFIX}-{PROJECT.lower()}"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        print(
            f"project bucket {bucket} created, versioned (the lab creates buckets ahead, as the design assumes)"
        )

        step("2. instrument data")
        instrument_dir = work / "instrument" / "Data"
        raw_files = generate_data(instrument_dir)
        print(f"Airflow's own log (scheduler-side INFO, task runner, DAG test): {airflow_log}")
        with airflow_output_to(airflow_log):
            migrate_airflow_db()

        for round_number in (1, 2):
            step(f"3.{round_number} airflow dags test acquisition_handler (round {round_number})")
            summaries: dict[str, dict[str, str]] = {}  # this round's `backup summary` fields, per raw file
            for raw_file_id in raw_files:
                lines = run_dag(raw_file_id, instrument_dir, work, airflow_log)
                summary = next((line for line in lines if line.startswith("backup summary ")), "")
                summaries[raw_file_id] = dict(re.findall(r"(\w+)=(\S+)", summary))
            report(s3, bucket, raw_files, airflow_log)

        round_trip_ok = prove_round_trip(raw_files[0], instrument_dir, work / "restored")
    step("done")
    print(f"Airflow's own log: {airflow_log}")
    missing = [raw_file_id for raw_file_id, summary in summaries.items() if "bytes_uploaded" not in summary]
    if missing:
        print(f"Round 2 did not back up {', '.join(missing)}: see the lines above and the Airflow log.")
        return 1
    uploaded = sum(int(summary["bytes_uploaded"]) for summary in summaries.values())
    skipped = sum(int(summary["files_skipped"]) for summary in summaries.values())
    files = sum(int(summary["files"]) for summary in summaries.values())
    print(f"Round 2 proved {skipped} of {files} objects from S3's ETags and uploaded {uploaded} bytes.")
    print(
        f"Deep verification and restore of {raw_files[0]}: {'byte-identical' if round_trip_ok else 'FAILED'}."
    )
    return 0 if uploaded == 0 and skipped == files and round_trip_ok else 1


def prove_round_trip(raw_file_id: str, instrument_dir: Path, destination: Path) -> bool:
    """``kraken-s3 verify --deep`` and ``kraken-s3 restore`` (in this process: the embedded MongoDB lives
    here), then compare the restored files with the instrument's, byte for byte."""
    from airflow_provider_kraken_s3.cli.main import main as kraken_s3

    step(f"4. proof after the fact: kraken-s3 verify {raw_file_id} --deep; kraken-s3 restore")
    verified = kraken_s3(["verify", raw_file_id, "--deep", "--no-progress"]) == 0
    restored = kraken_s3(["restore", raw_file_id, str(destination), "--no-progress"]) == 0
    files = sorted(path for path in destination.rglob("*") if path.is_file())
    same = [
        path
        for path in files
        if filecmp.cmp(path, instrument_dir / path.relative_to(destination), shallow=False)
    ]
    print(f"restored {len(files)} file(s) into {destination}; {len(same)} byte-identical to the instrument's")
    return verified and restored and bool(files) and len(same) == len(files)


def run_dag(raw_file_id: str, instrument_dir: Path, work: Path, airflow_log: Path) -> list[str]:
    """One ``airflow dags test acquisition_handler`` run, the provider's lines shown as they are logged;
    returns the lines a steward reads."""
    from kraken_standins.airflow_cli import airflow_dags_test

    print(f"{raw_file_id}: DAG run started", flush=True)
    started = time.monotonic()
    outcome = "success"
    with airflow_output_to(airflow_log) as terminal, LogFollower(airflow_log, terminal) as follower:
        try:
            airflow_dags_test(
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
        except SystemExit as error:  # Airflow's CLI says a failed run this way
            outcome = f"FAILED ({error})"
    print(f"{raw_file_id}: DAG run {outcome} in {time.monotonic() - started:.1f} s")
    return follower.steward_lines


class LogFollower:
    """Shows the provider's lines of a growing Airflow log on the terminal while the DAG runs.

    Airflow's output goes to the log file (see :func:`airflow_output_to`); a thread reads what is appended,
    picks the provider's messages (:data:`STEWARD_LINES`, :data:`PROGRESS_LINES`) and writes them to the
    terminal at once. On exit it reads the log to its end first, so no line of the run is missed.
    """

    def __init__(self, log_path: Path, terminal_fd: int, *, poll_seconds: float = 0.2) -> None:
        self._path = log_path
        self._offset = log_path.stat().st_size
        self._terminal = terminal_fd
        self._poll = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="demo-log-follower", daemon=True)
        #: This run's steward lines, once each (Airflow 2 writes every task log line twice).
        self.steward_lines: list[str] = []

    def __enter__(self) -> LogFollower:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        sys.stdout.flush()  # what the run printed and Python still holds: into the log, then read
        sys.stderr.flush()
        self._stop.set()
        self._thread.join()

    def _follow(self) -> None:
        shown: set[str] = set()
        pending = ""
        with self._path.open(encoding="utf-8", errors="replace") as log:
            log.seek(self._offset)
            while True:
                stopping = self._stop.is_set()  # then read once more: the run's last lines
                pending += log.read()
                *complete, pending = pending.split("\n")
                for line in complete:
                    match = LOG_MESSAGE.match(line.rstrip())
                    message = match and (match["af3"] or match["af2"])
                    if (
                        not message
                        or message in shown
                        or not message.startswith(STEWARD_LINES + PROGRESS_LINES)
                    ):
                        continue
                    shown.add(message)
                    if message.startswith(STEWARD_LINES):
                        self.steward_lines.append(message)
                    os.write(self._terminal, f"    {message}\n".encode())
                if stopping:
                    return
                self._stop.wait(self._poll)


@contextlib.contextmanager
def airflow_output_to(path: Path) -> Iterator[int]:
    """Send everything printed meanwhile to ``path``, at the file-descriptor level: Airflow's log handlers
    hold on to the streams they found, so swapping ``sys.stdout`` would not reach them. Yields a descriptor
    of the terminal's stdout, for what the person watching should see meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with path.open("ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield saved[0]
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def generate_data(instrument_dir: Path) -> list[str]:
    """A Bruker-like .d folder and a Thermo .raw of pseudo-random bytes."""
    rng = random.Random(2024)
    bruker = instrument_dir / "20240101_timstof1_P1234_demo_S1-A1.d"
    for relative, size in BRUKER_FILES.items():
        path = bruker / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    thermo = instrument_dir / "20240101_astral1_P1234_demo_S1-A2.raw"
    thermo.write_bytes(rng.randbytes(THERMO_SIZE))
    total = sum(BRUKER_FILES.values()) + THERMO_SIZE
    print(f"{bruker.name}: {len(BRUKER_FILES)} files; {thermo.name}; {total / MIB:.0f} MiB in all")
    return [bruker.name, thermo.name]


def report(s3, bucket: str, raw_file_ids: list[str], airflow_log: Path) -> None:
    """What is in S3 and what the RawFile documents say."""
    from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook
    from airflow_provider_kraken_s3.records.models import RawFile

    print(f"\ns3://{bucket}/  (object, size, ETag, versions)")
    versions = s3.list_object_versions(Bucket=bucket).get("Versions", [])
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        count = sum(v["Key"] == item["Key"] for v in versions)
        print(f"  {item['Key']:<70} {item['Size']:>11} {item['ETag'].strip(chr(34)):<38} v{count}")
    with airflow_output_to(airflow_log):  # its notice about the embedded MongoDB is for task logs
        KrakenMongoHook().connect()
    print("\nRawFile documents")
    for raw_file_id in raw_file_ids:
        raw = RawFile.objects.get(id=raw_file_id)
        print(f"  {raw.id}")
        print(f"    backup_status={raw.backup_status}  s3_upload_path={raw.s3_upload_path}")
        print(f"    s3_bucket={raw.s3_bucket}  s3_backup_key={raw.s3_backup_key}  s3_etag={raw.s3_etag}")
        updated = raw.s3_backup_updated_at
        print(f"    s3_backup_updated_at={f'{updated:%Y-%m-%d %H:%M:%S} UTC' if updated else None}")
        print(f"    s3_backup_details={raw.s3_backup_details}")


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


if __name__ == "__main__":
    sys.exit(main())
