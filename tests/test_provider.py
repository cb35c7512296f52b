"""The package registers as an Airflow provider: what ``airflow providers ...`` shows on this Airflow."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

import airflow_provider_kraken_s3


def airflow_cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "airflow", *args], capture_output=True, text=True, env=os.environ, check=True
    )
    return result.stdout


def test_provider_info_modules_import_and_classes_exist() -> None:
    info = airflow_provider_kraken_s3.get_provider_info()
    assert info["package-name"] == "airflow-provider-kraken-s3"
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info.get(section, []):
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for connection in info["connection-types"]:
        module, _, name = connection["hook-class-name"].rpartition(".")
        assert getattr(importlib.import_module(module), name).conn_type == connection["connection-type"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("providers", "list"), "airflow-provider-kraken-s3"),
        (("providers", "hooks"), "airflow_provider_kraken_s3.hooks.kraken_mongo.KrakenMongoHook"),
        (
            ("providers", "triggers"),
            "airflow_provider_kraken_s3.triggers.backup_verified",
        ),
        (("providers", "links"), "airflow_provider_kraken_s3.links.S3BackupLink"),
    ],
)
def test_airflow_cli_lists_the_provider(command: tuple[str, ...], expected: str) -> None:
    assert expected in airflow_cli(*command)
