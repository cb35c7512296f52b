"""Backup settings: explicit operator arguments first, then the alphakraken YAML, then defaults.

The YAML shape follows alphakraken's ``envs/alphakraken.{env}.yaml``::

    locations:
      backup:
        absolute_path: /fs/pool-1/backup   # the cluster's path, recorded in backup_base_path
    backup:
      backup_type: s3          # or "local"; missing means "local", as alphakraken reads it
      worker_backup_path: /opt/airflow/mounts/backup   # ours: where workers see absolute_path (the default)
      purging_verification_type: s3   # local | s3 | force_local (read by the verified-cleanup example)
      s3:
        region: eu-central-1
        bucket_prefix: alphakraken   # buckets are "alphakraken-{project_id}"
        auto_create_buckets: false   # create_bucket_if_missing
        storage_class: STANDARD      # ours: STANDARD, INTELLIGENT_TIERING, STANDARD_IA, GLACIER_IR, ...

Everything is checked here, before any byte is read or sent, so a typo fails the task at once with a
message naming the setting, instead of surfacing as a confusing S3 error hours into an upload.

Pure module (stdlib + pyyaml).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.naming import check_bucket_prefix
from airflow_provider_kraken_s3.core.parts import (
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    check_part_size,
)
from airflow_provider_kraken_s3.core.paths import DEFAULT_WORKER_BACKUP_PATH, BackupPathMap, check_root

__all__ = [
    "BACKUP_TYPES",
    "DEFAULT_PART_SIZE",
    "MAX_PART_SIZE",
    "MIN_PART_SIZE",
    "PURGING_VERIFICATION_TYPES",
    "STORAGE_CLASSES",
    "BackupSettings",
    "check_part_size",
    "check_purging_verification_type",
    "check_storage_class",
    "is_templated",
    "load_settings_file",
    "parse_settings_mapping",
    "resolve_settings",
    "validate_arguments",
]

BACKUP_TYPES: tuple[str, ...] = ("local", "s3")
#: Without a settings file: this provider exists to back up to S3.
DEFAULT_BACKUP_TYPE = "s3"
#: With a settings file that does not set ``backup.backup_type``: alphakraken's own reading of it.
YAML_DEFAULT_BACKUP_TYPE = "local"
#: S3 storage classes a raw-file backup may use (written once, read rarely). Archive classes (GLACIER,
#: DEEP_ARCHIVE) still answer HEAD, which is all skip, resume and the sensor need.
STORAGE_CLASSES: tuple[str, ...] = (
    "STANDARD",
    "INTELLIGENT_TIERING",
    "STANDARD_IA",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
)
#: alphakraken's ``backup.purging_verification_type``: what the file remover checks before deleting.
PURGING_VERIFICATION_TYPES: tuple[str, ...] = ("local", "s3", "force_local")


@dataclass(frozen=True)
class BackupSettings:
    """The resolved, validated settings of one backup; constructing one checks it."""

    backup_type: str
    bucket_prefix: str | None
    region_name: str | None
    part_size: int
    create_buckets: bool = False
    storage_class: str | None = None
    purging_verification_type: str | None = None
    #: where the worker sees the cluster's backup pool; None: ``backup_base_path`` is read as it is
    backup_paths: BackupPathMap | None = None
    #: where ``backup_type`` came from, for the log (an unset YAML key means "local", as alphakraken reads it)
    backup_type_source: str = field(default="backup_type", compare=False)

    def __post_init__(self) -> None:
        _check_backup_type(self.backup_type, "backup_type")
        if self.storage_class is not None:
            check_storage_class(self.storage_class)
        if self.purging_verification_type is not None:
            check_purging_verification_type(self.purging_verification_type, self.backup_type)
        if self.bucket_prefix is not None:
            _check_string(self.bucket_prefix, "bucket_prefix")
        if self.region_name is not None:
            _check_region(self.region_name, "region_name")
        check_part_size(self.part_size)
        if self.backup_type == "s3":
            if self.bucket_prefix is None:
                raise InvalidInputError(
                    "backup_type is 's3' but no bucket prefix is set; pass bucket_prefix= to the "
                    "operator or set backup.s3.bucket_prefix in the YAML settings"
                )
            check_bucket_prefix(self.bucket_prefix)


def is_templated(value: object) -> bool:
    """True for a string Airflow has yet to render (``"{{ var.value.x }}"``); it is checked once rendered."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def check_storage_class(value: object, where: str = "storage_class") -> str:
    """One of :data:`STORAGE_CLASSES`, checked when the DAG is parsed (a typo must not cost an upload)."""
    if not isinstance(value, str) or value not in STORAGE_CLASSES:
        raise InvalidInputError(f"{where} must be one of {', '.join(STORAGE_CLASSES)}, got {value!r}")
    return value


def check_purging_verification_type(
    value: object, backup_type: str, where: str = "purging_verification_type"
) -> str:
    """alphakraken's rule: with ``backup_type: s3`` the file remover verifies ``s3`` (or is forced local)."""
    if not isinstance(value, str) or value not in PURGING_VERIFICATION_TYPES:
        raise InvalidInputError(
            f"{where} must be one of {', '.join(PURGING_VERIFICATION_TYPES)}, got {value!r}"
        )
    if backup_type == "s3" and value == "local":
        raise InvalidInputError(
            f"{where} is 'local' but backup_type is 's3': the local backup is not where the data is kept. Use "
            "'s3' (delete instrument files only once S3 proves them) or 'force_local' (skip that check, loudly)"
        )
    return value


def _check_backup_type(value: object, where: str) -> str:
    if not isinstance(value, str) or value not in BACKUP_TYPES:
        valid = " or ".join(repr(t) for t in BACKUP_TYPES)
        raise InvalidInputError(f"{where} must be {valid}, got {value!r}; set it to one of these values")
    return value


def _check_string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidInputError(
            f"{where} must be a string, got {type(value).__name__} {value!r}; write it as text"
        )
    return value


def _check_region(value: object, where: str) -> str:
    """Light check only: S3-compatible stores accept region names that AWS does not have."""
    region = _check_string(value, where)
    if not region or region != region.strip() or any(c.isspace() or not c.isprintable() for c in region):
        raise InvalidInputError(
            f"{where} {region!r} is empty or contains whitespace; set a region name such as 'eu-central-1' "
            "or leave it unset to use the AWS default"
        )
    return region


def _optional_mapping(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"{where} must be a mapping (YAML 'key: value' entries), got {type(value).__name__} {value!r}"
        )
    return value


def _optional_string(section: Mapping[str, Any], key: str, where: str) -> str | None:
    value = section.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInputError(
            f"{where} must be a string, got {type(value).__name__} {value!r}; quote it in the YAML"
        )
    return value


def parse_settings_mapping(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Read the ``backup`` section of loaded YAML into ``backup_type``, ``bucket_prefix``, ``region_name``.

    Missing sections and keys give ``None`` (the YAML may configure other things only); wrong types are
    errors naming the YAML key path. Values are checked by :func:`resolve_settings`, not here, so that an
    explicit argument can still override a bad YAML value.
    """
    top = _optional_mapping(data, "the settings (top level)")
    backup = _optional_mapping(top.get("backup"), "backup")
    s3 = _optional_mapping(backup.get("s3"), "backup.s3")
    locations = _optional_mapping(top.get("locations"), "locations")
    pool = _optional_mapping(locations.get("backup"), "locations.backup")
    create = s3.get("auto_create_buckets")
    if create is not None and not isinstance(create, bool):
        raise InvalidInputError(f"backup.s3.auto_create_buckets must be true or false, got {create!r}")
    return {
        "backup_type": _optional_string(backup, "backup_type", "backup.backup_type"),
        "bucket_prefix": _optional_string(s3, "bucket_prefix", "backup.s3.bucket_prefix"),
        "region_name": _optional_string(s3, "region", "backup.s3.region"),
        "create_buckets": create,
        "storage_class": _optional_string(s3, "storage_class", "backup.s3.storage_class"),
        "purging_verification_type": _optional_string(
            backup, "purging_verification_type", "backup.purging_verification_type"
        ),
        "cluster_backup_path": _optional_string(pool, "absolute_path", "locations.backup.absolute_path"),
        "worker_backup_path": _optional_string(backup, "worker_backup_path", "backup.worker_backup_path"),
    }


def load_settings_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a YAML settings file with ``yaml.safe_load``; an empty file is an empty mapping.

    Returns the whole document (other tools' sections included); pass it to :func:`parse_settings_mapping`.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise InvalidInputError(
            f"settings file {os.fspath(path)!r} does not exist; fix settings_path or create the file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(
            f"settings file {os.fspath(path)!r} cannot be read ({exc}); fix settings_path or the file's "
            "permissions and encoding (UTF-8)"
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidInputError(
            f"settings file {os.fspath(path)!r} is not valid YAML: {exc}; fix the YAML syntax"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"settings file {os.fspath(path)!r} must contain a YAML mapping at the top level, got "
            f"{type(data).__name__}; start it with 'backup:'"
        )
    return data


def resolve_settings(
    *,
    backup_type: str | None = None,
    bucket_prefix: str | None = None,
    region_name: str | None = None,
    part_size: int | None = None,
    settings_path: str | os.PathLike[str] | None = None,
    create_buckets: bool | None = None,
    storage_class: str | None = None,
    worker_backup_path: str | None = None,
) -> BackupSettings:
    """Merge explicit arguments (win), the YAML at ``settings_path`` and defaults into checked settings.

    Defaults: ``backup_type`` "s3" without a settings file (this provider exists to back up to S3) but
    "local" when the settings file does not set ``backup.backup_type`` (alphakraken's reading: a deployment
    that never enabled S3 does not start uploading because this operator was added); ``part_size``
    :data:`DEFAULT_PART_SIZE` (alphakraken's 100 MiB chunks); ``region_name`` None (boto3's own default chain).
    ``bucket_prefix`` has no default: guessing it could send a project's data into someone else's bucket.

    Paths: with ``locations.backup.absolute_path`` in the YAML, recorded ``backup_base_path`` values (cluster
    paths) are read under ``worker_backup_path`` (argument, else ``backup.worker_backup_path``, else
    :data:`~.paths.DEFAULT_WORKER_BACKUP_PATH`); without it they are read as they are.
    """
    from_yaml: dict[str, Any] = dict.fromkeys(
        (
            "backup_type",
            "bucket_prefix",
            "region_name",
            "create_buckets",
            "storage_class",
            "purging_verification_type",
            "cluster_backup_path",
            "worker_backup_path",
        )
    )
    if settings_path is not None:
        document = load_settings_file(settings_path)
        try:
            from_yaml = parse_settings_mapping(document)
        except InvalidInputError as exc:
            raise InvalidInputError(f"settings file {os.fspath(settings_path)!r}: {exc}") from None
    source = f" in settings file {os.fspath(settings_path)!r}" if settings_path is not None else ""

    def pick(name: str, explicit: Any, yaml_key: str) -> tuple[Any, str]:
        if explicit is not None:
            return explicit, name
        return from_yaml[name], f"{yaml_key}{source}"

    chosen_type, type_where = pick("backup_type", backup_type, "backup.backup_type")
    type_source = type_where
    if chosen_type is None and settings_path is not None:
        chosen_type = YAML_DEFAULT_BACKUP_TYPE
        type_source = f"backup.backup_type is not set{source}, which alphakraken reads as 'local'"
    elif chosen_type is None:
        chosen_type = DEFAULT_BACKUP_TYPE
        type_source = "default: no backup_type argument and no settings file"
    _check_backup_type(chosen_type, type_where)
    prefix, prefix_where = pick("bucket_prefix", bucket_prefix, "backup.s3.bucket_prefix")
    if prefix is not None and chosen_type == "s3" and bucket_prefix is None:
        try:  # BackupSettings checks it too, but could not say that the value came from the YAML
            check_bucket_prefix(prefix)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{prefix_where}: {exc}") from None
    region, region_where = pick("region_name", region_name, "backup.s3.region")
    if region is not None:
        _check_region(region, region_where)
    chosen_class, class_where = pick("storage_class", storage_class, "backup.s3.storage_class")
    if chosen_class is not None:
        check_storage_class(chosen_class, class_where)
    purging = from_yaml["purging_verification_type"]
    if purging is not None:
        check_purging_verification_type(purging, chosen_type, f"backup.purging_verification_type{source}")
    create, _ = pick("create_buckets", create_buckets, "backup.s3.auto_create_buckets")
    return BackupSettings(
        backup_type=chosen_type,
        bucket_prefix=prefix,
        region_name=region,
        part_size=part_size if part_size is not None else DEFAULT_PART_SIZE,
        create_buckets=bool(create),
        storage_class=chosen_class,
        purging_verification_type=purging,
        backup_paths=_path_map(from_yaml, worker_backup_path, source),
        backup_type_source=type_source,
    )


def _path_map(
    from_yaml: Mapping[str, Any], worker_backup_path: str | None, source: str
) -> BackupPathMap | None:
    """The cluster-to-worker path map, or None (paths read as recorded) without ``locations.backup``."""
    worker, worker_where = (worker_backup_path, "worker_backup_path")
    if worker is None:
        worker, worker_where = from_yaml["worker_backup_path"], f"backup.worker_backup_path{source}"
    cluster = from_yaml["cluster_backup_path"]
    if cluster is None:
        if worker is not None:
            raise InvalidInputError(
                f"{worker_where} is set but locations.backup.absolute_path is not{source or ' (no settings file)'}: "
                "the worker's path replaces that cluster path in backup_base_path, so set both (or neither, to "
                "read backup_base_path as it is)"
            )
        return None
    worker = check_root(worker, worker_where) if worker is not None else DEFAULT_WORKER_BACKUP_PATH
    return BackupPathMap(cluster, worker, source=f"locations.backup.absolute_path{source}")


def validate_arguments(
    *,
    backup_type: object = None,
    bucket_prefix: object = None,
    region_name: object = None,
    part_size: object = None,
    settings_path: object = None,
    storage_class: object = None,
    worker_backup_path: object = None,
) -> None:
    """Check operator arguments at DAG-parse time, without reading files or contacting anything.

    Only what is already known is checked: ``None`` (to come from the YAML) and templated strings
    (``"{{ ... }}"``, rendered later by Airflow) are skipped; :func:`resolve_settings` checks the
    final values when the task runs. Whether a bucket prefix is needed is left to run time too, since
    the YAML may supply it.
    """
    if backup_type is not None and not is_templated(backup_type):
        _check_backup_type(backup_type, "backup_type")
    if bucket_prefix is not None and not is_templated(bucket_prefix):
        check_bucket_prefix(_check_string(bucket_prefix, "bucket_prefix"))
    if region_name is not None and not is_templated(region_name):
        _check_region(region_name, "region_name")
    if part_size is not None and not is_templated(part_size):
        check_part_size(part_size)
    if storage_class is not None and not is_templated(storage_class):
        check_storage_class(storage_class)
    if worker_backup_path is not None and not is_templated(worker_backup_path):
        check_root(worker_backup_path, "worker_backup_path")
    if settings_path is not None and not is_templated(settings_path):
        if isinstance(settings_path, os.PathLike):
            settings_path = os.fspath(settings_path)
        if not isinstance(settings_path, str) or not settings_path:
            raise InvalidInputError(
                f"settings_path must be a non-empty path string, got {settings_path!r}; pass the path of "
                "the alphakraken YAML file or leave it unset"
            )
