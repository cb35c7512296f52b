"""Run a DAG end to end with ``airflow dags test`` in a subprocess, on Airflow 2.11 and 3.x alike.

``run_dag(dag_id, conf, env=...)`` gives the DAG run its own ``AIRFLOW_HOME`` (sqlite, migrated once per
home), the repository's ``example_dags`` as DAGs folder (or any folder you pass), no example DAGs, and the
calling process's ``AIRFLOW_CONN_*`` variables (so ``aws_default`` pointing at a moto server and
``kraken_mongo_default`` work as in the test). ``airflow dags test`` runs every task in that one process
and, on both versions, runs triggers of deferred tasks inline; reschedule-mode sensors are re-run after
their reschedule date.

MongoDB across the process boundary: the tests' MongoDB is mongomock, which lives in the test process.
Pass ``mongo_seed`` (``{database: {collection: [documents]}}``, e.g. from :func:`mongo_snapshot`) and the
DAG run starts with those documents in its own mongomock; pass ``mongo_dump=<path>`` to get the run's
final documents back (read them with :func:`load_mongo_dump`). This works without any change to the hook:
the subprocess is started as ``python -m tests.dag_runner ...``, which makes every ``mongomock.MongoClient``
in it share one in-memory server, loads the seed, then hands over to Airflow's own CLI ``main()``. With
``KRAKEN_TEST_MONGO_URI`` set (a server both processes reach) the seed is written to the server before the
run and the dump read from it afterwards, limited to the seed's databases (else the connection's): other
tests share that server.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DAGS = REPO_ROOT / "example_dags"
_MIGRATED_MARKER = ".dag_runner_db_migrated"

#: One AIRFLOW_HOME per test process and Python interpreter unless the caller passes one.
_default_homes: dict[str, Path] = {}


def _airflow_env(airflow_home: Path, dags_folder: Path, env: Mapping[str, str] | None) -> dict[str, str]:
    """A clean environment: no AIRFLOW_* settings of the test process except its connections."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") or k.startswith("AIRFLOW_CONN_")
    }
    base.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }
    )
    base.update(env or {})
    return base


def airflow_executable(python: str = sys.executable) -> str:
    """The ``airflow`` script next to the interpreter (the venv's own)."""
    candidate = Path(python).parent / "airflow"
    return str(candidate) if candidate.exists() else "airflow"


def default_airflow_home(python: str = sys.executable) -> Path:
    if python not in _default_homes:
        _default_homes[python] = Path(tempfile.mkdtemp(prefix="kraken-dag-runner-"))
        atexit.register(shutil.rmtree, _default_homes[python], ignore_errors=True)
    return _default_homes[python]


def migrate(airflow_home: Path, *, python: str = sys.executable, timeout: float = 300) -> None:
    """``airflow db migrate`` once per AIRFLOW_HOME (remembered by a marker file in it)."""
    marker = airflow_home / _MIGRATED_MARKER
    if marker.exists():
        return
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = _airflow_env(airflow_home, EXAMPLE_DAGS, None)
    done = subprocess.run(
        [airflow_executable(python), "db", "migrate"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    marker.write_text("ok\n")


def run_dag(
    dag_id: str,
    conf: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    airflow_home: str | os.PathLike[str] | None = None,
    dags_folder: str | os.PathLike[str] = EXAMPLE_DAGS,
    mongo_seed: Mapping[str, Mapping[str, list[dict[str, Any]]]] | None = None,
    mongo_dump: str | os.PathLike[str] | None = None,
    timeout: float = 600,
    python: str = sys.executable,
    on_line: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``airflow dags test <dag_id> -c '<conf>'`` in a subprocess and return the finished process.

    ``on_line`` is called with every line of output (stdout and stderr, from reader threads) while the run
    goes on, e.g. to act when a task reaches a point (``"[DAG TEST] running trigger in line"`` is logged
    by both Airflow versions when a deferred task's trigger starts).

    The return code is not asserted here: ``airflow dags test`` may exit 0 although a task failed, so
    callers should assert on the run's effects (files, S3, ``mongo_dump``) or its output.
    """
    home = Path(airflow_home) if airflow_home is not None else default_airflow_home(python)
    migrate(home, python=python)
    args = ["dags", "test", dag_id, "-c", json.dumps(dict(conf or {}))]
    wire_uri = os.environ.get("KRAKEN_TEST_MONGO_URI", "").strip()
    if wire_uri:  # a server both processes reach: seed it here, run, read the test's own database back
        if mongo_seed is not None:
            _seed_server(wire_uri, mongo_seed)
        done = _run_streaming(
            [airflow_executable(python), *args], _airflow_env(home, Path(dags_folder), env), timeout, on_line
        )
        if mongo_dump is not None:
            databases = list(mongo_seed or {}) or [_connection_database(env)]
            Path(mongo_dump).write_text(_dumps(_dump_server(wire_uri, databases)))
        return done
    command = [
        python,
        "-m",
        "tests.dag_runner",
    ]  # installs the in-memory MongoDB stand-in, then Airflow's CLI
    if mongo_seed is not None:
        seed_file = Path(tempfile.mkstemp(prefix="mongo-seed-", suffix=".json", dir=home)[1])
        seed_file.write_text(_dumps(mongo_seed))
        command += ["--mongo-seed", str(seed_file)]
    if mongo_dump is not None:
        command += ["--mongo-dump", str(mongo_dump)]
    command += ["--", *args]
    return _run_streaming(command, _airflow_env(home, Path(dags_folder), env), timeout, on_line)


def _run_streaming(
    command: list[str], env: dict[str, str], timeout: float, on_line: Callable[[str], None] | None
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run`` with captured output that also hands every output line to ``on_line`` as it comes.

    On timeout the process is killed and ``subprocess.TimeoutExpired`` carries the output so far.
    """
    process = subprocess.Popen(
        command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
    )
    captured: dict[str, list[str]] = {"stdout": [], "stderr": []}

    def pump(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)
            if on_line is not None:
                # A faulty callback must not stall the pipe (and so the DAG run).
                with contextlib.suppress(Exception):
                    on_line(line)

    readers = [
        threading.Thread(target=pump, args=(process.stdout, captured["stdout"]), daemon=True),
        threading.Thread(target=pump, args=(process.stderr, captured["stderr"]), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        returncode = process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        for reader in readers:
            reader.join(5)
        raise subprocess.TimeoutExpired(
            command, timeout, output="".join(captured["stdout"]), stderr="".join(captured["stderr"])
        ) from None
    for reader in readers:
        reader.join(30)
    return subprocess.CompletedProcess(
        command, returncode, "".join(captured["stdout"]), "".join(captured["stderr"])
    )


# ------------------------------------------------------------------ reading the run's outcome


def _db(airflow_home: str | os.PathLike[str]) -> sqlite3.Connection:
    return sqlite3.connect(Path(airflow_home) / "airflow.db", timeout=30)


def latest_run_id(airflow_home: str | os.PathLike[str], dag_id: str) -> str | None:
    """run_id of the newest run of ``dag_id`` in that home's metadata database."""
    with contextlib.closing(_db(airflow_home)) as db:
        row = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
    return row[0] if row else None


def task_states(
    airflow_home: str | os.PathLike[str], dag_id: str, run_id: str | None = None
) -> dict[tuple[str, int], str]:
    """``{(task_id, map_index): state}`` of a run (default: the newest); same schema on 2.11 and 3.x."""
    run_id = run_id or latest_run_id(airflow_home, dag_id)
    with contextlib.closing(_db(airflow_home)) as db:
        rows = db.execute(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (dag_id, run_id),
        ).fetchall()
    return {(task_id, map_index): state for task_id, map_index, state in rows}


def xcom_return_value(
    airflow_home: str | os.PathLike[str],
    dag_id: str,
    task_id: str,
    map_index: int = -1,
    run_id: str | None = None,
) -> Any:
    """A task's ``return_value`` XCom (JSON-decoded; stored as text on 3.x, as bytes on 2.11)."""
    run_id = run_id or latest_run_id(airflow_home, dag_id)
    with contextlib.closing(_db(airflow_home)) as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND map_index = ? "
            "AND key = 'return_value'",
            (dag_id, run_id, task_id, map_index),
        ).fetchone()
    if row is None:
        raise LookupError(f"no return_value XCom for {dag_id}.{task_id}[{map_index}] in run {run_id}")
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value


def count_rows(
    airflow_home: str | os.PathLike[str], table: str, where: str = "1 = 1", args: tuple = ()
) -> int:
    """Rows in a metadata table (e.g. ``task_reschedule``, ``trigger``): progress of a run still going."""
    if not table.isidentifier():
        raise ValueError(f"not a table name: {table!r}")
    try:
        with contextlib.closing(_db(airflow_home)) as db:
            return int(db.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", args).fetchone()[0])
    except sqlite3.OperationalError:  # locked or not created yet: nothing to count yet
        return 0


# ------------------------------------------------------------------ mongomock across processes


def _dumps(data: Any) -> str:
    from bson import json_util

    return json_util.dumps(data, json_options=json_util.RELAXED_JSON_OPTIONS)


def _loads(text: str) -> Any:
    from bson import json_util

    return json_util.loads(text, json_options=json_util.RELAXED_JSON_OPTIONS)


def mongo_snapshot(database: Any, collections: list[str] | None = None) -> dict[str, dict[str, list[dict]]]:
    """``{database name: {collection: [documents]}}`` of a (mongomock or pymongo) database, for ``mongo_seed``."""
    names = collections if collections is not None else database.list_collection_names()
    return {database.name: {name: list(database[name].find()) for name in names}}


def load_mongo_dump(path: str | os.PathLike[str]) -> dict[str, dict[str, list[dict]]]:
    """The documents a DAG run left behind (written because ``mongo_dump`` was passed to :func:`run_dag`)."""
    return _loads(Path(path).read_text())


def _seed_server(uri: str, seed: Mapping[str, Mapping[str, list[dict[str, Any]]]]) -> None:
    """Make the seeded collections hold exactly the seed, as a fresh mongomock would."""
    import pymongo

    with pymongo.MongoClient(uri) as client:
        for database, collections in seed.items():
            for collection, documents in collections.items():
                client[database][collection].delete_many({})
                if documents:
                    client[database][collection].insert_many([dict(d) for d in documents])


def _dump_server(uri: str, databases: list[str]) -> dict[str, dict[str, list[dict]]]:
    """``{database: {collection: [documents]}}`` of the named databases only (a server is shared)."""
    import pymongo

    with pymongo.MongoClient(uri) as client:
        return {
            name: {
                collection: list(client[name][collection].find())
                for collection in client[name].list_collection_names()
            }
            for name in databases
        }


def _connection_database(env: Mapping[str, str] | None) -> str:
    """The database of the ``kraken_mongo_default`` connection the DAG run is given."""
    conn = (env or {}).get("AIRFLOW_CONN_KRAKEN_MONGO_DEFAULT") or os.environ[
        "AIRFLOW_CONN_KRAKEN_MONGO_DEFAULT"
    ]
    return json.loads(conn)["schema"]


def _dump_all(client: Any, path: Path) -> None:
    data = {
        name: {
            collection: list(client[name][collection].find())
            for collection in client[name].list_collection_names()
        }
        for name in client.list_database_names()
    }
    path.write_text(_dumps(data))


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.dag_runner [--mongo-seed F] [--mongo-dump F] -- <airflow CLI args>``."""
    parser = argparse.ArgumentParser(prog="python -m tests.dag_runner")
    parser.add_argument("--mongo-seed", type=Path)
    parser.add_argument("--mongo-dump", type=Path)
    parser.add_argument("airflow_args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    airflow_args = options.airflow_args
    if airflow_args and airflow_args[0] == "--":
        airflow_args = airflow_args[1:]
    from kraken_standins.mongo import InMemoryMongoClient, install

    install(one_store=True)  # the seed, the DAG's hook and the dump all see one in-memory store
    client = InMemoryMongoClient()
    if options.mongo_seed is not None:
        for database, collections in _loads(options.mongo_seed.read_text()).items():
            for collection, documents in collections.items():
                if documents:
                    client[database][collection].insert_many(documents)
    from airflow.__main__ import main as airflow_main

    sys.argv = ["airflow", *airflow_args]
    try:
        airflow_main()
    finally:
        if options.mongo_dump is not None:
            _dump_all(client, options.mongo_dump)


if __name__ == "__main__":
    main()
