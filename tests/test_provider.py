"""The package registers as an Airflow provider: what ``airflow providers ...`` shows on this Airflow."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_provider_kraken_s3

#: Sections of provider info, and the subpackage whose every module must be listed in it.
LISTED_PACKAGES = {"hooks": "hooks", "operators": "operators", "sensors": "sensors", "triggers": "triggers"}

#: ``airflow providers <command>`` and a line it must show.
CLI_EXPECTATIONS = [
    (("providers", "list"), "airflow-provider-kraken-s3"),
    (("providers", "hooks"), "airflow_provider_kraken_s3.hooks.kraken_mongo.KrakenMongoHook"),
    (("providers", "triggers"), "airflow_provider_kraken_s3.triggers.backup_verified"),
    (("providers", "links"), "airflow_provider_kraken_s3.links.S3BackupLink"),
]

#: Runs Airflow's own CLI for each command in one interpreter (Airflow's import and provider discovery
#: take seconds; once is enough), each command's output kept apart.
_RUN_COMMANDS = """
import contextlib, io, json, sys
from airflow.cli.cli_parser import get_parser

outputs = {}
for command in json.loads(sys.argv[1]):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        args = get_parser().parse_args(command)
        args.func(args)
    outputs[" ".join(command)] = printed.getvalue()
with open(sys.argv[2], "w") as answers:
    json.dump(outputs, answers)
"""


def listed_modules(section: str) -> list[str]:
    info = airflow_provider_kraken_s3.get_provider_info()
    return [module for entry in info.get(section, []) for module in entry["python-modules"]]


def test_provider_info_modules_import_and_classes_exist() -> None:
    info = airflow_provider_kraken_s3.get_provider_info()
    assert info["package-name"] == "airflow-provider-kraken-s3"
    for section in LISTED_PACKAGES:
        for module in listed_modules(section):
            importlib.import_module(module)
    for connection in info["connection-types"]:
        module, _, name = connection["hook-class-name"].rpartition(".")
        assert getattr(importlib.import_module(module), name).conn_type == connection["connection-type"]


@pytest.mark.parametrize(("section", "package"), LISTED_PACKAGES.items())
def test_provider_info_lists_every_module_of_its_packages(section: str, package: str) -> None:
    """A new operator, sensor, trigger or hook module is listed, or Airflow does not know it exists."""
    folder = Path(airflow_provider_kraken_s3.__file__).parent / package
    modules = {f"airflow_provider_kraken_s3.{package}.{m.name}" for m in pkgutil.iter_modules([str(folder)])}
    assert modules, folder
    assert sorted(listed_modules(section)) == sorted(modules)


def test_provider_version_is_the_package_version() -> None:
    from importlib.metadata import version

    info = airflow_provider_kraken_s3.get_provider_info()
    assert info["versions"] == [airflow_provider_kraken_s3.__version__]
    assert airflow_provider_kraken_s3.__version__ == version("airflow-provider-kraken-s3")


@pytest.fixture(scope="module")
def airflow_providers_cli(tmp_path_factory) -> dict[str, str]:
    """What each ``airflow providers <command>`` printed, from one Airflow process."""
    answers = tmp_path_factory.mktemp("providers") / "answers.json"
    commands = json.dumps([list(command) for command, _ in CLI_EXPECTATIONS])
    subprocess.run(
        [sys.executable, "-c", _RUN_COMMANDS, commands, str(answers)],
        capture_output=True,
        text=True,
        env=os.environ,
        check=True,
    )
    return json.loads(answers.read_text())


@pytest.mark.slow
@pytest.mark.parametrize(("command", "expected"), CLI_EXPECTATIONS)
def test_airflow_cli_lists_the_provider(
    airflow_providers_cli: dict[str, str], command: tuple[str, ...], expected: str
) -> None:
    assert expected in airflow_providers_cli[" ".join(command)]
