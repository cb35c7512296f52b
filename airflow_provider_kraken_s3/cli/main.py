"""``kraken-s3``: check, audit and restore raw-file backups from a shell, with Airflow's connections.

A thin face like the operators: every subcommand parses its arguments, builds the connections from Airflow
(``--aws-conn-id``, ``--mongo-conn-id``, so it runs wherever Airflow runs and reads the same secrets), calls
one Airflow-free service, and prints the result for people or, with ``--json``, as JSON lines for scripts.
Exit codes are :class:`~.output.ExitCode`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_provider_kraken_s3.cli import commands
from airflow_provider_kraken_s3.cli.output import ExitCode, Output
from airflow_provider_kraken_s3.core.errors import (
    IntegrityError,
    InvalidInputError,
    KrakenBackupError,
    LocalFileChangedError,
    ObjectConflictError,
    PermanentBackupError,
)
from airflow_provider_kraken_s3.core.parts import DEFAULT_PART_SIZE, MIB, check_part_size

EPILOG = """\
exit codes:
  0  everything checked is as it should be
  1  a backup is missing, differs or failed verification (see the report)
  2  bad arguments
  3  could not check: S3 or MongoDB unreachable, a bad connection, no such RawFile
  4  objects are in an archive storage class (GLACIER, DEEP_ARCHIVE): restore them from the archive first
  5  audit: no record matched, so nothing was checked (--allow-empty makes that 0)

Connections are Airflow connections (an 'aws' one for S3, a 'kraken_mongo' one for alphakraken's MongoDB),
resolved as in a task: environment variables AIRFLOW_CONN_<ID>, a secrets backend, or the metadata database.
"""


def _part_size_mib(text: str) -> int:
    """``--part-size`` in MiB, refused by argparse (exit 2) when S3 could not use it."""
    try:
        return check_part_size(int(text) * MIB) // MIB
    except (ValueError, InvalidInputError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a part size S3 accepts: a whole number of MiB from 5 to 5120"
        ) from None


def _utc_date(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date of the form YYYY-MM-DD") from None


def _connection_flags(parser: argparse.ArgumentParser, *, mongo: bool = True) -> None:
    parser.add_argument(
        "--aws-conn-id", default="aws_default", help="Airflow 'aws' connection (default: %(default)s)"
    )
    if mongo:
        parser.add_argument(
            "--mongo-conn-id",
            default="kraken_mongo_default",
            help="Airflow connection of alphakraken's MongoDB (default: %(default)s)",
        )


def _output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print JSON lines (one per result) instead of tables"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no progress bars (they only show on a terminal)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also print what the services log")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kraken-s3",
        description="Check, audit and restore S3 backups of mass-spectrometry raw files (alphakraken RawFiles).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    etag = sub.add_parser(
        "etag",
        help="the ETag S3 will report for local files (and alphakraken's '<etag>__<MiB>' form)",
        description="Compute, from the bytes of each file, its MD5, the multipart ETag S3 reports for it when "
        "uploaded with the given part size, and the full-object CRC64NVME S3 keeps beside it (the proof on "
        "SSE-KMS and SSE-C buckets, where the ETag is no MD5). A folder (a Bruker .d set) stands for every file in it, as the "
        "backup uploads them. Reads each file once; needs no connection. A file that cannot be read is "
        "reported (exit 3) and the others are still shown.",
    )
    etag.add_argument("files", nargs="+", type=Path, metavar="FILE_OR_FOLDER")
    etag.add_argument(
        "--part-size",
        type=_part_size_mib,
        default=DEFAULT_PART_SIZE // MIB,
        metavar="MIB",
        help="part size in MiB (default %(default)s, this provider's; alphakraken's own uploader uses 100)",
    )
    _output_flags(etag)

    verify = sub.add_parser(
        "verify",
        help="verify one raw file's backup: HEAD (ETag and size), or --deep (download and hash)",
        description="Without --deep: the sensor's check, from S3's ETags and sizes (no download). With --deep: "
        "every object is downloaded (parallel ranged GETs, nothing written to disk) and its MD5 and ETag are "
        "computed from the bytes and compared with the inventory; the outcome is recorded on the RawFile.",
    )
    verify.add_argument("raw_file_id", metavar="RAW_FILE_ID")
    verify.add_argument("--deep", action="store_true", help="download and hash every object (fixity check)")
    _connection_flags(verify)
    _output_flags(verify)

    restore = sub.add_parser(
        "restore",
        help="restore a raw file's files from S3 into a folder, verified against the inventory",
        description="Download every file of the raw file into DEST at its inventory path. Each file is written "
        "to a temporary name beside its target, verified (MD5 and ETag against the inventory) and only then "
        "renamed into place (fsynced). An interrupted restore continues where it stopped when run again. "
        "Existing files are never replaced unless --overwrite.",
    )
    restore.add_argument("raw_file_id", metavar="RAW_FILE_ID")
    restore.add_argument("destination", type=Path, metavar="DEST")
    restore.add_argument("--overwrite", action="store_true", help="replace existing files that differ")
    _connection_flags(restore)
    _output_flags(restore)

    audit = sub.add_parser(
        "audit",
        help="check every upload_done record against S3 (HEAD/listing): missing, different, extra objects",
        description="For each RawFile recorded upload_done (optionally filtered), ask S3 for its objects (one "
        "listing per .d/.wiff set, a HEAD per single file, in parallel) and compare ETag and size with the "
        "record. Objects under a set's folder that the inventory does not name are reported as extra. Nothing "
        "is downloaded or written. Exit 1 when anything is wrong.",
    )
    audit.add_argument(
        "--project", action="append", default=[], metavar="ID", help="only this project (repeatable)"
    )
    audit.add_argument(
        "--instrument", action="append", default=[], metavar="ID", help="only this instrument (repeatable)"
    )
    audit.add_argument(
        "--since", type=_utc_date, metavar="YYYY-MM-DD", help="created on or after this day (UTC)"
    )
    audit.add_argument("--until", type=_utc_date, metavar="YYYY-MM-DD", help="created before this day (UTC)")
    audit.add_argument("--all", action="store_true", help="list the objects that are ok too")
    audit.add_argument("--workers", type=int, default=8, help="records checked at once (default %(default)s)")
    audit.add_argument(
        "--allow-empty",
        action="store_true",
        help="exit 0 when no record matches (by default that is exit 5: an audit that checked nothing)",
    )
    _connection_flags(audit)
    _output_flags(audit)

    reconcile = sub.add_parser(
        "reconcile",
        help="fail records stuck upload_in_progress past their lease; list (or abort) orphan multipart uploads",
        description="Records whose attempt died (lease expired, no outcome) are marked upload_failed with the "
        "reason; their multipart uploads are kept for the next attempt. Incomplete multipart uploads that no "
        "RawFile references and that are older than --older-than days are listed, and aborted only with "
        "--abort-orphans. Listing them needs s3:ListBucketMultipartUploads, aborting s3:AbortMultipartUpload.",
    )
    reconcile.add_argument("--abort-orphans", action="store_true", help="abort the orphan uploads found")
    reconcile.add_argument(
        "--older-than",
        type=float,
        default=7.0,
        metavar="DAYS",
        help="orphan age threshold (default %(default)s)",
    )
    reconcile.add_argument(
        "--bucket", action="append", default=[], help="also look in this bucket (besides those records name)"
    )
    reconcile.add_argument("--dry-run", action="store_true", help="change nothing; say what would be done")
    _connection_flags(reconcile)
    _output_flags(reconcile)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kraken-s3`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    out = Output(as_json=args.json, progress=not args.no_progress, answers=sys.stdout)
    handler: Any = getattr(commands, args.command)
    try:
        # Airflow 3 logs to stdout; the answers keep it to themselves.
        with (
            contextlib.redirect_stdout(sys.stderr),
            _quiet(args.verbose, needs_airflow=args.command != "etag"),
        ):
            return int(handler(args, out))
    except PermanentBackupError as error:
        out.note(f"error: {error}")
        return ExitCode.PROBLEM if _is_about_the_backup(error) else ExitCode.UNAVAILABLE
    except KrakenBackupError as error:  # transient: S3 or MongoDB did not answer properly
        out.note(f"error (try again later): {error}")
        return ExitCode.UNAVAILABLE
    except KeyboardInterrupt:
        out.note("interrupted")
        return 130


@contextlib.contextmanager
def _quiet(verbose: bool, *, needs_airflow: bool) -> Iterator[None]:
    """What a command says on stderr: our warnings, and with ``-v`` our INFO lines and Airflow's own.

    Importing Airflow configures logging (its handlers, levels and, on 3.x, structlog) and shows its
    deprecation warnings; so it is imported first, when the command needs it, and ours is set up after.
    Without ``-v`` Airflow's loggers say nothing below CRITICAL and Python warnings are not shown: a person
    running ``kraken-s3 audit`` cannot act on either.
    """
    with warnings.catch_warnings():
        if needs_airflow:
            # Airflow 2 shows its deprecations while it is imported, on stderr, whatever the filters say.
            with contextlib.nullcontext() if verbose else contextlib.redirect_stderr(io.StringIO()):
                importlib.import_module("airflow.settings")  # configures Airflow's logging, replaced below
        if not verbose:
            warnings.simplefilter("ignore")  # ahead of the filters Airflow's import added
        root = logging.getLogger()
        kept_handlers, kept_level = root.handlers[:], root.level
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.handlers = [handler]
        root.setLevel(logging.INFO if verbose else logging.WARNING)
        silenced = {}
        if not verbose:
            for name in [*logging.root.manager.loggerDict, "airflow"]:
                if name.split(".")[0] == "airflow":
                    logger = logging.getLogger(name)
                    silenced[name] = logger.level
                    logger.setLevel(logging.CRITICAL)
        with _structlog_level(None if verbose else logging.WARNING):
            try:
                yield
            finally:  # as it was (the command may run inside another program: the demo, the tests)
                for name, level in silenced.items():
                    logging.getLogger(name).setLevel(level)
                root.handlers, root.level = kept_handlers, kept_level


@contextlib.contextmanager
def _structlog_level(level: int | None) -> Iterator[None]:
    """Airflow 3's hooks log through structlog, not ``logging``: only ``level`` and above while it lasts
    (``None``: as Airflow configured it). Airflow 2 does not use structlog."""
    try:
        import structlog
    except ImportError:  # Airflow 2 runs without it
        yield
        return
    if level is None or not structlog.is_configured():
        yield
        return
    configured = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    try:
        yield
    finally:
        structlog.configure(**configured)


def _is_about_the_backup(error: PermanentBackupError) -> bool:
    """Errors that prove something wrong with a backup's bytes, not with where or how we looked."""
    return isinstance(error, (IntegrityError, ObjectConflictError, LocalFileChangedError))


if __name__ == "__main__":
    sys.exit(main())
