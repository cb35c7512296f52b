"""The lane's 20 raw files and how they are staged: files on a backup pool, RawFiles as alphakraken writes them.

Mixed as on a real instrument park: Thermo ``.raw`` files (one file each; two without a project, so they go
to the ``_FALLBACK`` bucket under ``<instrument>/<YYYY_MM>/``), Bruker ``.d`` folders (nested files, one of
them empty) and SCIEX ``.wiff`` sets (``x.wiff`` with its ``x.wiff2`` and ``x.wiff.scan`` siblings, under a
``<raw file id>/`` prefix). One ``.raw`` is large enough that its multipart upload can be caught in flight.

A RawFile is staged through the project's own store functions, as the example ``acquisition_handler`` does:
registered (``register_raw_file``), inventoried from one read per file (size, MD5, and the S3 ETag for the
part size, stored as ``"<etag>__<MiB>"``), and its local copy recorded (``record_local_copy``), leaving
``backup_status`` unset for the uploader.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

MIB = 2**20
#: Small parts make every file above 5 MiB a multipart upload, as 10–100 GB files are with 500 MiB parts.
PART_SIZE = 5 * MIB
PROJECT = "P1234"
FALLBACK = "_FALLBACK"  # alphakraken's project of raw files that belong to none
MONTH = "2024_11"


@dataclass(frozen=True)
class RawFileSpec:
    raw_file_id: str
    instrument_id: str
    project_id: str
    files: dict[str, int]  # path relative to the backup folder → size in bytes


def _raw(index: int, size: int, project: str = PROJECT) -> RawFileSpec:
    raw_file_id = f"20241105_astral1_{project.strip('_')}_lane_S{index:02d}.raw"
    return RawFileSpec(raw_file_id, "astral1", project, {raw_file_id: size})


def _bruker(index: int, binary: int) -> RawFileSpec:
    raw_file_id = f"20241105_timstof1_{PROJECT}_lane_S{index:02d}.d"
    files = {
        "analysis.tdf": 2 * MIB + 17,
        "analysis.tdf_bin": binary,
        "chromatography-data.sqlite": MIB,
        "SampleInfo.xml": 20_000,
        "method.m/submethods.xml": 8_000,
        "calib/calibration.ini": 0,
    }
    return RawFileSpec(
        raw_file_id, "timstof1", PROJECT, {f"{raw_file_id}/{path}": size for path, size in files.items()}
    )


def _wiff(index: int, data: int) -> RawFileSpec:
    raw_file_id = f"20241105_zenotof1_{PROJECT}_lane_S{index:02d}.wiff"
    files = {raw_file_id: MIB + 3, f"{raw_file_id}2": data, f"{raw_file_id}.scan": 3 * MIB}
    return RawFileSpec(raw_file_id, "zenotof1", PROJECT, files)


#: The one whose upload the fault run interrupts: 49 parts of 5 MiB.
TARGET = _raw(1, 240 * MIB + 4321)

RAW_FILES: tuple[RawFileSpec, ...] = (
    TARGET,
    *(_raw(i, size * MIB + 777) for i, size in enumerate((40, 32, 24, 16, 12, 8), start=2)),
    _raw(8, 3 * MIB),  # one part: a single PUT
    _raw(9, 20 * MIB, FALLBACK),
    _raw(10, 6 * MIB + 1, FALLBACK),
    *(_bruker(i, size * MIB) for i, size in enumerate((30, 24, 18, 12, 10, 8), start=11)),
    *(_wiff(i, size * MIB) for i, size in enumerate((16, 12, 8, 6), start=17)),
)


def backup_dir(pool: Path, spec: RawFileSpec) -> Path:
    """alphakraken's ``backup_base_path``: ``<pool>/<instrument>/<YYYY_MM>``."""
    return pool / spec.instrument_id / MONTH


def write_files(pool: Path) -> int:
    """Write every raw file's files (pseudo-random, the same on every run); return the bytes written."""
    total = 0
    for spec in RAW_FILES:
        rng = random.Random(spec.raw_file_id)
        for relative, size in spec.files.items():
            path = backup_dir(pool, spec) / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as out:
                left = size
                while left:
                    block = min(left, 8 * MIB)
                    out.write(rng.randbytes(block))
                    left -= block
            total += size
    return total


def stage_records(pool: Path) -> None:
    """Create the 20 RawFiles afresh (the kraken_s3 alias must be connected), as the acquisition handler
    leaves them after the local copy."""
    from airflow_provider_kraken_s3.core.etag import format_precomputed_etag
    from airflow_provider_kraken_s3.records import store
    from airflow_provider_kraken_s3.records.models import RawFile
    from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag_and_md5

    RawFile._get_collection().delete_many({})
    for spec in RAW_FILES:
        base = backup_dir(pool, spec)
        store.register_raw_file(
            spec.raw_file_id,
            project_id=spec.project_id,
            instrument_id=spec.instrument_id,
            size=sum(spec.files.values()),
        )
        file_info = {}
        for relative, size in spec.files.items():
            etag, md5 = compute_s3_etag_and_md5(base / relative, PART_SIZE)
            file_info[relative] = [size, md5, format_precomputed_etag(etag, PART_SIZE)]
        store.record_local_copy(spec.raw_file_id, backup_base_path=str(base), file_info=file_info)
