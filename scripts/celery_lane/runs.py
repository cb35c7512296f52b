"""The lane's three runs of 20 raw files (one worker, two workers, two workers with faults) and their figures."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import seed
from checks import check_backups
from services import say

if TYPE_CHECKING:
    from lane import Deployment

FINISHED = {"success", "failed"}
#: A worker's line for each task message it starts on (Celery provider 3.26).
DELIVERY = re.compile(
    r"Executing workload in Celery: .*?log_path='(?P<path>[^']*run_id=(?P<run_id>[^/]+)/[^']*attempt=\d+\.log)'"
)


@dataclass
class Run:
    """One run of the 20 raw files: its DAG runs, buckets and what was found."""

    name: str
    bucket_prefix: str
    run_ids: dict[str, str] = field(default_factory=dict)  # raw file id → DAG run id
    wall: float = 0.0
    problems: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


class Lane:
    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment
        self.pool = deployment.work / "pool"
        self.s3: Any = None

    def setup(self) -> None:
        started = time.monotonic()
        total = seed.write_files(self.pool)
        say(
            f"{len(seed.RAW_FILES)} raw files, {total / seed.MIB:.0f} MiB, written in {time.monotonic() - started:.0f} s"
        )
        self.d.start()
        self.s3 = self.d.s3_client()
        from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook

        KrakenMongoHook().connect()

    def prepare(self, run: Run) -> None:
        """Fresh RawFiles and fresh versioned buckets for this run's prefix (the lab creates them ahead)."""
        seed.stage_records(self.pool)
        for project in {spec.project_id for spec in seed.RAW_FILES}:
            bucket = f"{run.bucket_prefix}-{project.lower().replace('_', '-')}"
            self.s3.create_bucket(Bucket=bucket)
            self.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})

    def trigger(self, run: Run, specs: tuple[seed.RawFileSpec, ...]) -> None:
        for spec in specs:
            run_id = f"{run.name}-{len(run.run_ids) + 1:02d}"
            self.d.trigger(run_id, spec.raw_file_id, run.bucket_prefix)
            run.run_ids[spec.raw_file_id] = run_id

    def wait_finished(self, run: Run) -> list[dict[str, Any]]:
        def finished() -> list[dict[str, Any]] | None:
            states = [self.d.run(run_id) for run_id in run.run_ids.values()]
            return states if all(s.get("state") in FINISHED for s in states) else None

        return self.d.wait(f"{run.name}: every DAG run finished", finished, 900, poll=2)

    def check(self, run: Run, dag_runs: list[dict[str, Any]]) -> None:
        run.wall = _wall(dag_runs)
        for raw_file_id, run_id in run.run_ids.items():
            state = next(r.get("state") for r in dag_runs if r.get("dag_run_id") == run_id)
            if state != "success":
                run.problems.append(f"DAG run {run_id} ({raw_file_id}): {state}")
        found = check_backups(self.s3, list(run.run_ids))
        run.problems += found.problems
        tasks = {raw_file_id: self.d.task(run_id) for raw_file_id, run_id in run.run_ids.items()}
        run.facts.update(
            raw_files_done=found.done,
            objects=found.objects,
            mib_compared=round(found.bytes_compared / seed.MIB, 1),
            wall_seconds=round(run.wall, 1),
            tasks_retried=sum(int(t.get("try_number") or 1) > 1 for t in tasks.values()),
            hostnames=sorted({t.get("hostname") or "?" for t in tasks.values()}),
        )
        run.facts["duplicate_deliveries"] = self.duplicate_deliveries(run)
        verdict = "OK" if not run.problems else f"{len(run.problems)} PROBLEM(S)"
        say(f"{run.name}: {json.dumps(run.facts)} -> {verdict}")
        for problem in run.problems:
            say(f"  FAILED: {problem}")

    def duplicate_deliveries(self, run: Run) -> int:
        """Task attempts Celery delivered more than once (at-least-once delivery: a broker restart puts
        unacknowledged messages back). Airflow's execution API lets only one delivery start an attempt;
        the checks above show the upload itself happened once."""
        deliveries: dict[str, int] = {}
        for log in self.d.logs.glob("worker*.log"):
            for match in DELIVERY.finditer(log.read_text(errors="replace")):
                if match["run_id"] in run.run_ids.values():
                    deliveries[match["path"]] = deliveries.get(match["path"], 0) + 1
        return sum(count > 1 for count in deliveries.values())

    def plain_run(self, name: str) -> Run:
        run = Run(name, f"lane-{name}")
        self.prepare(run)
        self.trigger(run, seed.RAW_FILES)
        self.check(run, self.wait_finished(run))
        return run

    def fault_run(self) -> Run:
        from faults import FaultRun

        run = Run("faults", "lane-faults")
        self.prepare(run)
        FaultRun(self, run).run()
        self.check(run, self.wait_finished(run))
        return run


def _wall(dag_runs: list[dict[str, Any]]) -> float:
    """From the first run queued to the last run ended, by Airflow's own timestamps."""
    starts = [datetime.fromisoformat(r["queued_at"]) for r in dag_runs if r.get("queued_at")]
    ends = [datetime.fromisoformat(r["end_date"]) for r in dag_runs if r.get("end_date")]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else float("nan")


def run_all(deployment: Deployment, faults_only: bool = False) -> int:
    lane = Lane(deployment)
    started = time.monotonic()
    lane.setup()
    say(f"deployment up in {time.monotonic() - started:.0f} s; logs in {deployment.logs}")
    deployment.start_worker("worker1")
    runs = [] if faults_only else [lane.plain_run("one-worker")]
    deployment.start_worker("worker2")
    if not faults_only:
        runs.append(lane.plain_run("two-workers"))
    runs.append(lane.fault_run())
    one, two = (runs[0].wall, runs[1].wall) if not faults_only else (0.0, 0.0)
    figures = {
        "raw_files": len(seed.RAW_FILES),
        "mib": round(sum(sum(s.files.values()) for s in seed.RAW_FILES) / seed.MIB),
        "wall_one_worker_s": round(one, 1),
        "wall_two_workers_s": round(two, 1),
        "speedup": round(one / two, 2) if two else None,
        **{f"faults_{k}": v for k, v in runs[-1].facts.items()},
        "lane_seconds": round(time.monotonic() - started),
    }
    (deployment.work / "figures.json").write_text(json.dumps(figures, indent=2))
    say("figures " + json.dumps(figures))
    problems = sum(len(run.problems) for run in runs)
    say("celery lane: " + ("all checks passed" if not problems else f"{problems} check(s) FAILED"))
    return 0 if not problems else 1
