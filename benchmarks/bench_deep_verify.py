"""Benchmark: deep verification (download and hash) against boto3's download_file, alone and with md5sum.

Why this script exists: the README promises that deep-verifying an object costs no more wall time than
downloading it (hashing overlaps the transfer) and writes nothing to disk, with memory bounded whatever the
object's size. Those claims only mean something when the contenders are measured in the same run, on the
same object, against the same server:

* ``deep_verify``: :mod:`airflow_provider_kraken_s3.transfer.download` through ``KrakenS3Hook.access()``
  (the hook's client), HEAD then parallel ranged GETs with ``IfMatch``, the whole-object MD5 and the ETag
  at the part size in one pass, nothing written locally. The result is checked against the file's MD5 and
  ETag, so a run that hashed the wrong bytes fails instead of flattering the table;
* ``download_file``: boto3's ``download_file`` (default client) into a file on the same disk;
* ``download_file + md5sum``: the same, then ``md5sum`` of the downloaded file — what a person would do
  to check a backup by hand.

Both downloaders use the same range size (8 MiB, s3transfer's default chunk) and concurrency, so S3 sees
the same requests. Everything else follows ``bench_upload.py`` (both measure with ``measure.py``): one
``moto_server`` on loopback, one object of random bytes uploaded once, every measurement in a fresh child
process (RSS, CPU and I/O are that download's alone), the downloaded file removed (and out of the page
cache) after each run, methods interleaved, medians over the undisturbed runs, noisy runs redone while the
time budget allows and flagged otherwise.

moto note: moto copies the whole object for every ranged GET, so its CPU grows with object size × ranges;
both downloaders pay it alike (same ranges).

Run: ``.venv/bin/python benchmarks/bench_deep_verify.py [--size-mib 256] [--part-size-mib 100]
[--concurrency 4] [--repeat 5] [--json out.json]``. Exit status 1 when a target is missed: deep verify
wall ≤ 1.05× ``download_file``, peak RSS growth ≤ 100 MiB, and below ``download_file + md5sum``.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from measure import (
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
    measured,
    medians,
    noisy_count,
    print_child_result,
    run_measured_child,
    s3_client,
    scratch_dir,
    targets_table,
    write_json,
)

BUCKET = "kraken-bench-verify"
KEY = "bench/object.raw"
RANGE_SIZE = 8 * MIB

DEEP = "deep_verify"
DOWNLOAD = "download_file"
DOWNLOAD_MD5 = "download_file_md5sum"
METHODS = (DEEP, DOWNLOAD, DOWNLOAD_MD5)
LABELS = {
    DEEP: "deep verify (ranged GETs + MD5 + ETag, no disk)",
    DOWNLOAD: "boto3 download_file",
    DOWNLOAD_MD5: "boto3 download_file + md5sum",
}

WALL_RATIO_MAX = 1.05
RSS_GROWTH_MAX = 100 * MIB
VS_MD5SUM_MAX = 1.0  # strictly below download + md5sum


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size-mib",
        type=int,
        default=256,
        help="object size (default 256: moto copies the whole object for every ranged GET, so its time grows "
        "with the square of the size; 1 GiB takes two minutes per download)",
    )
    parser.add_argument(
        "--part-size-mib", type=int, default=100, help="part size of the upload and its ETag (default 100)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="ranged GETs in flight (default 4)")
    add_common_args(parser, repeat=5, repeat_help=": single runs spread by ±5 %%")
    parser.add_argument("--tmp-dir", type=Path, help="where to write files (a real disk; default $TMPDIR)")
    for name in ("--child", "--endpoint", "--dest", "--expected-md5", "--expected-etag", "--moto-pid"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- child side


def make_downloader(args: argparse.Namespace) -> Callable[[], str | None]:
    """Build the client and make one request first (lazy botocore loading is not what is compared)."""
    from boto3.s3.transfer import TransferConfig

    from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook
    from airflow_provider_kraken_s3.transfer.download import download_object, head_object

    part_size, concurrency = args.part_size_mib * MIB, args.concurrency
    if args.child == DEEP:
        access = KrakenS3Hook(aws_conn_id="aws_default").access()
        access.client.head_bucket(Bucket=BUCKET)

        def deep_verify() -> str | None:
            head = head_object(access, BUCKET, KEY)
            result = download_object(
                access,
                BUCKET,
                head,
                part_sizes=[part_size],
                range_size=RANGE_SIZE,
                max_concurrency=concurrency,
            )
            etag = result.etags.get(part_size, result.md5)
            if result.md5 != args.expected_md5 or etag != args.expected_etag or head.etag != etag:
                raise RuntimeError(f"deep verify computed MD5 {result.md5}, ETag {etag}: not the object's")
            return result.md5

        return deep_verify
    client = s3_client(args.endpoint)
    client.head_bucket(Bucket=BUCKET)
    transfer = TransferConfig(
        multipart_threshold=RANGE_SIZE, multipart_chunksize=RANGE_SIZE, max_concurrency=concurrency
    )

    def download() -> str | None:
        client.download_file(BUCKET, KEY, args.dest, Config=transfer)
        if args.child == DOWNLOAD_MD5:
            md5 = md5sum(Path(args.dest))
            if md5 != args.expected_md5:
                raise RuntimeError(f"md5sum says {md5}, expected {args.expected_md5}")
            return md5
        return None

    return download


def run_child(args: argparse.Namespace) -> None:
    """One download, its measurements printed as the last stdout line."""
    download = make_downloader(args)
    with measured(int(args.moto_pid)) as result:
        md5 = download()
    print_child_result({"method": args.child, **result, "md5": md5})


# ---------------------------------------------------------------------------------------------- parent


def run_download_child(setup: dict[str, Any], method: str) -> dict[str, Any]:
    dest = setup["directory"] / f"download-{uuid.uuid4().hex}.raw"
    command = [
        sys.executable, str(Path(__file__).resolve()),
        "--child", method,
        "--endpoint", setup["endpoint"],
        "--dest", str(dest),
        "--part-size-mib", str(setup["part_size_mib"]),
        "--concurrency", str(setup["concurrency"]),
        "--expected-md5", setup["md5"],
        "--expected-etag", setup["etag"],
        "--moto-pid", str(setup["moto_pid"]),
    ]  # fmt: skip
    try:
        return run_measured_child(command, setup["env"], method)
    finally:
        if dest.exists():
            evict_from_page_cache(dest)  # its dirty pages would otherwise be written during the next run
            dest.unlink()


def upload_object(endpoint: str, path: Path, part_size: int) -> str:
    """Put the test object once, as an uploader with ``part_size`` parts would; returns S3's ETag."""
    from boto3.s3.transfer import TransferConfig

    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET)
    config = TransferConfig(multipart_threshold=part_size, multipart_chunksize=part_size, max_concurrency=4)
    client.upload_file(str(path), BUCKET, KEY, Config=config)
    return client.head_object(Bucket=BUCKET, Key=KEY)["ETag"].strip('"')


FIELDS = ("wall_s", "cpu_s", "moto_cpu_s", "others_cpu_s", "minor_faults", "rss_before", "peak_rss",
          "rss_growth", "write_bytes", "wchar")  # fmt: skip


def result_table(table: dict[str, dict[str, float]], size: int) -> str:
    base = table[DOWNLOAD]["wall_s"]
    header = ["method (median)", "runs", "wall s", "MB/s", "wall ×download_file", "client CPU s",
              "RSS growth MiB", "written MiB", "moto CPU s"]  # fmt: skip
    rows = [
        [
            LABELS[method],
            f"{row['runs']:.0f}{' noisy' if row['noisy'] else ''}",
            f"{row['wall_s']:.2f}",
            f"{size / 1e6 / row['wall_s']:.0f}",
            f"{row['wall_s'] / base:.2f}",
            f"{row['cpu_s']:.2f}",
            f"{row['rss_growth'] / MIB:.1f}",
            f"{row['wchar'] / MIB:.0f}",
            f"{row['moto_cpu_s']:.2f}",
        ]
        for method, row in table.items()
    ]
    return markdown_table(header, rows)


def evaluate(table: dict[str, dict[str, float]]) -> list[Target]:
    deep, plain, with_md5 = table[DEEP], table[DOWNLOAD], table[DOWNLOAD_MD5]
    return [
        Target(
            "deep verify: wall vs download_file", deep["wall_s"] / plain["wall_s"], WALL_RATIO_MAX, False, "×"
        ),
        Target("deep verify: peak RSS growth MiB", deep["rss_growth"] / MIB, RSS_GROWTH_MAX / MIB, False, ""),
        Target(
            "deep verify: wall vs download_file + md5sum",
            deep["wall_s"] / with_md5["wall_s"],
            VS_MD5SUM_MAX,
            False,
            "×",
            strict=True,
        ),
    ]


def main(args: argparse.Namespace) -> int:
    size, part_size = args.size_mib * MIB, args.part_size_mib * MIB
    policy = NoisePolicy.from_args(args)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # kraken_standins: at the repository root
    from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag
    from kraken_standins.s3 import MotoServer

    with scratch_dir(args.tmp_dir) as directory:
        print(f"writing {size / MIB:.0f} MiB of random data to {directory} ...", file=sys.stderr, flush=True)
        path = make_test_file(directory, size)
        md5, _, _ = md5_pass(path)
        etag = compute_s3_etag(path, part_size)
        with MotoServer.start() as server:
            print("uploading the object once ...", file=sys.stderr, flush=True)
            stored = upload_object(server.url, path, part_size)
            if stored != etag:
                raise RuntimeError(f"moto stored ETag {stored}, the file's is {etag}")
            evict_from_page_cache(path)
            path.unlink()  # deep verify must not be able to lean on a local copy
            airflow_home = directory / "airflow-home"
            airflow_home.mkdir()
            setup = {
                "directory": directory,
                "endpoint": server.url,
                "env": child_env(server.url, airflow_home),
                "part_size_mib": args.part_size_mib,
                "concurrency": args.concurrency,
                "md5": md5,
                "etag": etag,
                "moto_pid": server.process.pid,
            }
            runs = interleaved_rounds(
                METHODS, args.repeat, lambda method: run_download_child(setup, method), LABELS, policy
            )
    table = medians(runs, FIELDS)
    targets = evaluate(table)
    print()
    print(
        f"{size / MIB:.0f} MiB random object ({args.part_size_mib} MiB parts), {RANGE_SIZE // MIB} MiB ranges, "
        f"concurrency {args.concurrency} for both downloaders, median of {args.repeat} run(s) each in a fresh "
        f"process, one moto_server on loopback; {context_sentence(noisy_count(*runs.values()))}"
    )
    print()
    print(result_table(table, size))
    print()
    print(targets_table(targets))
    write_json(
        args.json,
        args,
        object_size=size,
        runs=runs,
        median=table,
        targets=[t.as_dict() for t in targets],
    )
    return 0 if all(t.passed for t in targets) else 1


if __name__ == "__main__":
    arguments = parse_args()
    if arguments.child:
        run_child(arguments)
    else:
        sys.exit(main(arguments))
