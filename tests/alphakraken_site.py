"""A deployment shaped like alphakraken's, for tests: their YAML, their records, their alert's query.

- The YAML has ``locations.backup.absolute_path`` (the cluster's path of the backup pool) and their
  ``backup`` section; the files live under another folder (the worker's mount of that pool).
- Records are inserted the way their acquisition handler leaves them (``update_raw_file`` after
  ``copy_raw_file``): ``backup_base_path`` is ``<absolute_path>/<instrument_id>/<YYYY_MM>``, ``file_info``
  holds ``[size, md5, "<etag>__100"]`` (``[size, md5]`` for legacy entries), ``updated_at_`` is aware UTC;
  ``SKIP_COPYING`` leaves ``backup_base_path=""`` and ``backup_status="skipped"``.
- :class:`TheirRawFile` and :func:`recent_upload_failures` are the query of their ``S3UploadFailureAlert``.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, ClassVar

from mongoengine import DateTimeField, Document, StringField

from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.records.models import KRAKEN_DB_ALIAS, RAW_FILE_COLLECTION, RawFile
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag

#: the cluster's path of the backup pool in their production YAML; nothing exists there on a test machine
CLUSTER_ROOT = "/fs/pool-1/backup"
THEIR_CHUNK = 100 * MIB
#: their monitoring's window: CHECK_INTERVAL_SECONDS * 5
ALERT_WINDOW = timedelta(seconds=60 * 5)


def settings_yaml(
    worker_root: Path | None, *, bucket_prefix: str, backup_type: str | None = "s3", region: str = "us-east-1"
) -> str:
    """Their ``envs/alphakraken.<env>.yaml`` (the parts that matter), plus our ``backup.worker_backup_path``."""
    lines = [
        "instruments:",
        "  astral1:",
        "    type: thermo",
        "locations:",
        "  general:",
        "    mounts_path: /home/kraken-user/alphakraken/production/mounts",
        "  backup:",
        "    username: kraken-write",
        "    mount_src: //samba-pool-1/pool-1",
        "    mount_target: backup",
        f"    absolute_path: {CLUSTER_ROOT}",
        "backup:",
    ]
    if backup_type is not None:
        lines.append(f"  backup_type: {backup_type}")
    lines.append("  purging_verification_type: s3")
    if worker_root is not None:
        lines.append(f"  worker_backup_path: {worker_root}")
    lines += [
        "  s3:",
        f"    region: {region}",
        f"    bucket_prefix: {bucket_prefix}",
        "    auto_create_buckets: false",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Acquisition:
    raw_file_id: str
    cluster_path: str
    worker_path: Path
    file_info: dict[str, list[Any]]


def month_of(created_at: datetime) -> str:
    return f"{created_at:%Y_%m}"


def their_acquisition(
    worker_root: Path,
    raw_file_id: str,
    sizes: dict[str, int],
    *,
    instrument_id: str = "astral1",
    project_id: str | None = "P1234",
    created_at: datetime = datetime(2026, 11, 3, 9, 30, tzinfo=timezone.utc),
    legacy: bool = False,
    **fields: Any,
) -> Acquisition:
    """Files under the worker's mount and the RawFile their handler writes after a verified copy."""
    relative_base = f"{instrument_id}/{month_of(created_at)}"
    worker_path = worker_root / relative_base
    file_info: dict[str, list[Any]] = {}
    for index, (relative, size) in enumerate(sizes.items()):
        path = worker_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = random.Random(f"{raw_file_id}/{index}").randbytes(size)
        path.write_bytes(data)
        entry: list[Any] = [size, hashlib.md5(data).hexdigest()]
        if not legacy:
            entry.append(f"{compute_s3_etag(path, THEIR_CHUNK)}__{THEIR_CHUNK // MIB}")
        file_info[relative] = entry
    cluster_path = f"{CLUSTER_ROOT}/{relative_base}"
    insert_their_record(
        raw_file_id,
        instrument_id=instrument_id,
        project_id=project_id,
        created_at=created_at,
        size=sum(sizes.values()),
        backup_base_path=cluster_path,
        backup_status="copying_done",
        file_info=file_info,
        **fields,
    )
    return Acquisition(raw_file_id, cluster_path, worker_path, file_info)


def insert_their_record(raw_file_id: str, **fields: Any) -> dict[str, Any]:
    """A RawFile document with every field their model writes (``strict: False``: ours ignores most)."""
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    document: dict[str, Any] = {
        "_id": raw_file_id,
        "collision_flag": None,
        "original_name": raw_file_id,
        "instrument_id": "astral1",
        "project_id": "P1234",
        "status": "copying_done",
        "status_details": None,
        "size": 0,
        "backup_base_path": "",
        "backup_status": None,
        "s3_upload_path": None,
        "instrument_file_status": "initial",
        "file_info": {},
        "created_at": datetime(2026, 11, 3, 9, 30, tzinfo=timezone.utc),
        "created_at_": an_hour_ago,
        "updated_at_": an_hour_ago,
        **fields,
    }
    RawFile._get_collection().insert_one(document)
    return document


def their_skipped_copy(raw_file_id: str, **fields: Any) -> dict[str, Any]:
    """What ``copy_raw_file`` leaves with ``SKIP_COPYING``: no backup path, ``backup_status: skipped``."""
    return insert_their_record(
        raw_file_id,
        backup_base_path="",
        backup_status="skipped",
        file_info={raw_file_id: [10, "0" * 32, f"{'0' * 32}__100"]},
        **fields,
    )


class TheirRawFile(Document):
    """Their model's view of the fields their S3 upload failure alert reads."""

    meta: ClassVar[dict[str, Any]] = {
        "collection": RAW_FILE_COLLECTION,
        "strict": False,
        "db_alias": KRAKEN_DB_ALIAS,
        "auto_create_index": False,
    }
    id = StringField(primary_key=True)
    backup_status = StringField()
    project_id = StringField()
    instrument_id = StringField()
    updated_at_ = DateTimeField()


def recent_upload_failures(now: datetime | None = None) -> list[str]:
    """Ids their ``S3UploadFailureAlert`` would look at: recently updated and ``upload_failed``."""
    youngest = (now or datetime.now(timezone.utc)) - ALERT_WINDOW
    found = TheirRawFile.objects.filter(updated_at___gt=youngest, backup_status="upload_failed").only(
        "id", "backup_status", "project_id", "instrument_id"
    )
    return sorted(raw_file.id for raw_file in found)
