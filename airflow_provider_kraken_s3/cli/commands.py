"""The ``kraken-s3`` subcommands: one function per command, named as the command, returning its exit code.

Each builds its connections from Airflow, calls one service and hands the result to :class:`~.output.Output`.
Errors of our own (:class:`~..core.errors.KrakenBackupError`) are left to :func:`~.main.main`, which turns
them into a message and an exit code.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from airflow_provider_kraken_s3.cli.output import ExitCode, Output
from airflow_provider_kraken_s3.core.errors import PermanentBackupError
from airflow_provider_kraken_s3.core.etag import format_precomputed_etag
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.core.verdict import SensorStep, conclude, verify_objects
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_digests


class ConnectionNotDefinedError(PermanentBackupError):
    """An Airflow connection named on the command line (or its default) does not exist anywhere Airflow looks."""


#: What a connection of each kind looks like, for the message saying how to define a missing one.
_CONNECTION_EXAMPLES = {
    "aws": '{"conn_type": "aws", "login": "<access key id>", "password": "<secret key>", '
    '"extra": {"endpoint_url": "https://s3.example.org", "region_name": "eu-central-1"}}',
    "kraken_mongo": '{"conn_type": "kraken_mongo", "host": "mongo.example.org", "schema": "krakendb", '
    '"login": "kraken", "password": "<password>"}',
}


def require_connection(conn_id: str, conn_type: str, flag: str) -> None:
    """Refuse a connection id Airflow does not know, naming it and how to define it.

    The Amazon provider only warns about a missing ``aws`` connection and goes on with boto3's default
    credentials, which may well reach *some* S3: an audit would then answer about the wrong store.
    """
    from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        variable = "AIRFLOW_CONN_" + re.sub(r"[^0-9A-Za-z]", "_", conn_id).upper()
        raise ConnectionNotDefinedError(
            f"Airflow connection {conn_id!r} ({flag}) is not defined; define it, e.g. "
            f"export {variable}='{_CONNECTION_EXAMPLES[conn_type]}' (or `airflow connections add {conn_id} "
            f"--conn-type {conn_type} ...`, or in your secrets backend), or pass {flag} with one that exists"
        ) from None


def _hooks(args: argparse.Namespace) -> tuple[S3Access, Callable[[str], str]]:
    """The S3 access and the MongoDB connector for the command's Airflow connections (imported late: Airflow
    takes seconds to import, and ``etag`` needs neither)."""
    from airflow_provider_kraken_s3.hooks.kraken_mongo import connect
    from airflow_provider_kraken_s3.hooks.kraken_s3 import KrakenS3Hook

    require_connection(args.mongo_conn_id, "kraken_mongo", "--mongo-conn-id")
    require_connection(args.aws_conn_id, "aws", "--aws-conn-id")
    connect(args.mongo_conn_id)
    return KrakenS3Hook(aws_conn_id=args.aws_conn_id).access(), connect


def files_to_hash(path: Path) -> list[tuple[Path, str]]:
    """``(file, name shown)`` for one ``etag`` argument: the file itself, or every file of a folder (a
    Bruker ``.d`` set), sorted, named as alphakraken's inventory names them (``run.d/analysis.tdf``)."""
    if not path.is_dir():
        return [(path, str(path))]
    found = []
    for folder, _, names in os.walk(path):
        for name in names:
            item = Path(folder, name)
            found.append((item, str(item.relative_to(path.parent))))
    return sorted(found, key=lambda pair: pair[1])


def etag(args: argparse.Namespace, out: Output) -> ExitCode:
    """MD5, S3 ETag and full-object CRC64NVME of local files (every file of a folder), from one read of each.

    The CRC64NVME is what S3 keeps beside the ETag of our uploads (``ChecksumCRC64NVME`` on a HEAD with
    checksum mode): the value to compare with on an SSE-KMS or SSE-C bucket, where the ETag is no MD5.

    A file that cannot be read is named on stderr (and as an ``error`` line in ``--json``); the others are
    still hashed and shown, and the exit code says that not all could be.
    """
    part_size = args.part_size * MIB
    blocks = []
    unreadable = 0
    for argument in args.files:
        files = files_to_hash(argument)
        if not files:
            out.note(f"error: {argument} is a folder without files: nothing to hash")
            out.record({"path": str(argument), "error": "a folder without files"})
            unreadable += 1
        for path, shown in files:
            try:
                size = os.stat(path).st_size
                with out.bytes_progress(f"hashing {path.name}", size) as advance:
                    digests = compute_s3_digests(path, part_size, on_bytes=advance)
            except OSError as error:
                reason = error.strerror or str(error)
                out.note(f"error: cannot read {path}: {reason}")
                out.record({"path": str(path), "error": reason})
                unreadable += 1
                continue
            alphakraken = format_precomputed_etag(digests.etag, part_size)
            crc = digests.checksum
            out.record(
                {"path": str(path), "size": size, "md5": digests.md5, "etag": digests.etag,
                 "part_size_mib": part_size // MIB, "alphakraken_etag": alphakraken,
                 "checksum": {"algorithm": crc.algorithm, "value": crc.value}}
            )  # fmt: skip
            blocks.append(
                (shown, [("bytes", f"{size:,}"), ("MD5", digests.md5), ("ETag", digests.etag),
                         ("alphakraken file_info[2]", alphakraken), (crc.algorithm, crc.value)])
            )  # fmt: skip
    if blocks:
        out.fields(f"S3 ETags at {part_size // MIB} MiB parts", blocks)
    return ExitCode.UNAVAILABLE if unreadable else ExitCode.OK


def verify(args: argparse.Namespace, out: Output) -> ExitCode:
    """Is the raw file's backup in S3 as its RawFile says? HEAD/listing only, or ``--deep``."""
    if args.deep:
        return _deep_verify(args, out)
    from airflow_provider_kraken_s3.services.verify import (
        VerificationRound,
        fetch_remote,
        objects_to_check,
        read_raw_file_record,
    )

    access, connect = _hooks(args)
    record = read_raw_file_record(connect, args.mongo_conn_id, args.raw_file_id)
    target = objects_to_check(record, VerificationRound(raw_file_id=record.id, fail_on_failed=True))
    if isinstance(target, tuple):
        bucket, objects = target
        outcome = conclude(
            verify_objects(objects, fetch_remote(access, bucket, objects)),
            bucket=bucket,
            raw_file_id=record.id,
        )
    else:
        outcome = target
    verified = outcome.action is SensorStep.SUCCESS
    objects_seen = (outcome.xcom or {}).get("objects", [])
    out.record(
        {"raw_file_id": record.id, "verified": verified, "message": outcome.message, "objects": objects_seen}
    )
    if verified:
        out.table(
            f"{record.id}: {outcome.message}",
            ("key", "bytes", "ETag"),
            [(item["key"], f"{item['size']:,}", item["etag"]) for item in objects_seen],
            whole=("ETag",),
        )
        return ExitCode.OK
    out.say(f"{record.id}: NOT verified: {outcome.message}")
    return ExitCode.PROBLEM


def _inventory_bytes(raw_file_id: str) -> int:
    """The raw file's size from its inventory: the total of a progress bar (0 when unreadable)."""
    from airflow_provider_kraken_s3.records import store

    file_info = store.read_fields(raw_file_id, "file_info").get("file_info") or {}
    return sum(int(entry[0]) for entry in file_info.values() if entry and str(entry[0]).isdigit())


def _deep_verify(args: argparse.Namespace, out: Output) -> ExitCode:
    """Download and hash every object (nothing written to disk); the outcome is recorded on the RawFile."""
    from airflow_provider_kraken_s3.core.deep_verify import DeepVerifyOutcome
    from airflow_provider_kraken_s3.services.deep_verify import deep_verify_raw_file

    access, _ = _hooks(args)
    with out.bytes_progress(
        f"deep-verifying {args.raw_file_id}", _inventory_bytes(args.raw_file_id)
    ) as advance:
        report = deep_verify_raw_file(access, args.raw_file_id, progress=advance)
    out.record(report.as_dict())
    out.table(
        report.summary(),
        ("key", "outcome", "bytes read", "seconds", "detail"),
        [
            (item.key, item.outcome.value, f"{item.bytes:,}", f"{item.seconds:.1f}", item.detail)
            for item in report.objects
        ],
    )
    return {
        DeepVerifyOutcome.OK: ExitCode.OK,
        DeepVerifyOutcome.DIFFERS: ExitCode.PROBLEM,
        DeepVerifyOutcome.MISSING: ExitCode.PROBLEM,
        DeepVerifyOutcome.UNVERIFIED: ExitCode.UNAVAILABLE,
        DeepVerifyOutcome.NEEDS_RESTORE: ExitCode.NEEDS_RESTORE,
    }[report.outcome]


def restore(args: argparse.Namespace, out: Output) -> ExitCode:
    """Every file of a raw file from S3 into DEST, verified before it is put in place; resumable."""
    from airflow_provider_kraken_s3.services.restore import RestoreOutcome, restore_raw_file

    access, _ = _hooks(args)
    with out.bytes_progress(f"restoring {args.raw_file_id}", _inventory_bytes(args.raw_file_id)) as advance:
        report = restore_raw_file(
            access, args.raw_file_id, args.destination, overwrite=args.overwrite, progress=advance
        )
    out.record(report.as_dict())
    out.table(
        report.summary(),
        ("file", "outcome", "bytes downloaded", "resumed from"),
        [
            (item.path, item.outcome.value, f"{item.bytes:,}", f"{item.resumed_from:,}")
            for item in report.files
        ],
    )
    for problem in report.problems():
        out.say(f"  {problem}")
    outcomes = {item.outcome for item in report.files}
    if report.ok:
        return ExitCode.OK
    if outcomes & {RestoreOutcome.FAILED, RestoreOutcome.MISSING, RestoreOutcome.EXISTS}:
        return ExitCode.PROBLEM
    return ExitCode.NEEDS_RESTORE


def audit(args: argparse.Namespace, out: Output) -> ExitCode:
    """Every matching ``upload_done`` record against S3; exit 1 when anything is missing, differs or is extra."""
    from airflow_provider_kraken_s3.core.audit import render_json_lines, render_table
    from airflow_provider_kraken_s3.records.queries import RecordFilter
    from airflow_provider_kraken_s3.services.audit import run_audit

    access, _ = _hooks(args)
    record_filter = RecordFilter(
        project_ids=tuple(args.project),
        instrument_ids=tuple(args.instrument),
        created_from=args.since,
        created_before=args.until,
    )
    with out.count_progress("auditing raw files") as advance:
        report = run_audit(
            access,
            record_filter,
            max_workers=args.workers,
            keep_ok=args.all or args.json,
            on_record=lambda _audit: advance(),
        )
    if out.as_json:
        out.answers.write(render_json_lines(report.findings, report.summary))
    else:
        out.text(render_table(report.findings, report.summary, include_ok=args.all))
    if report.summary.records == 0 and not args.allow_empty:
        out.note(
            "warning: no upload_done raw file matched, so nothing was checked. Check the filters and the "
            f"connection (--mongo-conn-id {args.mongo_conn_id}); pass --allow-empty when none is expected."
        )
        return ExitCode.NOTHING_CHECKED
    if report.ok:
        return ExitCode.OK
    return ExitCode.PROBLEM if report.summary.wrong else ExitCode.UNAVAILABLE


def reconcile(args: argparse.Namespace, out: Output) -> ExitCode:
    """Stuck records → ``upload_failed``; orphan multipart uploads listed (aborted with ``--abort-orphans``)."""
    from airflow_provider_kraken_s3.services.reconcile import Reconciler

    access, _ = _hooks(args)
    report = Reconciler(
        access,
        buckets=args.bucket,
        orphan_age=timedelta(days=args.older_than),
        abort=args.abort_orphans,
        dry_run=args.dry_run,
    ).run()
    out.record(report.as_dict())
    out.text(report.describe() + "\n")
    return ExitCode.OK if report.ok else ExitCode.UNAVAILABLE
