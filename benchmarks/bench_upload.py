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
import statistics
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from measure import (
    MB,
    MIB,
    NoisePolicy,
    Target,
    add_common_args,
    child_env,
    context_sentence,
    evict_from_page_cache,
    interleaved_rounds,
    make_test_file,
    markdown_table,
    md5_pass,
    md5sum,
    measure_quietly,
    measured,
    medians,
    noisy_count,
    print_child_result,
    run_measured_child,
    s3_client,
    scratch_dir,
    targets_table,
    timed,
    undisturbed,
    write_json,
)

BUCKET = "kraken-bench"
HASH_ROUNDS = 3

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
    add_common_args(parser, repeat=5, repeat_help=": one moto run spreads by ±30 %%, a median of 2 is noise")
    parser.add_argument(
        "--no-tuned-boto3",
        action="store_true",
        help="skip the informational boto3 row that uses the hook's client config",
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


# ---------------------------------------------------------------------------------------------- child side


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
    """Do one upload and print its measurements as the last stdout line."""
    upload = make_uploader(args)
    evict_from_page_cache(Path(args.path))
    with measured(int(args.moto_pid)) as result:
        etag = upload()
    print_child_result({"method": args.child, **result, "etag": etag})


# ---------------------------------------------------------------------------------------------- parent: hashing


def hash_round(path: Path, part_size: int) -> dict[str, Any]:
    """One timing of each hasher, back to back, plus the CPU other processes used meanwhile."""
    from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag, compute_s3_etag_and_md5

    with measured(sample_rss=False) as result:
        tool_md5, md5sum_s = timed(lambda: md5sum(path))
        etag, etag_s = timed(lambda: compute_s3_etag(path, part_size))
        (both_etag, both_md5), etag_md5_s = timed(lambda: compute_s3_etag_and_md5(path, part_size))
    if both_md5 != tool_md5 or both_etag != etag:
        raise RuntimeError("hashers disagree: md5sum vs compute_s3_etag_and_md5, or the two ETags")
    return {
        "md5sum": md5sum_s,
        "etag": etag_s,
        "etag_md5": etag_md5_s,
        "wall_s": result["wall_s"],
        "others_cpu_s": result["others_cpu_s"],
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
    return run_measured_child(command, setup.env, method)


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
    return interleaved_rounds(
        methods,
        args.repeat,
        lambda method: run_one_upload(setup, client, method, expected_etag),
        LABELS,
        policy,
    )


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


# ---------------------------------------------------------------------------------------------- targets


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


def context_line(args: argparse.Namespace, size: int, disk_note: str, noisy: int) -> str:
    return (
        f"{size / MIB:.0f} MiB random file, {args.part_size_mib} MiB parts, concurrency {args.concurrency}, "
        f"median of {args.repeat} upload(s) each in a fresh process, one moto_server on loopback (HTTP); "
        f"{context_sentence(noisy)} {disk_note}"
    )


# ---------------------------------------------------------------------------------------------- main


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
    upload = medians(runs, NUMERIC_FIELDS + IO_FIELDS)
    disk_field, disk_note = disk_counter(runs)
    targets = evaluate_targets(hashing, upload, size, disk_field)
    print()
    noisy = noisy_count(hashing["rounds"], *runs.values())
    print(context_line(args, size, disk_note, noisy))
    print()
    print(upload_table(upload, size))
    print()
    print(hashing_table(hashing))
    print()
    print(f"One MD5 pass (hashlib, one thread, warm cache): {hashing['md5_pass_cpu_s']:.2f} s CPU.")
    print()
    print(targets_table(targets))
    write_json(
        args.json,
        args,
        file_size=size,
        disk_counter=disk_field,
        hashing=hashing,
        upload_runs=runs,
        upload_median=upload,
        targets=[t.as_dict() for t in targets],
    )
    return 0 if all(t.passed for t in targets) else 1


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        run_child(arguments)
    else:
        sys.exit(main(arguments))
