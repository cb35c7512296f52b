"""Benchmark: KrakenS3Hook.upload_verified against boto3's upload_file, and our hashing against md5sum.

Why this script exists: the README promises that the verified upload costs about what a plain boto3 upload
costs (wall time, CPU, memory, disk reads) while proving every byte, and that computing the ETag is faster
than ``md5sum``. Those claims are only worth something when both sides are measured in the same run, on the
same file, against the same server, so that is all this script does.

* One ``moto_server`` process on loopback (S3 over real HTTP, outside our GIL), started here.
* One file of random bytes (incompressible, like raw mass-spec data), written once into a temp dir.
* Every measured upload runs in a fresh child process (``--child METHOD``), so peak RSS, CPU and I/O
  counters belong to that upload alone and nothing is warm from an earlier run. The file is evicted from
  the page cache just before each upload, so ``read_bytes`` shows what really came from the disk.
* Results are medians over ``--repeat`` runs, with the methods interleaved so drift hits all of them.
* Shared, small machines are noisy: each measurement waits for idle CPUs, counts the CPU seconds other
  processes used while it ran, and is redone (``--noisy-retries``, while ``--budget-s`` allows) if that
  exceeded ``NOISE_SHARE``. Medians use the undisturbed runs when there are any; the rest are flagged.
* Three ways to call the hook, because they cost differently:
  - plain ``upload_verified`` (no expectation): part MD5s only, the ETag S3 returns is checked against them;
  - the operator's path, ``expected_etag`` (alphakraken's precomputed ``"<etag>__<MiB>"``) plus
    ``expected_md5``: the part MD5s prove the bytes against the ETag, so no second whole-file MD5 is
    computed. This is what every file with a precomputed ETag in its inventory costs;
  - ``expected_md5`` alone, the legacy ``[size, md5]`` inventory: a whole-file MD5 in the same read pass,
    on top of the part MD5s. Measured so its extra cost stays visible; the targets are not about it.
  Both expectations are computed before any upload (from the hashing phase), never inside a measurement.
* An informational row runs boto3 with the hook's own client config (no payload SHA256, no CRC32):
  boto3's defaults over plain HTTP hash every part twice more, so that row separates "our transfer loop"
  from "our client settings".

Wall time against moto is bounded by moto itself (one Python process; its CPU, mostly kernel time for its
in-memory objects, is shown per row); client CPU, memory and disk reads are the client's own.

Run: ``.venv/bin/python benchmarks/bench_upload.py [--size-mib 1024] [--part-size-mib 500]
[--concurrency 4] [--repeat 5] [--json out.json]``. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MIB = 1024**2
MB = 10**6
WRITE_CHUNK = 64 * MIB
HASH_BLOCK = 4 * MIB
RESULT_MARKER = "RESULT "
BUCKET = "kraken-bench"
HASH_ROUNDS = 3
CHILD_TIMEOUT_S = 900
RSS_SAMPLE_INTERVAL_S = 0.01
QUIET_CPU_PERCENT = 25.0
#: A measurement is redone when other processes used more than this share of the machine's CPU during it.
NOISE_SHARE = 0.10

#: Measured upload methods, in table order.
HOOK = "upload_verified"
HOOK_ETAG_MD5 = "upload_verified_etag_md5"
HOOK_MD5 = "upload_verified_md5"
BOTO3 = "boto3_upload_file"
BOTO3_TUNED = "boto3_tuned"
METHODS = (HOOK, HOOK_ETAG_MD5, HOOK_MD5, BOTO3, BOTO3_TUNED)
HOOK_METHODS = (HOOK, HOOK_ETAG_MD5, HOOK_MD5)
#: The hook calls the targets are about: plain, and the operator's (precomputed ETag + inventory MD5).
#: The legacy MD5-only path pays for a second whole-file MD5 by design; it is measured, not targeted.
TARGET_METHODS = (HOOK, HOOK_ETAG_MD5)
LABELS = {
    HOOK: "KrakenS3Hook.upload_verified",
    HOOK_ETAG_MD5: "upload_verified + ETag + MD5 (operator)",
    HOOK_MD5: "upload_verified + MD5 only (legacy [size, md5])",
    BOTO3: "boto3 upload_file (defaults)",
    BOTO3_TUNED: "boto3 upload_file (hook's client config)",
}

# Targets (see the README's performance section).
ETAG_SPEEDUP_MIN = 1.7
ETAG_MD5_SPEEDUP_MIN = 0.95
WALL_RATIO_MAX = 1.05
RSS_GROWTH_MAX = 100 * MIB
DISK_READ_RATIO_MAX = 1.02


# ---------------------------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="test file size (default 1024)")
    parser.add_argument("--part-size-mib", type=int, default=500, help="part size P (default 500)")
    parser.add_argument("--concurrency", type=int, default=4, help="parts in flight C (default 4)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="runs per upload method; median (default 5: one moto run spreads by ±30 %%, a median of 2 is noise)",
    )
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument(
        "--no-tuned-boto3",
        action="store_true",
        help="skip the informational boto3 row that uses the hook's client config",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=15.0,
        help="before each measurement wait up to this many seconds for other processes to go idle (default 15)",
    )
    parser.add_argument(
        "--noisy-retries",
        type=int,
        default=1,
        help="redo a measurement this often if other processes used the CPUs during it (default 1)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=400.0,
        help="stop waiting for quiet and redoing noisy measurements after this many seconds (default 400)",
    )
    parser.add_argument(
        "--tmp-dir", type=Path, help="where to write the test file (a real disk, not tmpfs; default $TMPDIR)"
    )
    # Internal: one measured upload in a fresh process.
    for name in (
        "--child",
        "--path",
        "--key",
        "--endpoint",
        "--expected-md5",
        "--expected-etag",
        "--moto-pid",
    ):
        parser.add_argument(name, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- shared helpers


def proc_io() -> dict[str, int]:
    """This process's I/O counters: ``read_bytes`` (from the block device) and ``rchar`` (via syscalls)."""
    with open("/proc/self/io") as handle:
        return {key: int(value) for key, value in (line.split(": ") for line in handle if line.strip())}


def evict_from_page_cache(path: Path) -> None:
    """Drop the file's cached pages so the next read comes from disk (needs the data synced first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cpu_seconds() -> tuple[float, float]:
    """User and system CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def minor_faults() -> int:
    """Page faults served without I/O: mostly first touches of freshly allocated memory (system CPU)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def max_rss_bytes() -> int:
    """Lifetime peak RSS; ``ru_maxrss`` is in KiB on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def connection_json(endpoint_url: str) -> str:
    """The ``aws`` Airflow connection the hook reads (same form as ``tests/conftest.py``)."""
    extra = {"endpoint_url": endpoint_url, "region_name": "us-east-1"}
    return json.dumps({"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra})


def s3_client(endpoint_url: str, config: Any = None) -> Any:
    """A boto3 S3 client for the moto server; ``config=None`` keeps every boto3 default."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=config,
    )


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent on anything but idling since boot (to find out what *others* used)."""
    import psutil

    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq


def is_noisy(result: dict[str, Any]) -> bool:
    return result["others_cpu_s"] > NOISE_SHARE * result["wall_s"] * (os.cpu_count() or 1)


@dataclass(frozen=True)
class NoisePolicy:
    """How hard to try for undisturbed measurements on a shared machine, within a time budget."""

    quiet_wait: float
    retries: int
    deadline: float  # time.monotonic() after which we neither wait nor redo

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NoisePolicy:
        return cls(args.quiet_wait, args.noisy_retries, time.monotonic() + args.budget_s)

    def may_wait(self) -> bool:
        return time.monotonic() < self.deadline


def measure_quietly(measure: Callable[[], dict[str, Any]], what: str, policy: NoisePolicy) -> dict[str, Any]:
    """Run ``measure`` when the machine is idle; redo it if other processes took CPU while it ran."""
    attempt = 0
    while True:
        attempt += 1
        busy = wait_for_quiet(policy.quiet_wait if policy.may_wait() else 0.0)
        result = measure()
        result.update(busy_before_pct=busy, attempt=attempt, noisy=is_noisy(result))
        redo = result["noisy"] and attempt <= policy.retries and policy.may_wait()
        if result["noisy"]:
            print(
                f"  {what}: other processes used {result['others_cpu_s']:.1f} CPU s during it "
                f"({result['wall_s']:.1f} s wall), {'redoing' if redo else 'kept, flagged as noisy'}",
                file=sys.stderr,
                flush=True,
            )
        if not redo:
            return result


def wait_for_quiet(max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until the machine's CPUs are mostly idle; return the busy % last seen.

    Other work on a small machine (a test suite, a build) steals CPU from the client *and* from moto and
    skews both sides unevenly; waiting is cheap, and the value is recorded so a noisy run is visible.
    """
    import psutil

    deadline = time.monotonic() + max_wait
    busy = psutil.cpu_percent(interval=0.5)
    while busy > QUIET_CPU_PERCENT and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
    return busy


# ---------------------------------------------------------------------------------------------- child side


class RssSampler:
    """Samples RSS in a thread: ``ru_maxrss`` is a lifetime peak and may predate the upload."""

    def __init__(self, interval: float = RSS_SAMPLE_INTERVAL_S) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = self._process.memory_info().rss
        self.samples = 0

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)
            self.samples += 1

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def make_uploader(args: argparse.Namespace) -> Callable[[], str | None]:
    """Build the client and make one request first, return the upload.

    Client creation and the first request's lazy loading of botocore models and endpoint rules cost a
    fixed ~0.1-0.2 s of CPU per process on either side; they are not what is being compared. Every child
    imports Airflow and the hook (boto3 rows too), so "RSS before" is comparable across rows.
    """
    from boto3.s3.transfer import TransferConfig

    from airflow_provider_kraken_s3.core.etag import parse_precomputed_etag
    from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook

    part_size, concurrency = args.part_size_mib * MIB, args.concurrency
    path, key = Path(args.path), args.key
    if args.child in HOOK_METHODS:
        hook = KrakenS3Hook(aws_conn_id="aws_default", max_concurrency=concurrency)
        hook.get_conn().head_bucket(Bucket=BUCKET)
        expected_md5 = args.expected_md5 if args.child in (HOOK_ETAG_MD5, HOOK_MD5) else None
        expected_etag = None
        if args.child == HOOK_ETAG_MD5:
            # As the operator does: the inventory holds "<etag>__<MiB>"; the ETag fixes the part size.
            precomputed = parse_precomputed_etag(args.expected_etag)
            expected_etag, part_size = precomputed.etag, precomputed.part_size

        def upload_with_hook() -> str | None:
            result = hook.upload_verified(
                path,
                BUCKET,
                key,
                part_size=part_size,
                max_concurrency=concurrency,
                expected_etag=expected_etag,
                expected_md5=expected_md5,
            )
            if result.skipped:  # a skip reads nothing and sends nothing: it would flatter the row
                raise RuntimeError(f"{args.child}: upload skipped ({result.reason}), nothing was measured")
            return result.etag

        return upload_with_hook
    config = KrakenS3Hook.default_client_config if args.child == BOTO3_TUNED else None
    client = s3_client(args.endpoint, config)
    client.head_bucket(Bucket=BUCKET)
    transfer = TransferConfig(
        multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=concurrency
    )

    def upload_with_boto3() -> str | None:
        client.upload_file(str(path), BUCKET, key, Config=transfer)
        return None

    return upload_with_boto3


def run_child(args: argparse.Namespace) -> None:
    """Do one upload and print its measurements as the last stdout line (``RESULT {...}``)."""
    upload = make_uploader(args)
    evict_from_page_cache(Path(args.path))
    gc.collect()
    import psutil

    moto = psutil.Process(int(args.moto_pid))
    rss_before = psutil.Process().memory_info().rss
    maxrss_before = max_rss_bytes()
    busy0, moto0 = machine_busy_seconds(), moto.cpu_times()
    user0, sys0 = cpu_seconds()
    faults0 = minor_faults()
    io0 = proc_io()
    with RssSampler() as sampler:
        started = time.perf_counter()
        etag = upload()
        wall = time.perf_counter() - started
    user1, sys1 = cpu_seconds()
    faults1 = minor_faults()
    io1 = proc_io()
    busy1, moto1 = machine_busy_seconds(), moto.cpu_times()
    moto_user, moto_sys = moto1.user - moto0.user, moto1.system - moto0.system
    maxrss_after = max_rss_bytes()
    # ru_maxrss is exact but lifetime-wide: it only speaks for the upload if the upload raised it.
    peak_during = max(sampler.peak, maxrss_after if maxrss_after > maxrss_before else 0)
    result = {
        "method": args.child,
        "wall_s": wall,
        "cpu_user_s": user1 - user0,
        "cpu_sys_s": sys1 - sys0,
        "cpu_s": (user1 - user0) + (sys1 - sys0),
        # moto is the server: its CPU, mostly kernel time for memory, is what bounds the wall time here.
        "moto_cpu_s": moto_user + moto_sys,
        "moto_user_s": moto_user,
        "moto_sys_s": moto_sys,
        "others_cpu_s": max(0.0, (busy1 - busy0) - (user1 - user0) - (sys1 - sys0) - moto_user - moto_sys),
        "minor_faults": faults1 - faults0,
        "rss_before": rss_before,
        "peak_rss": peak_during,
        "rss_growth": peak_during - rss_before,
        "maxrss_lifetime": maxrss_after,
        "rss_samples": sampler.samples,
        "read_bytes": io1["read_bytes"] - io0["read_bytes"],
        "rchar": io1["rchar"] - io0["rchar"],
        "etag": etag,
    }
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------- parent: file


def make_test_file(directory: Path, size: int) -> Path:
    """Random (incompressible) bytes, synced so the page cache can be dropped before each upload."""
    path = directory / "bench.raw"
    with open(path, "wb") as handle:
        remaining = size
        while remaining:
            chunk = os.urandom(min(WRITE_CHUNK, remaining))
            handle.write(chunk)
            remaining -= len(chunk)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def md5_pass(path: Path) -> tuple[str, float, float]:
    """hashlib MD5 over the file on one thread: (hex, CPU seconds, wall seconds), the cost of one pass."""
    digest = hashlib.md5()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        while got := handle.readinto(buffer):
            digest.update(view[:got])
    return digest.hexdigest(), time.process_time() - cpu0, time.perf_counter() - wall0


# ---------------------------------------------------------------------------------------------- parent: hashing


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = action()
    return value, time.perf_counter() - started


def md5sum(path: Path) -> str:
    output = subprocess.run(["md5sum", str(path)], check=True, capture_output=True, text=True).stdout
    return output.split()[0]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def hash_round(path: Path, part_size: int) -> dict[str, Any]:
    """One timing of each hasher, back to back, plus the CPU other processes used meanwhile."""
    from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag, compute_s3_etag_and_md5

    busy0, own0 = machine_busy_seconds(), time.process_time() + children_cpu_seconds()
    started = time.perf_counter()
    tool_md5, md5sum_s = timed(lambda: md5sum(path))
    etag, etag_s = timed(lambda: compute_s3_etag(path, part_size))
    (both_etag, both_md5), etag_md5_s = timed(lambda: compute_s3_etag_and_md5(path, part_size))
    wall = time.perf_counter() - started
    own = time.process_time() + children_cpu_seconds() - own0
    if both_md5 != tool_md5 or both_etag != etag:
        raise RuntimeError("hashers disagree: md5sum vs compute_s3_etag_and_md5, or the two ETags")
    return {
        "md5sum": md5sum_s,
        "etag": etag_s,
        "etag_md5": etag_md5_s,
        "wall_s": wall,
        "others_cpu_s": max(0.0, machine_busy_seconds() - busy0 - own),
        "md5_hex": tool_md5,
        "etag_hex": etag,
    }


def bench_hashing(path: Path, part_size: int, policy: NoisePolicy) -> dict[str, Any]:
    """ETag, ETag+MD5 and md5sum on a warm page cache, interleaved, median of ``HASH_ROUNDS``."""
    size = path.stat().st_size
    md5_hex, _, _ = md5_pass(path)  # warms the page cache
    md5_cpu = statistics.median(md5_pass(path)[1] for _ in range(HASH_ROUNDS))
    rounds = [
        measure_quietly(lambda: hash_round(path, part_size), f"hash round {n}", policy)
        for n in range(1, HASH_ROUNDS + 1)
    ]
    if any(r["md5_hex"] != md5_hex for r in rounds):
        raise RuntimeError("md5sum and hashlib disagree")
    usable = undisturbed(rounds)
    medians = {name: statistics.median(r[name] for r in usable) for name in ("md5sum", "etag", "etag_md5")}
    return {
        "md5": md5_hex,
        "etag": rounds[0]["etag_hex"],
        "md5_pass_cpu_s": md5_cpu,
        "rounds": rounds,
        "median_s": medians,
        "mb_s": {name: size / MB / seconds for name, seconds in medians.items()},
    }


# ---------------------------------------------------------------------------------------------- parent: uploads


@dataclass(frozen=True)
class UploadSetup:
    """Everything a child needs besides the method: same file, same server, same part plan."""

    script: Path
    path: Path
    endpoint: str
    env: dict[str, str]
    part_size_mib: int
    concurrency: int
    md5: str
    #: alphakraken's precomputed ``"<etag>__<MiB>"`` (from ``compute_s3_etag``), as the operator gets it.
    precomputed_etag: str
    moto_pid: int


def child_env(endpoint: str, airflow_home: Path) -> dict[str, str]:
    """Airflow reads its config at import: a throwaway home, test mode, our connection via env var."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_AWS_DEFAULT": connection_json(endpoint),
        "AWS_EC2_METADATA_DISABLED": "true",
        "PYTHONUNBUFFERED": "1",
    }


def run_upload_child(setup: UploadSetup, method: str, key: str) -> dict[str, Any]:
    command = [
        sys.executable,
        str(setup.script),
        "--child", method,
        "--path", str(setup.path),
        "--key", key,
        "--endpoint", setup.endpoint,
        "--part-size-mib", str(setup.part_size_mib),
        "--concurrency", str(setup.concurrency),
        "--expected-md5", setup.md5,
        "--expected-etag", setup.precomputed_etag,
        "--moto-pid", str(setup.moto_pid),
    ]  # fmt: skip
    done = subprocess.run(
        command, env=setup.env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if done.returncode != 0 or not lines:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise RuntimeError(f"child {method} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1][len(RESULT_MARKER) :])


def run_one_upload(setup: UploadSetup, client: Any, method: str, expected_etag: str) -> dict[str, Any]:
    """One measured upload with a fresh key; check the stored ETag, then delete it (moto keeps RAM)."""
    key = f"bench/{method}/{uuid.uuid4().hex}"
    try:
        result = run_upload_child(setup, method, key)
        stored = client.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')
        result["stored_etag"] = stored
        result["etag_ok"] = stored == expected_etag
        if not result["etag_ok"]:
            raise RuntimeError(f"{method}: stored ETag {stored}, expected {expected_etag}")
        return result
    finally:
        client.delete_object(Bucket=BUCKET, Key=key)


def bench_uploads(
    setup: UploadSetup,
    methods: tuple[str, ...],
    args: argparse.Namespace,
    expected_etag: str,
    policy: NoisePolicy,
) -> dict[str, list[dict[str, Any]]]:
    """Interleave the methods in every round so a slow phase of the machine hits all of them alike."""
    client = s3_client(setup.endpoint)
    client.create_bucket(Bucket=BUCKET)
    runs: dict[str, list[dict[str, Any]]] = {method: [] for method in methods}
    for round_number in range(1, args.repeat + 1):
        for method in methods:
            result = measure_quietly(
                lambda method=method: run_one_upload(setup, client, method, expected_etag),
                LABELS[method],
                policy,
            )
            runs[method].append(result)
            print(
                f"  round {round_number}/{args.repeat} {LABELS[method]:<48} {result['wall_s']:7.2f} s wall "
                f"{result['cpu_s']:6.2f} s CPU ({result['minor_faults'] / 1000:.0f}k faults) "
                f"+{result['rss_growth'] / MIB:6.1f} MiB RSS  "
                f"moto {result['moto_cpu_s']:5.2f} s CPU, others {result['others_cpu_s']:4.1f} s CPU",
                file=sys.stderr,
                flush=True,
            )
    return runs


NUMERIC_FIELDS = (
    "wall_s",
    "cpu_s",
    "cpu_user_s",
    "cpu_sys_s",
    "moto_cpu_s",
    "moto_user_s",
    "moto_sys_s",
    "others_cpu_s",
    "minor_faults",
    "rss_before",
    "peak_rss",
    "rss_growth",
)
IO_FIELDS = ("read_bytes", "rchar")


def undisturbed(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs no other process disturbed, or all of them if every run was disturbed."""
    return [r for r in results if not r["noisy"]] or results


def medians(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per-method medians of every number, over the undisturbed runs (``noisy`` = none was)."""
    table: dict[str, dict[str, float]] = {}
    for method, results in runs.items():
        usable = undisturbed(results)
        table[method] = {
            field: statistics.median(r[field] for r in usable) for field in NUMERIC_FIELDS + IO_FIELDS
        }
        table[method]["runs"] = len(usable)
        table[method]["noisy"] = all(r["noisy"] for r in usable)
    return table


# ---------------------------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    limit: float
    higher_is_better: bool
    unit: str

    @property
    def passed(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    @property
    def margin(self) -> str:
        """How far from the limit, in percent of it (positive = headroom, negative = missed by)."""
        if not self.limit:
            return "n/a"
        headroom = (self.value - self.limit) if self.higher_is_better else (self.limit - self.value)
        return f"{headroom / self.limit * 100:+.1f}%"


def evaluate_targets(
    hashing: dict[str, Any], upload: dict[str, dict[str, float]], size: int, disk_field: str
) -> list[Target]:
    mb_s = hashing["mb_s"]
    targets = [
        Target("ETag hashing speed vs md5sum", mb_s["etag"] / mb_s["md5sum"], ETAG_SPEEDUP_MIN, True, "×"),
        Target(
            "ETag+MD5 speed vs md5sum", mb_s["etag_md5"] / mb_s["md5sum"], ETAG_MD5_SPEEDUP_MIN, True, "×"
        ),
    ]
    boto3 = upload[BOTO3]
    cpu_budget = boto3["cpu_s"] + hashing["md5_pass_cpu_s"]
    for method in TARGET_METHODS:
        row, label = upload[method], LABELS[method]
        targets += [
            Target(f"{label}: wall vs boto3", row["wall_s"] / boto3["wall_s"], WALL_RATIO_MAX, False, "×"),
            Target(f"{label}: CPU s (≤ boto3 + 1 MD5 pass)", row["cpu_s"], cpu_budget, False, "s"),
            Target(f"{label}: peak RSS growth MiB", row["rss_growth"] / MIB, RSS_GROWTH_MAX / MIB, False, ""),
            Target(
                f"{label}: {disk_field} / file size", row[disk_field] / size, DISK_READ_RATIO_MAX, False, "×"
            ),
        ]
    return targets


# ---------------------------------------------------------------------------------------------- output


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def upload_table(upload: dict[str, dict[str, float]], size: int) -> str:
    boto3 = upload[BOTO3]
    header = [
        "upload (median)", "runs", "wall s", "MB/s", "wall ×boto3", "CPU s", "CPU ×boto3",
        "RSS before MiB", "peak RSS MiB", "RSS growth MiB", "disk read MiB", "syscall read MiB",
        "moto CPU s (user+sys)",
    ]  # fmt: skip
    rows = []
    for method, row in upload.items():
        rows.append(
            [
                LABELS[method],
                f"{row['runs']:.0f}{' noisy' if row['noisy'] else ''}",
                f"{row['wall_s']:.2f}",
                f"{size / MB / row['wall_s']:.0f}",
                f"{row['wall_s'] / boto3['wall_s']:.2f}",
                f"{row['cpu_s']:.2f}",
                f"{row['cpu_s'] / boto3['cpu_s']:.2f}",
                f"{row['rss_before'] / MIB:.0f}",
                f"{row['peak_rss'] / MIB:.0f}",
                f"{row['rss_growth'] / MIB:.1f}",
                f"{row['read_bytes'] / MIB:.0f}",
                f"{row['rchar'] / MIB:.0f}",
                f"{row['moto_cpu_s']:.2f} ({row['moto_user_s']:.2f}+{row['moto_sys_s']:.2f})",
            ]
        )
    return markdown_table(header, rows)


def hashing_table(hashing: dict[str, Any]) -> str:
    md5sum_rate = hashing["mb_s"]["md5sum"]
    names = {
        "md5sum": "`md5sum`",
        "etag": "`compute_s3_etag`",
        "etag_md5": "`compute_s3_etag_and_md5`",
    }
    rows = [
        [names[name], f"{hashing['median_s'][name]:.2f}", f"{rate:.0f}", f"{rate / md5sum_rate:.2f}"]
        for name, rate in hashing["mb_s"].items()
    ]
    return markdown_table(["hashing (warm cache, median of 3)", "s", "MB/s", "×md5sum"], rows)


def targets_table(targets: list[Target]) -> str:
    comparator = {True: "≥", False: "≤"}
    rows = [
        [
            t.name,
            f"{t.value:.2f}{t.unit}",
            f"{comparator[t.higher_is_better]} {t.limit:.2f}{t.unit}",
            "PASS" if t.passed else "MISS",
            t.margin,
        ]
        for t in targets
    ]
    return markdown_table(["target", "measured", "target", "result", "headroom"], rows)


def context_line(args: argparse.Namespace, size: int, disk_note: str, noisy: int) -> str:
    import boto3
    import botocore

    noise = (
        f"WARNING: {noisy} measurement(s) kept although other processes used over "
        f"{NOISE_SHARE:.0%} of the CPUs during them (see --json). "
        if noisy
        else f"No measurement was disturbed by other processes (< {NOISE_SHARE:.0%} of the CPUs). "
    )
    return (
        f"{size / MIB:.0f} MiB random file, {args.part_size_mib} MiB parts, concurrency {args.concurrency}, "
        f"median of {args.repeat} upload(s) each in a fresh process, one moto_server on loopback (HTTP); "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, boto3 {boto3.__version__}, "
        f"botocore {botocore.__version__}. {noise}{disk_note}"
    )


# ---------------------------------------------------------------------------------------------- main


@contextmanager
def scratch_dir(parent: Path | None) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kraken-bench-", dir=parent) as name:
        yield Path(name)


def disk_counter(upload_runs: dict[str, list[dict[str, Any]]]) -> tuple[str, str]:
    """``read_bytes`` is 0 on overlay/tmpfs and some VMs: fall back to syscall bytes and say so."""
    if all(run["read_bytes"] > 0 for runs in upload_runs.values() for run in runs):
        return (
            "read_bytes",
            "Disk read = /proc/self/io read_bytes after evicting the file from the page cache.",
        )
    return "rchar", (
        "WARNING: read_bytes was 0 (filesystem does not account block I/O here); disk targets use rchar "
        "(bytes read via syscalls, includes socket reads)."
    )


def main(args: argparse.Namespace) -> int:
    size, part_size = args.size_mib * MIB, args.part_size_mib * MIB
    methods = tuple(m for m in METHODS if not (args.no_tuned_boto3 and m == BOTO3_TUNED))
    policy = NoisePolicy.from_args(args)
    from airflow_provider_kraken_s3.core.etag import format_precomputed_etag

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kraken_standins: at the repository root
    from kraken_standins.s3 import MotoServer

    with scratch_dir(args.tmp_dir) as directory:
        print(f"writing {size / MIB:.0f} MiB of random data to {directory} ...", file=sys.stderr, flush=True)
        path = make_test_file(directory, size)
        print("hashing (warm page cache) ...", file=sys.stderr, flush=True)
        hashing = bench_hashing(path, part_size, policy)
        print("uploading (one fresh process per upload) ...", file=sys.stderr, flush=True)
        with MotoServer.start() as server:
            airflow_home = directory / "airflow-home"
            airflow_home.mkdir()
            setup = UploadSetup(
                script=Path(__file__).resolve(),
                path=path,
                endpoint=server.url,
                env=child_env(server.url, airflow_home),
                part_size_mib=args.part_size_mib,
                concurrency=args.concurrency,
                md5=hashing["md5"],
                precomputed_etag=format_precomputed_etag(hashing["etag"], part_size),
                moto_pid=server.process.pid,
            )
            runs = bench_uploads(setup, methods, args, hashing["etag"], policy)
    upload = medians(runs)
    disk_field, disk_note = disk_counter(runs)
    targets = evaluate_targets(hashing, upload, size, disk_field)
    print()
    noisy = sum(r["noisy"] for r in hashing["rounds"]) + sum(
        run["noisy"] for method_runs in runs.values() for run in method_runs
    )
    print(context_line(args, size, disk_note, noisy))
    print()
    print(upload_table(upload, size))
    print()
    print(hashing_table(hashing))
    print()
    print(f"One MD5 pass (hashlib, one thread, warm cache): {hashing['md5_pass_cpu_s']:.2f} s CPU.")
    print()
    print(targets_table(targets))
    if args.json:
        report = {
            "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "file_size": size,
            "disk_counter": disk_field,
            "hashing": hashing,
            "upload_runs": runs,
            "upload_median": upload,
            "targets": [{**asdict(t), "passed": t.passed, "margin": t.margin} for t in targets],
        }
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if all(t.passed for t in targets) else 1


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        run_child(arguments)
    else:
        sys.exit(main(arguments))
