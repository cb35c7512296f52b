"""verified_cleanup: free instrument disk space, but only for raw files whose S3 backup is verified.

The pattern for alphakraken's file remover. Trigger with, for example::

    airflow dags trigger verified_cleanup -c '{"raw_file_ids": ["20240101_astral1_sample.raw"],
        "instrument_base_path": "/fs/instruments/astral1/Data", "dry_run": false}'

For each raw file (one mapped task group per id) :class:`S3BackupVerifiedSensor` waits, in reschedule
mode so no worker slot is held, until the RawFile is DONE and every object is in S3 with its recorded ETag
and size. Only then does ``delete_local_copy`` remove the instrument's copy of exactly the files listed in
``file_info``, under ``instrument_base_path``. Paths that would leave that folder (``..``, absolute paths,
symlinks pointing elsewhere) and files whose size differs from the verified object are refused, for that
raw file, before anything is deleted. A backup that S3 contradicts fails its sensor, so its files stay.

``dry_run`` (default ``true``) only logs what would be deleted, with sizes.

alphakraken's ``backup.purging_verification_type`` is honoured, read from the YAML named by the
``KRAKEN_SETTINGS_PATH`` environment variable when the DAG is parsed (as alphakraken reads its settings):
``s3`` (the default) gates every deletion on the sensor; ``force_local`` deletes without asking S3, with a
loud warning in the log; ``local`` with ``backup_type: s3`` is refused, as alphakraken refuses it.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.providers.common.compat.sdk import (
    DAG,
    AirflowFailException,
    Param,
    get_current_context,
    task,
    task_group,
)

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.layout import local_path
from airflow_provider_kraken_s3.core.settings import (
    check_purging_verification_type,
    load_settings_file,
    parse_settings_mapping,
)
from airflow_provider_kraken_s3.hooks.kraken_mongo import connect
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.sensors.backup_verified import S3BackupVerifiedSensor

log = logging.getLogger(__name__)

DAG_ID = "verified_cleanup"
MONGO_CONN_ID = "kraken_mongo_default"
AWS_CONN_ID = "aws_default"
# A backup normally finishes within hours of the acquisition; the sensor checks every 10 minutes and
# gives up (failing the task, so someone looks) after a day.
POKE_INTERVAL = timedelta(minutes=10)
VERIFY_TIMEOUT = timedelta(days=1)


def purging_verification_type(settings_path: str | None) -> str:
    """``s3`` or ``force_local`` from alphakraken's YAML (``s3`` without one); anything else is refused."""
    if not settings_path:
        return "s3"
    parsed = parse_settings_mapping(load_settings_file(settings_path))
    value = check_purging_verification_type(
        parsed["purging_verification_type"] or "s3", parsed["backup_type"] or "s3"
    )
    if value == "local":
        raise InvalidInputError(
            f"{settings_path}: purging_verification_type 'local' checks the local backup, not S3; this DAG gates "
            "deletion on S3. Use alphakraken's own file remover for local backups."
        )
    return value


PURGING_VERIFICATION = purging_verification_type(os.environ.get("KRAKEN_SETTINGS_PATH"))


def plan_local_deletion(
    instrument_base_path: str, verification: dict[str, Any]
) -> tuple[list[tuple[Path, int]], list[str], list[str]]:
    """Which local files to delete for one verified raw file: ``(files with sizes, already gone, problems)``.

    Only objects the sensor verified are considered, each by its ``file_info`` path relative to
    ``instrument_base_path``. A problem (a path outside the base folder, a symlink leading out of it, a
    directory where a file should be, a size other than the verified object's) means nothing of this raw
    file may be deleted.
    """
    base = Path(instrument_base_path)
    base_resolved = base.resolve()
    files: list[tuple[Path, int]] = []
    gone: list[str] = []
    problems: list[str] = []
    objects = verification.get("objects") or []
    if not objects:
        problems.append("the verification lists no objects")
    for item in objects:
        relative = item.get("path")
        if not relative:
            problems.append(f"object {item.get('key')!r} has no file_info path (explicit-keys verification?)")
            continue
        try:
            path = local_path(instrument_base_path, relative)
        except InvalidInputError as error:
            problems.append(f"refusing {relative!r}: {error}")
            continue
        if not path.exists() and not path.is_symlink():
            gone.append(str(path))
            continue
        if not path.resolve().is_relative_to(base_resolved):
            problems.append(f"refusing {path}: it resolves to {path.resolve()}, outside {base_resolved}")
            continue
        if path.is_symlink() or not path.is_file():
            problems.append(f"refusing {path}: not a regular file")
            continue
        size = path.stat().st_size
        if size != item.get("size"):
            problems.append(
                f"refusing {path}: {size} bytes locally but the verified object {item.get('key')!r} has "
                f"{item.get('size')} bytes; the local copy is not the one backed up"
            )
            continue
        files.append((path, size))
    return files, gone, problems


def _remove_empty_parents(path: Path, base: Path) -> None:
    """Remove directories left empty by the deletion (a ``.d`` folder), never ``base`` itself."""
    parent = path.parent
    while parent != base and parent.is_relative_to(base):
        try:
            parent.rmdir()
        except OSError:  # not empty (or not ours to remove): stop here
            return
        parent = parent.parent


with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    tags=["kraken", "s3", "cleanup"],
    params={
        "raw_file_ids": Param(
            [], type="array", items={"type": "string"}, description="RawFile ids to clean up"
        ),
        "dry_run": Param(True, type="boolean", description="only log what would be deleted"),
        "instrument_base_path": Param(
            "/fs/instruments/astral1/Data",
            type="string",
            minLength=1,
            description="folder on the instrument share that file_info paths are relative to",
        ),
    },
) as dag:

    @task
    def raw_file_ids_to_clean() -> list[str]:
        """The ids from the run's conf, validated (one mapped task group each)."""
        ids = get_current_context()["params"]["raw_file_ids"]
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise AirflowFailException(f"raw_file_ids must be a list of non-empty strings, got {ids!r}")
        if len(set(ids)) != len(ids):
            raise AirflowFailException(f"raw_file_ids lists an id more than once: {ids}")
        log.info("cleaning up %d raw file(s): %s", len(ids), ids)
        return ids

    @task
    def delete_local_copy(verification: dict[str, Any]) -> dict[str, Any]:
        """Delete (or, in a dry run, list) the instrument's copy of one verified raw file."""
        params = get_current_context()["params"]
        base, dry_run = params["instrument_base_path"], bool(params["dry_run"])
        raw_file_id = verification["raw_file_id"]
        files, gone, problems = plan_local_deletion(base, verification)
        if problems:
            raise AirflowFailException(f"not deleting anything of {raw_file_id!r}: " + "; ".join(problems))
        for path in gone:
            log.info("%s: already gone", path)
        total = sum(size for _, size in files)
        verb = "DRY RUN: would delete" if dry_run else "deleting"
        for path, size in files:
            log.info("%s %s (%d bytes)", verb, path, size)
            if not dry_run:
                path.unlink()
                _remove_empty_parents(path, Path(base))
        log.info(
            "%s %d file(s), %d bytes of %r (backup verified in s3://%s/ at %s)",
            "DRY RUN: would delete" if dry_run else "deleted",
            len(files),
            total,
            raw_file_id,
            verification["bucket"],
            verification["verified_at"],
        )
        return {
            "raw_file_id": raw_file_id,
            "dry_run": dry_run,
            "files": [str(path) for path, _ in files],
            "bytes": total,
            "already_gone": gone,
        }

    @task
    def unverified_inventory(raw_file_id: str) -> dict[str, Any]:
        """force_local: the RawFile's inventory as the sensor would return it, but nothing checked in S3."""
        log.warning(
            "purging_verification_type is force_local: the instrument files of %r are deleted WITHOUT checking "
            "their S3 backup. Set it to s3 in the settings YAML to gate deletion on a verified backup.",
            raw_file_id,
        )
        connect(MONGO_CONN_ID)
        raw_file = store.get_raw_file(raw_file_id)
        objects = [{"path": path, "size": entry[0]} for path, entry in (raw_file.file_info or {}).items()]
        return {
            "bucket": raw_file.s3_bucket or "-",
            "raw_file_id": raw_file_id,
            "objects": objects,
            "verified_at": "never (force_local)",
        }

    @task_group(group_id="clean_up")
    def clean_up(raw_file_id: str) -> None:
        if PURGING_VERIFICATION == "force_local":
            delete_local_copy(unverified_inventory(raw_file_id))
            return
        verified = S3BackupVerifiedSensor(
            task_id="verify_backup",
            raw_file_id=raw_file_id,
            mongo_conn_id=MONGO_CONN_ID,
            aws_conn_id=AWS_CONN_ID,
            mode="reschedule",
            poke_interval=POKE_INTERVAL,
            timeout=VERIFY_TIMEOUT,
        )
        delete_local_copy(verified.output)

    clean_up.expand(raw_file_id=raw_file_ids_to_clean())
