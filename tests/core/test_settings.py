"""Tests of backup settings: YAML parsing and loading, precedence, defaults, and every refusal."""

from __future__ import annotations

import dataclasses
import pathlib
import re

import pytest

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.settings import (
    BACKUP_TYPES,
    DEFAULT_PART_SIZE,
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    BackupSettings,
    check_part_size,
    is_templated,
    load_settings_file,
    parse_settings_mapping,
    resolve_settings,
    validate_arguments,
)

FULL_YAML = """\
general:
  project_id_regex: "^P"
backup:
  backup_type: s3
  s3:
    region: eu-central-1
    bucket_prefix: alphakraken
"""


@pytest.fixture
def settings_file(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "alphakraken.test.yaml"
    path.write_text(FULL_YAML, encoding="utf-8")
    return path


def _write(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_constants() -> None:
    assert DEFAULT_PART_SIZE == 104_857_600
    assert MIN_PART_SIZE == 5_242_880
    assert MAX_PART_SIZE == 5_368_709_120
    assert BACKUP_TYPES == ("local", "s3")


# --- parse_settings_mapping --------------------------------------------------------------------------


def test_parse_full_mapping() -> None:
    data = {
        "backup": {
            "backup_type": "s3",
            "purging_verification_type": "s3",
            "s3": {
                "region": "eu-central-1",
                "bucket_prefix": "ak",
                "auto_create_buckets": True,
                "storage_class": "GLACIER_IR",
            },
        }
    }
    assert parse_settings_mapping(data) == {
        "backup_type": "s3",
        "bucket_prefix": "ak",
        "region_name": "eu-central-1",
        "create_buckets": True,
        "storage_class": "GLACIER_IR",
        "purging_verification_type": "s3",
        "cluster_backup_path": None,
        "worker_backup_path": None,
    }


def test_alphakraken_yaml_keys_reach_the_settings(tmp_path) -> None:
    """Their YAML as it is: auto_create_buckets drives bucket creation, storage_class every object's class."""
    path = tmp_path / "alphakraken.production.yaml"
    path.write_text(
        "backup:\n  backup_type: s3\n  purging_verification_type: force_local\n  s3:\n    region: eu-central-1\n"
        "    bucket_prefix: alphakraken\n    auto_create_buckets: true\n    storage_class: DEEP_ARCHIVE\n"
    )
    settings = resolve_settings(settings_path=path)
    assert (settings.create_buckets, settings.storage_class) == (True, "DEEP_ARCHIVE")
    assert settings.purging_verification_type == "force_local"
    assert (
        resolve_settings(settings_path=path, create_buckets=False, storage_class="STANDARD").create_buckets
        is False
    )


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        (
            "backup:\n  backup_type: s3\n  purging_verification_type: local\n  s3: {bucket_prefix: ak}\n",
            "'local' but backup_type is 's3'",
        ),
        ("backup:\n  s3: {bucket_prefix: ak, storage_class: GLACIER_DEEP}\n", "must be one of STANDARD"),
        ("backup:\n  s3: {bucket_prefix: ak, auto_create_buckets: 'yes'}\n", "true or false"),
    ],
)
def test_alphakraken_yaml_values_are_checked(tmp_path, yaml_text: str, fragment: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(InvalidInputError, match=re.escape(fragment)):
        resolve_settings(settings_path=path)


def test_storage_class_is_checked_at_parse_time() -> None:
    with pytest.raises(InvalidInputError, match="storage_class must be one of"):
        validate_arguments(storage_class="GLACER")
    validate_arguments(storage_class="{{ var.value.storage_class }}")  # rendered later


@pytest.mark.parametrize(
    "data",
    [
        None,
        {},
        {"other": 1},
        {"backup": None},
        {"backup": {}},
        {"backup": {"s3": None}},
        {"backup": {"s3": {}}},
    ],
)
def test_parse_missing_sections_give_none(data: object) -> None:
    assert parse_settings_mapping(data) == {  # type: ignore[arg-type]
        "backup_type": None,
        "bucket_prefix": None,
        "region_name": None,
        "create_buckets": None,
        "storage_class": None,
        "purging_verification_type": None,
        "cluster_backup_path": None,
        "worker_backup_path": None,
    }


def test_parse_ignores_unrelated_keys() -> None:
    data = {"backup": {"backup_type": "local", "extra": [1], "s3": {"other": 2}}, "general": {"x": 1}}
    assert parse_settings_mapping(data)["backup_type"] == "local"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ([1, 2], "the settings (top level) must be a mapping"),
        ("backup", "the settings (top level) must be a mapping"),
        ({"backup": "s3"}, "backup must be a mapping"),
        ({"backup": ["s3"]}, "backup must be a mapping"),
        ({"backup": {"s3": "ak"}}, "backup.s3 must be a mapping"),
        ({"backup": {"backup_type": 1}}, "backup.backup_type must be a string, got int 1"),
        ({"backup": {"backup_type": True}}, "backup.backup_type must be a string"),
        ({"backup": {"s3": {"bucket_prefix": 123}}}, "backup.s3.bucket_prefix must be a string, got int"),
        ({"backup": {"s3": {"bucket_prefix": ["a"]}}}, "backup.s3.bucket_prefix must be a string"),
        ({"backup": {"s3": {"region": 1.5}}}, "backup.s3.region must be a string, got float"),
    ],
)
def test_parse_wrong_types_name_the_yaml_key(data: object, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        parse_settings_mapping(data)  # type: ignore[arg-type]
    assert fragment in str(info.value)


# --- load_settings_file ------------------------------------------------------------------------------


def test_load_settings_file_returns_whole_document(settings_file: pathlib.Path) -> None:
    document = load_settings_file(settings_file)
    assert document["general"] == {"project_id_regex": "^P"}
    assert document["backup"]["s3"]["bucket_prefix"] == "alphakraken"
    assert load_settings_file(str(settings_file)) == document


def test_load_empty_file_is_empty_mapping(tmp_path: pathlib.Path) -> None:
    assert load_settings_file(_write(tmp_path, "")) == {}
    assert load_settings_file(_write(tmp_path, "# only a comment\n")) == {}


def test_load_missing_file(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(InvalidInputError, match="does not exist") as info:
        load_settings_file(missing)
    assert str(missing) in str(info.value)


def test_load_directory_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot be read") as info:
        load_settings_file(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_load_invalid_yaml(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "backup: [unclosed\n")
    with pytest.raises(InvalidInputError, match="is not valid YAML") as info:
        load_settings_file(path)
    assert str(path) in str(info.value)


def test_load_refuses_python_tags(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "backup: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(InvalidInputError, match="is not valid YAML"):
        load_settings_file(path)


def test_load_non_utf8(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"backup:\n  backup_type: \xe9\n")
    with pytest.raises(InvalidInputError, match="cannot be read") as info:
        load_settings_file(path)
    assert "UTF-8" in str(info.value)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_load_top_level_must_be_mapping(tmp_path: pathlib.Path, text: str) -> None:
    with pytest.raises(InvalidInputError, match="must contain a YAML mapping at the top level"):
        load_settings_file(_write(tmp_path, text))


# --- resolve_settings: defaults and precedence -------------------------------------------------------


def test_resolve_from_yaml(settings_file: pathlib.Path) -> None:
    assert resolve_settings(settings_path=settings_file) == BackupSettings(
        backup_type="s3", bucket_prefix="alphakraken", region_name="eu-central-1", part_size=DEFAULT_PART_SIZE
    )


def test_resolve_without_yaml_defaults_to_s3() -> None:
    settings = resolve_settings(bucket_prefix="ak")
    assert settings == BackupSettings(
        backup_type="s3", bucket_prefix="ak", region_name=None, part_size=DEFAULT_PART_SIZE
    )


def test_resolve_yaml_without_backup_type_is_local_as_alphakraken_reads_it(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "backup:\n  s3:\n    bucket_prefix: ak\n")
    settings = resolve_settings(settings_path=path)
    assert settings.backup_type == "local"
    assert settings.backup_type_source == (
        f"backup.backup_type is not set in settings file {str(path)!r}, which alphakraken reads as 'local'"
    )
    assert resolve_settings(settings_path=path, backup_type="s3").backup_type == "s3"  # the argument wins


def test_explicit_arguments_win_over_yaml(settings_file: pathlib.Path) -> None:
    settings = resolve_settings(
        backup_type="s3",
        bucket_prefix="other",
        region_name="us-east-1",
        part_size=MIN_PART_SIZE,
        settings_path=settings_file,
    )
    assert settings == BackupSettings(
        backup_type="s3", bucket_prefix="other", region_name="us-east-1", part_size=MIN_PART_SIZE
    )


def test_each_argument_wins_independently(settings_file: pathlib.Path) -> None:
    settings = resolve_settings(region_name="eu-west-1", settings_path=settings_file)
    assert settings.region_name == "eu-west-1"
    assert settings.bucket_prefix == "alphakraken"
    settings = resolve_settings(bucket_prefix="other", settings_path=settings_file)
    assert settings.bucket_prefix == "other"
    assert settings.region_name == "eu-central-1"


def test_explicit_backup_type_overrides_yaml(settings_file: pathlib.Path) -> None:
    assert resolve_settings(backup_type="local", settings_path=settings_file).backup_type == "local"


def test_explicit_argument_overrides_bad_yaml_value(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "backup:\n  backup_type: glacier\n  s3:\n    bucket_prefix: '---'\n")
    settings = resolve_settings(backup_type="s3", bucket_prefix="ak", settings_path=path)
    assert (settings.backup_type, settings.bucket_prefix) == ("s3", "ak")


def test_local_backup_needs_no_prefix(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "backup:\n  backup_type: local\n")
    assert resolve_settings(settings_path=path) == BackupSettings(
        backup_type="local", bucket_prefix=None, region_name=None, part_size=DEFAULT_PART_SIZE
    )


def test_local_backup_does_not_judge_the_unused_prefix(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "backup:\n  backup_type: local\n  s3:\n    bucket_prefix: '---'\n")
    assert resolve_settings(settings_path=path).bucket_prefix == "---"


def test_resolve_accepts_string_settings_path(settings_file: pathlib.Path) -> None:
    assert resolve_settings(settings_path=str(settings_file)).bucket_prefix == "alphakraken"


@pytest.mark.parametrize("part_size", [MIN_PART_SIZE, DEFAULT_PART_SIZE, MAX_PART_SIZE])
def test_part_size_limits_are_inclusive(part_size: int) -> None:
    assert resolve_settings(bucket_prefix="ak", part_size=part_size).part_size == part_size


def test_settings_are_frozen() -> None:
    settings = resolve_settings(bucket_prefix="ak")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.part_size = 1  # type: ignore[misc]


# --- resolve_settings: errors ------------------------------------------------------------------------


@pytest.mark.parametrize("backup_type", ["S3", "glacier", "", " s3"])
def test_invalid_backup_type_lists_valid_values(backup_type: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        resolve_settings(backup_type=backup_type, bucket_prefix="ak")
    message = str(info.value)
    assert "backup_type must be 'local' or 's3'" in message
    assert repr(backup_type) in message


def test_invalid_backup_type_from_yaml_names_key_and_file(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "backup:\n  backup_type: S3\n")
    with pytest.raises(InvalidInputError) as info:
        resolve_settings(settings_path=path)
    message = str(info.value)
    assert "backup.backup_type" in message
    assert str(path) in message
    assert "'local' or 's3'" in message


def test_s3_without_prefix_says_how_to_set_it() -> None:
    with pytest.raises(InvalidInputError) as info:
        resolve_settings()
    message = str(info.value)
    assert "bucket_prefix=" in message
    assert "backup.s3.bucket_prefix" in message


def test_s3_without_prefix_in_yaml(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "backup:\n  backup_type: s3\n  s3:\n    region: eu-central-1\n")
    with pytest.raises(InvalidInputError, match=r"backup\.s3\.bucket_prefix"):
        resolve_settings(settings_path=path)


def test_bad_prefix_from_yaml_names_key_and_file(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "backup:\n  backup_type: s3\n  s3:\n    bucket_prefix: '---'\n")
    with pytest.raises(InvalidInputError, match="contains no letters or digits") as info:
        resolve_settings(settings_path=path)
    assert f"backup.s3.bucket_prefix in settings file {str(path)!r}" in str(info.value)


@pytest.mark.parametrize(
    ("prefix", "fragment"),
    [("---", "contains no letters or digits"), ("p" * 62, "at most 61"), ("sthree", "reserved")],
)
def test_bad_explicit_prefix(prefix: str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        resolve_settings(bucket_prefix=prefix)


def test_wrong_type_in_yaml_names_file(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "backup:\n  s3:\n    bucket_prefix: 123\n")
    with pytest.raises(InvalidInputError) as info:
        resolve_settings(settings_path=path)
    assert "backup.s3.bucket_prefix must be a string" in str(info.value)
    assert str(path) in str(info.value)


def test_missing_settings_file_is_an_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        resolve_settings(bucket_prefix="ak", settings_path=tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("part_size", "fragment"),
    [
        (MIN_PART_SIZE - 1, "from 5242880 (5 MiB) to 5368709120 (5 GiB) bytes"),
        (MAX_PART_SIZE + 1, "from 5242880 (5 MiB) to 5368709120 (5 GiB) bytes"),
        (0, "outside S3's limits"),
        (-1, "outside S3's limits"),
        (True, "must be an integer number of bytes, got bool"),
        ("524288000", "must be an integer number of bytes, got str"),
        (5.0 * 1024**2, "got float"),
        (MIN_PART_SIZE + 1, "not a whole number of MiB"),
    ],
)
def test_invalid_part_size(part_size: object, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        resolve_settings(bucket_prefix="ak", part_size=part_size)  # type: ignore[arg-type]
    assert fragment in str(info.value)


@pytest.mark.parametrize("region", ["", " eu-central-1", "eu central 1", "eu-central-1\n"])
def test_invalid_region(region: str) -> None:
    with pytest.raises(InvalidInputError, match=r"region_name .* is empty or contains whitespace"):
        resolve_settings(bucket_prefix="ak", region_name=region)


def test_invalid_region_from_yaml_names_key(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "backup:\n  s3:\n    bucket_prefix: ak\n    region: ''\n")
    with pytest.raises(InvalidInputError, match=r"backup\.s3\.region in settings file"):
        resolve_settings(settings_path=path)


def test_backup_settings_checks_itself() -> None:
    with pytest.raises(InvalidInputError, match="no bucket prefix"):
        BackupSettings(backup_type="s3", bucket_prefix=None, region_name=None, part_size=DEFAULT_PART_SIZE)
    with pytest.raises(InvalidInputError, match="'local' or 's3'"):
        BackupSettings(backup_type="tape", bucket_prefix="ak", region_name=None, part_size=DEFAULT_PART_SIZE)
    with pytest.raises(InvalidInputError, match="outside S3's limits"):
        BackupSettings(backup_type="local", bucket_prefix=None, region_name=None, part_size=1)
    with pytest.raises(InvalidInputError, match="bucket_prefix must be a string"):
        BackupSettings(backup_type="local", bucket_prefix=5, region_name=None, part_size=MIN_PART_SIZE)  # type: ignore[arg-type]


# --- check_part_size / is_templated ------------------------------------------------------------------


def test_check_part_size_returns_value() -> None:
    assert check_part_size(64 * 1024**2) == 64 * 1024**2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("{{ var.value.bucket_prefix }}", True),
        ("prefix-{{ ds }}", True),
        ("{% if x %}a{% endif %}", True),
        ("alphakraken", False),
        ("{ not a template }", False),
        (None, False),
        (5, False),
    ],
)
def test_is_templated(value: object, expected: bool) -> None:
    assert is_templated(value) is expected


# --- validate_arguments ------------------------------------------------------------------------------


def test_validate_arguments_accepts_good_and_missing_values(settings_file: pathlib.Path) -> None:
    validate_arguments()
    validate_arguments(
        backup_type="s3",
        bucket_prefix="alphakraken",
        region_name="eu-central-1",
        part_size=DEFAULT_PART_SIZE,
        settings_path=settings_file,
    )
    validate_arguments(settings_path=str(settings_file))


def test_validate_arguments_skips_templated_values() -> None:
    validate_arguments(
        backup_type="{{ var.value.backup_type }}",
        bucket_prefix="{{ var.value.bucket_prefix }}",
        region_name="{{ var.value.region }}",
        part_size="{{ var.value.part_size }}",
        settings_path="{{ var.value.kraken_settings }}",
    )


def test_validate_arguments_does_not_read_the_settings_file(tmp_path: pathlib.Path) -> None:
    validate_arguments(settings_path=tmp_path / "not-created-yet.yaml")


def test_validate_arguments_does_not_require_prefix() -> None:
    # The prefix may come from the YAML, which is only read when the task runs.
    validate_arguments(backup_type="s3")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"backup_type": "S3"}, "backup_type must be 'local' or 's3'"),
        ({"backup_type": 1}, "backup_type must be 'local' or 's3'"),
        ({"bucket_prefix": "..."}, "contains no letters or digits"),
        ({"bucket_prefix": 7}, "bucket_prefix must be a string"),
        ({"bucket_prefix": "sthree"}, "reserved"),
        ({"region_name": "eu central"}, "contains whitespace"),
        ({"region_name": 1}, "region_name must be a string"),
        ({"part_size": 1024}, "outside S3's limits"),
        ({"part_size": "500"}, "must be an integer number of bytes, got str"),
        ({"part_size": False}, "got bool"),
        ({"settings_path": ""}, "settings_path must be a non-empty path string"),
        ({"settings_path": 3}, "settings_path must be a non-empty path string"),
    ],
)
def test_validate_arguments_refuses_known_bad_values(kwargs: dict, fragment: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        validate_arguments(**kwargs)
    assert fragment in str(info.value)
