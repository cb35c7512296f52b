"""An in-memory MongoDB for the demo, the tests and the benchmarks: mongomock behind ``mongomock://`` hosts.

The provider connects only to MongoDB's own schemes; :func:`install` registers ``mongomock://`` with its
Mongo hook, so an Airflow Connection with host ``mongomock://localhost`` gets this in-process store. Every
process that should use it calls :func:`install` once (pytest's plugin, the demo, ``tests/dag_runner.py``'s
``airflow dags test`` subprocesses, the CLI subprocess of the output tests).

mongomock has no ``hello`` command; the lease reads the database server's clock from ``hello``'s
``localTime``, so the stand-in answers it with mongomock's own clock, as a server answers with its own.
"""

from __future__ import annotations

from typing import Any, ClassVar

import mongomock
from mongomock.database import Database
from mongomock.store import ServerStore

from airflow_provider_kraken_s3.hooks.kraken_mongo import register_client_class

SCHEME = "mongomock"


def connection(database: str, **extra: Any) -> dict[str, Any]:
    """An Airflow Connection (as a dict for ``AIRFLOW_CONN_*`` JSON) pointing at the stand-in."""
    conn: dict[str, Any] = {"conn_type": "kraken_mongo", "host": f"{SCHEME}://localhost", "schema": database}
    if extra:
        conn["extra"] = extra
    return conn


class InMemoryMongoClient(mongomock.MongoClient):  # type: ignore[misc]
    """mongomock's client, marked as an in-process store (the hook says so once in the task log).

    mongomock clients do not share data; after ``install(one_store=True)`` every client of this process does
    (a process that seeds the store with one client and runs a DAG whose hook makes another).
    """

    IN_MEMORY = True
    shared_store: ClassVar[ServerStore | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if self.shared_store is not None:
            kwargs.setdefault("_store", self.shared_store)
        super().__init__(*args, **kwargs)


_HELLO = {"hello", "ismaster", "isMaster"}


def _command_with_hello(self: Database, command: Any, *args: Any, **kwargs: Any) -> Any:
    name = command if isinstance(command, str) else next(iter(command), None)
    if name in _HELLO:
        return {"ok": 1.0, "isWritablePrimary": True, "localTime": mongomock.utcnow()}
    return _original_command(self, command, *args, **kwargs)


_original_command = Database.command


def install(*, one_store: bool = False) -> None:
    """Make ``mongomock://`` hosts connect to the in-memory stand-in in this process (idempotent);
    ``one_store``: every client of the process sees the same data."""
    if one_store and InMemoryMongoClient.shared_store is None:
        InMemoryMongoClient.shared_store = ServerStore()
    if Database.command is not _command_with_hello:
        Database.command = _command_with_hello  # type: ignore[method-assign]
    register_client_class(SCHEME, InMemoryMongoClient)
