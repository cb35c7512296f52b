"""Where a worker finds the files of a raw file: alphakraken's recorded path, seen through the worker's mount.

alphakraken records ``backup_base_path`` as the cluster's path (``locations.backup.absolute_path`` of its
YAML, then ``/<instrument_id>/<YYYY_MM>``), while its workers see the backup pool under a mount
(``/opt/airflow/mounts/backup`` in its containers). :class:`BackupPathMap` replaces the one root by the
other. A recorded path outside the cluster root is refused rather than read as is: it would be a file
nobody meant, or a path this worker cannot see.

Pure module (stdlib only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from airflow_provider_kraken_s3.core.errors import InvalidInputError

__all__ = [
    "DEFAULT_WORKER_BACKUP_PATH",
    "WORKER_PATH_SETTING",
    "BackupPathMap",
    "check_root",
    "missing_hint",
    "skip_reason",
    "worker_base_path",
]

#: Where alphakraken's containers mount the backup pool (its ``docker-compose.yaml``, ``InternalPaths``).
DEFAULT_WORKER_BACKUP_PATH = "/opt/airflow/mounts/backup"
#: The settings that move the worker's root, as a person would change them (for error messages).
WORKER_PATH_SETTING = "worker_backup_path= (operator) or backup.worker_backup_path (YAML)"
_SKIPPED = "skipped"


def check_root(value: object, where: str) -> str:
    """An absolute POSIX folder without ``.``/``..`` segments, without its trailing slash."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise InvalidInputError(
            f"{where} must be an absolute path such as '/fs/pool-1/backup', got {value!r}"
        )
    path = PurePosixPath(value)
    if ".." in path.parts or "." in value.split("/"):
        raise InvalidInputError(f"{where} {value!r} contains '.' or '..'; write the plain absolute path")
    return str(path)


@dataclass(frozen=True)
class BackupPathMap:
    """The cluster's root of the backup pool and where this worker sees it.

    :param cluster_root: ``locations.backup.absolute_path`` of alphakraken's YAML.
    :param worker_root: the same folder on this worker.
    :param source: where ``cluster_root`` was read (named in errors).
    """

    cluster_root: str
    worker_root: str = DEFAULT_WORKER_BACKUP_PATH
    source: str = "locations.backup.absolute_path"

    def __post_init__(self) -> None:
        object.__setattr__(self, "cluster_root", check_root(self.cluster_root, self.source))
        object.__setattr__(self, "worker_root", check_root(self.worker_root, "worker_backup_path"))

    def describe(self) -> str:
        return f"{self.cluster_root} ({self.source}) is read as {self.worker_root} on this worker"


def worker_base_path(recorded: str | None, mapping: BackupPathMap | None) -> str:
    """The folder this worker reads for a recorded ``backup_base_path``.

    Without a mapping the recorded path is used as it is. With one, the recorded path must lie inside the
    cluster root (lexically; ``..`` is refused), and that root is replaced by the worker's.
    """
    if not recorded:
        raise InvalidInputError(
            "the raw file has no backup_base_path: the folder holding its files is unknown. The local copy "
            "step must record it before the upload."
        )
    if mapping is None:
        return recorded
    path = PurePosixPath(recorded)
    root = PurePosixPath(mapping.cluster_root)
    if not path.is_absolute() or ".." in path.parts or not path.is_relative_to(root):
        raise InvalidInputError(
            f"backup_base_path {recorded!r} is not inside {mapping.cluster_root!r} ({mapping.source}), the only "
            f"folder this worker maps (onto {mapping.worker_root!r}); refusing to read it. Fix the record, or "
            f"{mapping.source} if the pool moved."
        )
    return str(PurePosixPath(mapping.worker_root) / path.relative_to(root))


def missing_hint(recorded: str | None, read: str, mapping: BackupPathMap | None) -> str:
    """What to say after "file X does not exist": the recorded and the mapped path, and what to change."""
    if mapping is None:
        return (
            f"(backup_base_path {recorded!r}, read as it is: no locations.backup.absolute_path is configured)"
        )
    return (
        f"(backup_base_path {recorded!r} recorded, read as {read!r} because {mapping.describe()}; if this worker "
        f"sees the backup pool elsewhere, set {WORKER_PATH_SETTING})"
    )


def skip_reason(backup_status: str | None, backup_base_path: str | None) -> str | None:
    """Why there is nothing to back up, or None: alphakraken skipped the copy (``SKIP_COPYING``, a renamed
    acquisition), so ``backup_status`` is ``skipped`` and no ``backup_base_path`` exists."""
    if backup_status == _SKIPPED and not backup_base_path:
        return (
            "backup_status is 'skipped' and backup_base_path is empty: alphakraken did not copy this raw file "
            "to the backup pool (SKIP_COPYING or a renamed acquisition), so there is nothing to upload"
        )
    return None
