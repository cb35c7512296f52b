"""Staging a raw file as alphakraken leaves it after the local copy: its files in the backup folder and its
RawFile document with their sizes and MD5s. Every test that needs a raw file to back up stages it here.

- :func:`stage_raw_file` writes the files (random bytes, the same for the same raw file id) and inserts the
  RawFile (the ``kraken_s3`` alias must be connected: use the ``kraken_mongo`` fixture);
- :func:`stage_with_bucket` does the same for a project of its own and creates that project's bucket, with a
  second copy of the files where the instrument keeps them (what the cleanup DAG deletes);
- the ``stage`` fixture (``tests/conftest.py``) stages under the test's ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_kraken_s3.core.naming import bucket_name
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag
from tests.conftest import random_bytes
from tests.conftest_mongo import insert_raw_file

#: The bucket prefix of :func:`stage_with_bucket` (and of the operator in the sensor and trigger tests).
PREFIX = "kraken-lab"


@dataclass
class Staged:
    """A staged raw file: its files on disk and what its RawFile says about them."""

    raw_file_id: str
    project_id: str
    backup_dir: Path  # backup_base_path: what the operator uploads
    sizes: dict[str, int]
    file_info: dict[str, list[Any]]
    bucket: str = ""  # the project's bucket, when stage_with_bucket created it
    instrument_dir: Path | None = None  # the instrument's copy of the same files, when one was written

    def file_data(self, relative: str) -> bytes:
        return (self.backup_dir / relative).read_bytes()


def file_bytes(raw_file_id: str, index: int, size: int) -> bytes:
    """The bytes of a raw file's ``index``-th file: pseudo-random, the same for the same id and index."""
    return random_bytes(size, f"{raw_file_id}/{index}")


def stage_raw_file(
    backup_dir: Path,
    raw_file_id: str,
    sizes: Mapping[str, int],
    *,
    instrument_dir: Path | None = None,
    etag_part_size: int | None = None,
    **fields: Any,
) -> Staged:
    """Write a raw file's files under ``backup_dir`` (and ``instrument_dir``, when given) and insert its
    RawFile with their sizes and MD5s.

    ``etag_part_size`` adds alphakraken's precomputed ``"<etag>__<MiB>"`` to every ``file_info`` entry.
    ``fields`` override the RawFile's (``project_id`` (default P1234), ``instrument_id``, ``created_at``, ...).
    """
    file_info: dict[str, list[Any]] = {}
    for index, (relative, size) in enumerate(sizes.items()):
        data = file_bytes(raw_file_id, index, size)
        for base in (backup_dir, instrument_dir):
            if base is not None:
                path = base / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
        entry: list[Any] = [size, hashlib.md5(data).hexdigest()]
        if etag_part_size is not None:
            etag = compute_s3_etag(backup_dir / relative, etag_part_size)
            entry.append(f"{etag}__{etag_part_size // MIB}")
        file_info[relative] = entry
    record = insert_raw_file(
        raw_file_id,
        size=sum(sizes.values()),
        **{"backup_base_path": str(backup_dir), "file_info": file_info, **fields},
    )
    return Staged(
        raw_file_id=raw_file_id,
        project_id=record.project_id,
        backup_dir=backup_dir,
        sizes=dict(sizes),
        file_info=file_info,
        instrument_dir=instrument_dir,
    )


def stage_with_bucket(
    root: Path, s3_client, raw_file_id: str, sizes: Mapping[str, int], **fields: Any
) -> Staged:
    """:func:`stage_raw_file` for a project of its own, whose bucket (prefix :data:`PREFIX`) is created here:
    the files under ``root/backup`` and, as the instrument keeps them, under ``root/instrument``."""
    project = f"p{uuid.uuid4().hex[:10]}"
    bucket = bucket_name(PREFIX, project)
    s3_client.create_bucket(Bucket=bucket)
    fields.setdefault("project_id", project)
    staged = stage_raw_file(root / "backup", raw_file_id, sizes, instrument_dir=root / "instrument", **fields)
    staged.bucket = bucket
    return staged
