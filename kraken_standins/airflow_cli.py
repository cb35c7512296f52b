"""Airflow's own CLI for the demo and the tests: ``airflow dags test`` in this process, ``db migrate``."""

from __future__ import annotations

import os
import subprocess
import sys


def airflow_dags_test(dag_id: str, conf: dict[str, object]) -> None:
    """Run ``airflow dags test DAG_ID --conf JSON`` in this process, through Airflow's own CLI code.

    In-process on purpose: the embedded MongoDB (mongomock) lives in this process's memory, so the demo and
    the tests can read the RawFile documents the run wrote. Airflow runs every task of ``dags test`` in
    the calling process on 2.11 and 3.x alike. Needs ``AIRFLOW_HOME`` with a migrated database and
    ``AIRFLOW__CORE__DAGS_FOLDER`` set before Airflow is imported. Raises ``SystemExit`` if the run failed.
    """
    import json

    from airflow.cli.cli_parser import get_parser

    args = get_parser().parse_args(["dags", "test", dag_id, "--conf", json.dumps(conf)])
    args.func(args)


def migrate_airflow_db(env: dict[str, str] | None = None) -> None:
    """``airflow db migrate`` for the current ``AIRFLOW_HOME`` (a separate process, as an operator would)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **(env or {})},
        check=True,
        stdout=subprocess.DEVNULL,
    )
