"""The fault run: a worker killed mid-upload, the broker restarted, the MongoDB wire server restarted.

Each fault is injected at a moment observed, not guessed: the kill when the RawFile records the large
file's multipart upload and S3 lists some (not all) of its parts; the broker away while fresh runs are
queued, until the scheduler has tried to publish one; the wire server away while uploads run, until a task
has failed for it (Airflow then retries it). What the retry of the killed task did is read from its task log (the
provider's ``resuming multipart upload`` and ``upload summary`` lines), and checked against what S3 held.
"""

from __future__ import annotations

import math
import re
import time
from typing import TYPE_CHECKING, Any

import seed
from services import say

#: Seconds the broker stays away after the scheduler queued a task to it.
BROKER_HOLD = 10
MAX_CONCURRENCY = 4  # the operator's default: parts in flight at once per file
#: The provider's ``key=value`` log lines (in the JSON task logs' "event").
KV = re.compile(r"(\w+)=(\S+)")

if TYPE_CHECKING:
    from runs import Lane, Run


class FaultRun:
    def __init__(self, lane: Lane, run: Run) -> None:
        self.lane = lane
        self.d = lane.d
        self.run_ = run
        self.facts = run.facts

    def fail(self, text: str) -> None:
        self.run_.problems.append(text)
        say(f"  FAILED: {text}")

    def run(self) -> None:
        others = [spec for spec in seed.RAW_FILES if spec is not seed.TARGET]
        self.lane.trigger(self.run_, (seed.TARGET, *others[:9]))
        self.kill_worker_mid_upload()
        self.restart_broker(others[9:14])
        self.lane.trigger(self.run_, tuple(others[14:]))
        self.restart_wire_server(others[14:])
        self.check_resume()

    # ------------------------------------------------------------------ 1. kill -9 mid-upload

    def _upload_in_flight(self) -> tuple[str, str, str] | None:
        """(bucket, key, upload id) once the target's upload is recorded and S3 holds 3+ of its parts."""
        from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile

        document = RawFile._get_collection().find_one({"_id": seed.TARGET.raw_file_id}) or {}
        if document.get("backup_status") == BackupStatus.DONE:
            raise RuntimeError("the large file's upload finished before it could be interrupted")
        entries = document.get("s3_uploads") or []
        if not entries:
            return None
        entry = entries[0]
        bucket = f"{self.run_.bucket_prefix}-{seed.TARGET.project_id.lower()}"
        parts = self.lane.s3.list_parts(Bucket=bucket, Key=entry["key"], UploadId=entry["upload_id"])
        return (bucket, entry["key"], entry["upload_id"]) if len(parts.get("Parts", [])) >= 3 else None

    def kill_worker_mid_upload(self) -> None:
        run_id = self.run_.run_ids[seed.TARGET.raw_file_id]
        bucket, key, upload_id = self.d.wait(
            "the large file's multipart upload in flight", self._upload_in_flight, 300, 0.05
        )
        hostname = self.d.task(run_id).get("hostname")
        victim = self.d.workers.get(hostname or "")
        if victim is None:
            raise RuntimeError(f"the large file's task runs on {hostname!r}, not on a lane worker")
        groups = victim.kill_hard()
        del self.d.workers[hostname]
        in_s3 = len(self.lane.s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id).get("Parts", []))
        total = math.ceil(sum(seed.TARGET.files.values()) / seed.PART_SIZE)
        say(
            f"fault 1: kill -9 {hostname} (process groups {sorted(groups)}) mid-upload of {key}: "
            f"{in_s3} of {total} parts in S3"
        )
        self.facts.update(killed=hostname, parts_total=total, parts_in_s3_at_kill=in_s3, upload_id=upload_id)
        other = next(name for name in self.d.workers if name != hostname)

        def retried_elsewhere() -> dict[str, Any] | None:
            task = self.d.task(run_id)
            retried = int(task.get("try_number") or 1) > 1 and task.get("state") in ("running", "success")
            return task if retried and task.get("hostname") == other else None

        started = time.monotonic()
        task = self.d.wait(f"the killed task retried on {other}", retried_elsewhere, 240, 1)
        say(
            f"  try {task['try_number']} runs on {task['hostname']} {time.monotonic() - started:.0f} s after the kill"
        )
        self.d.start_worker(hostname)  # the lost machine comes back
        self.facts["killed_worker_back"] = True

    # ------------------------------------------------------------------ 2. broker restart

    def restart_broker(self, specs: list[seed.RawFileSpec]) -> None:
        """Redis stopped while uploads run; runs triggered meanwhile; started again once the scheduler has
        handed one of them to the executor (queued: it is publishing to the missing broker) and
        ``BROKER_HOLD`` seconds more, long enough for the publish retries to run out and the workers to try
        reconnecting."""
        started = time.monotonic()
        self.d.redis.stop()
        self.lane.trigger(self.run_, tuple(specs))
        run_ids = [self.run_.run_ids[spec.raw_file_id] for spec in specs]
        self.d.wait(
            "the scheduler queueing while the broker is down",
            lambda: self._states(run_ids) & {"queued"},
            120,
            0.5,
        )
        time.sleep(BROKER_HOLD)  # the length of the outage, not a wait for something to happen
        self.d.redis.start()
        down = time.monotonic() - started
        say(
            f"fault 2: broker down {down:.0f} s while 5 new runs were queued, then restarted on the same port"
        )
        self.facts["broker_down_s"] = round(down)

    # ------------------------------------------------------------------ 3. wire server restart

    def restart_wire_server(self, specs: list[seed.RawFileSpec]) -> None:
        run_ids = [self.run_.run_ids[spec.raw_file_id] for spec in specs]
        self.d.wait(
            "an upload of the last runs running", lambda: self._states(run_ids) & {"running"}, 300, 0.5
        )
        before = self._tries()
        started = time.monotonic()
        self.d.wire.stop()

        def failed_since() -> list[str]:
            """Runs whose task failed (and waits for its retry) since the server went away."""
            now = self._tries()
            return [
                run_id
                for run_id, (state, tries) in now.items()
                if state == "up_for_retry" and before[run_id] != (state, tries)
            ]

        self.d.wait("a task failing while the wire server is away", failed_since, 120, 1)
        self.d.wire.start()
        down = time.monotonic() - started
        failed = failed_since()
        say(
            f"fault 3: wire server away {down:.0f} s while uploads ran, until {len(failed)} task(s) failed for it; "
            "started again on the same port"
        )
        self.facts.update(wire_down_s=round(down), wire_failed_tasks=len(failed))

    def _tries(self) -> dict[str, tuple[str, int]]:
        tasks = {run_id: self.d.task(run_id) for run_id in self.run_.run_ids.values()}
        return {run_id: (str(t.get("state")), int(t.get("try_number") or 0)) for run_id, t in tasks.items()}

    def _states(self, run_ids: list[str]) -> set[str]:
        return {str(self.d.task(run_id).get("state")) for run_id in run_ids}

    # ------------------------------------------------------------------ resume figures

    def check_resume(self) -> None:
        """After the runs: the killed task's successful attempt reused every part S3 held and sent the rest."""
        self.lane.wait_finished(self.run_)
        run_id = self.run_.run_ids[seed.TARGET.raw_file_id]
        task = self.d.task(run_id)
        attempt = int(task.get("try_number") or 1)
        events = self.d.task_log(run_id, attempt)
        tries = [self.d.task_log(run_id, n) for n in range(2, attempt + 1)]
        self.facts["lease_waits"] = sum(any("is being done by attempt" in e for e in t) for t in tries)
        resumed = log_fields(events, "resuming multipart upload")
        summary = log_fields(events, "upload summary")
        total, at_kill = self.facts["parts_total"], self.facts["parts_in_s3_at_kill"]
        if task.get("hostname") == self.facts["killed"]:
            self.fail(f"the killed task's last attempt ran on the killed worker {task.get('hostname')}")
        if attempt < 2:
            self.fail(f"the killed task ended in try {attempt}: no retry ran it")
        if not resumed or not summary:
            self.fail(f"attempt {attempt} of {run_id} logged no resume / upload summary")
            return
        in_s3 = int(resumed[-1]["parts_in_s3"])
        sent, reused = int(summary[-1]["parts_sent"]), int(summary[-1]["parts_reused"])
        self.facts.update(
            successful_try=attempt,
            retry_hostname=task.get("hostname"),
            resumed_upload_id=resumed[-1].get("upload_id"),
            parts_reused=reused,
            parts_sent=sent,
            # The retry sends only parts S3 does not hold; of those, the killed attempt had at most
            # max_concurrency in flight: the only bytes sent twice.
            parts_resent_at_most=min(sent, MAX_CONCURRENCY),
            parts_in_s3_sent_again=in_s3 - reused,
        )
        if resumed[-1].get("upload_id") != self.facts["upload_id"]:
            self.fail(f"the retry resumed {resumed[-1].get('upload_id')}, not {self.facts['upload_id']}")
        if reused != in_s3 or reused < at_kill or sent + reused != total:
            self.fail(
                f"resume: {reused} parts reused, {sent} sent, {in_s3} in S3 at resume, {at_kill} at the kill"
            )


def log_fields(events: list[str], prefix: str) -> list[dict[str, str]]:
    """``key=value`` fields of every log message starting with ``prefix``."""
    return [dict(KV.findall(event)) for event in events if event.startswith(prefix)]
