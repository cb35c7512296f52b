"""core/paths.py: alphakraken's recorded cluster paths, read through the worker's mount; and the settings that
configure it (core/settings.py)."""

from __future__ import annotations

import re

import pytest

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.paths import (
    DEFAULT_WORKER_BACKUP_PATH,
    BackupPathMap,
    missing_hint,
    skip_reason,
    worker_base_path,
)
from airflow_provider_kraken_s3.core.settings import resolve_settings, validate_arguments

THEIR_YAML = """\
locations:
  general:
    mounts_path: /home/kraken-user/alphakraken/production/mounts
  backup:
    username: kraken-write
    mount_src: //samba-pool-1/pool-1
    mount_target: backup
    absolute_path: /fs/pool-1/backup/
backup:
  backup_type: s3
  purging_verification_type: s3
  s3:
    region: eu-central-1
    bucket_prefix: alphakraken
"""


def test_a_cluster_path_is_read_under_the_worker_root() -> None:
    mapping = BackupPathMap("/fs/pool-1/backup", "/opt/airflow/mounts/backup")
    assert worker_base_path("/fs/pool-1/backup/astral1/2026_11", mapping) == (
        "/opt/airflow/mounts/backup/astral1/2026_11"
    )
    assert worker_base_path("/fs/pool-1/backup", mapping) == "/opt/airflow/mounts/backup"
    assert BackupPathMap("/fs/pool-1/backup/").cluster_root == "/fs/pool-1/backup"
    assert BackupPathMap("/fs/pool-1/backup").worker_root == DEFAULT_WORKER_BACKUP_PATH


def test_without_a_mapping_the_recorded_path_is_used_as_it_is() -> None:
    assert worker_base_path("/data/backup/astral1", None) == "/data/backup/astral1"


@pytest.mark.parametrize(
    "recorded",
    [
        "/fs/pool-2/backup/astral1/2026_11",  # another pool
        "/fs/pool-1/backup-old/astral1",  # a sibling sharing the name's start
        "/fs/pool-1/backup/../secrets",  # leaves the root
        "/opt/airflow/mounts/backup/astral1",  # already a worker path: not what alphakraken records
        "astral1/2026_11",  # relative
    ],
)
def test_paths_outside_the_cluster_root_are_refused_naming_both(recorded: str) -> None:
    mapping = BackupPathMap(
        "/fs/pool-1/backup", "/mnt/backup", source="locations.backup.absolute_path in 'x.yaml'"
    )
    with pytest.raises(InvalidInputError) as info:
        worker_base_path(recorded, mapping)
    message = str(info.value)
    assert repr(recorded) in message and "'/fs/pool-1/backup'" in message and "'/mnt/backup'" in message
    assert "locations.backup.absolute_path in 'x.yaml'" in message


@pytest.mark.parametrize("recorded", [None, ""])
def test_no_recorded_path_is_an_error(recorded) -> None:
    with pytest.raises(InvalidInputError, match="has no backup_base_path"):
        worker_base_path(recorded, BackupPathMap("/fs/pool-1/backup"))


@pytest.mark.parametrize("root", ["relative/path", "/fs/../etc", "/fs/./pool", "", None])
def test_roots_must_be_plain_absolute_paths(root) -> None:
    with pytest.raises(InvalidInputError, match=re.escape("locations.backup.absolute_path")):
        BackupPathMap(root)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="worker_backup_path"):
        BackupPathMap("/fs/pool-1/backup", root)  # type: ignore[arg-type]


def test_the_missing_file_hint_names_both_paths_and_the_setting() -> None:
    mapping = BackupPathMap("/fs/pool-1/backup", "/mnt/backup")
    hint = missing_hint("/fs/pool-1/backup/a/2026_11", "/mnt/backup/a/2026_11", mapping)
    assert "'/fs/pool-1/backup/a/2026_11' recorded, read as '/mnt/backup/a/2026_11'" in hint
    assert "worker_backup_path= (operator) or backup.worker_backup_path (YAML)" in hint
    assert "read as it is" in missing_hint("/data/x", "/data/x", None)


def test_skipped_records_without_a_path_have_nothing_to_back_up() -> None:
    assert "SKIP_COPYING" in skip_reason("skipped", "")
    assert "SKIP_COPYING" in skip_reason("skipped", None)
    assert skip_reason("skipped", "/fs/pool-1/backup/a/2026_11") is None
    assert skip_reason("copying_done", "") is None
    assert skip_reason(None, None) is None


# --- settings ------------------------------------------------------------------------------------------


def test_their_yaml_maps_onto_the_default_worker_root(tmp_path) -> None:
    path = tmp_path / "alphakraken.production.yaml"
    path.write_text(THEIR_YAML)
    settings = resolve_settings(settings_path=path)
    assert settings.backup_paths.cluster_root == "/fs/pool-1/backup"
    assert settings.backup_paths.worker_root == DEFAULT_WORKER_BACKUP_PATH
    assert settings.backup_paths.source == f"locations.backup.absolute_path in settings file {str(path)!r}"


def test_the_worker_root_comes_from_our_yaml_key_or_the_argument(tmp_path) -> None:
    path = tmp_path / "alphakraken.yaml"
    path.write_text(
        THEIR_YAML.replace(
            "backup:\n  backup_type", "backup:\n  worker_backup_path: /mnt/pool\n  backup_type"
        )
    )
    assert resolve_settings(settings_path=path).backup_paths.worker_root == "/mnt/pool"
    chosen = resolve_settings(settings_path=path, worker_backup_path="/srv/backup/")
    assert chosen.backup_paths.worker_root == "/srv/backup"


def test_without_locations_paths_are_read_as_recorded(tmp_path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text("backup:\n  backup_type: s3\n  s3:\n    bucket_prefix: ak\n")
    assert resolve_settings(settings_path=path).backup_paths is None
    assert resolve_settings(bucket_prefix="ak").backup_paths is None


def test_a_worker_root_without_the_cluster_root_is_refused(tmp_path) -> None:
    with pytest.raises(
        InvalidInputError, match=re.escape("locations.backup.absolute_path is not (no settings file)")
    ):
        resolve_settings(bucket_prefix="ak", worker_backup_path="/mnt/backup")
    with pytest.raises(InvalidInputError, match="worker_backup_path must be an absolute path"):
        validate_arguments(worker_backup_path="mnt/backup")
    validate_arguments(worker_backup_path="{{ var.value.backup_mount }}")  # rendered later
