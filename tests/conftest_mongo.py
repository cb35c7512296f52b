"""pytest plugin: alphakraken's MongoDB behind a real Airflow Connection: in memory (mongomock) by default,
or a MongoDB wire server when ``KRAKEN_TEST_MONGO_URI`` names one.

Enable with ``pytest_plugins = ["tests.conftest_mongo"]`` in ``tests/conftest.py`` (or ``-p
tests.conftest_mongo``). The fixture goes through the same path as production code: an
``AIRFLOW_CONN_KRAKEN_MONGO_DEFAULT`` connection and ``KrakenMongoHook().connect()``. With mongomock (host
``mongomock://localhost``) mongoengine reuses one client for identical settings, so every hook built from
that connection during the test (in an operator, a sensor, a helper) sees the same data. With
``KRAKEN_TEST_MONGO_URI=mongodb://127.0.0.1:PORT/?directConnection=true`` (``scripts/mongo-server start``
prints one) every test gets its own database on that server, dropped by name afterwards, and separate
processes (``airflow dags test`` subprocesses) see the same data as the test.

Fixtures:

- ``kraken_mongo`` — connected :class:`KrakenMongoHook`, fresh database per test, dropped afterwards.
- ``kraken_db`` — the pymongo ``Database`` behind it, for raw (untyped) inserts and assertions.
- ``make_raw_file`` — factory inserting a ``RawFile`` document; see :func:`insert_raw_file`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

import mongoengine
import pymongo
import pytest

os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook
from airflow_provider_kraken_s3.records.models import KRAKEN_DB_ALIAS, BackupStatus, RawFile
from kraken_standins import mongo as standin_mongo

standin_mongo.install()  # ``mongomock://`` connections get the in-memory stand-in in the test process

KRAKEN_MONGO_CONN_ENV = "AIRFLOW_CONN_KRAKEN_MONGO_DEFAULT"

#: A MongoDB server (or the wire emulator of scripts/mongo-server) for the tests instead of mongomock.
WIRE_URI = os.environ.get("KRAKEN_TEST_MONGO_URI", "").strip()

#: For the few tests about mongomock itself (the embedded mode), which a server cannot exercise.
mongomock_only = pytest.mark.skipif(
    bool(WIRE_URI), reason="about the in-memory mongomock stand-in; KRAKEN_TEST_MONGO_URI points at a server"
)


def mongomock_connection_json(database: str, **extra: Any) -> str:
    """A ``kraken_mongo`` Airflow connection (JSON form, valid on 2.11 and 3.x) on the in-memory stand-in."""
    return json.dumps(standin_mongo.connection(database, **extra))


def kraken_connection_json(database: str) -> str:
    """The tests' ``kraken_mongo`` connection for ``database``: on the server of ``KRAKEN_TEST_MONGO_URI`` if
    set, else in memory."""
    if not WIRE_URI:
        return mongomock_connection_json(database)
    return json.dumps({"conn_type": "kraken_mongo", "host": WIRE_URI, "schema": database})


def drop_test_database(database: str) -> None:
    """Drop one test database by name (a server outlives the test; mongomock's memory does not need it)."""
    if WIRE_URI:
        with pymongo.MongoClient(WIRE_URI, serverSelectionTimeoutMS=10_000) as client:
            client.drop_database(database)


def disconnect_kraken_alias() -> None:
    """Forget our alias (and RawFile's cached collection) so the next test starts clean."""
    mongoengine.disconnect(alias=KRAKEN_DB_ALIAS)
    RawFile._disconnect()


@pytest.fixture
def kraken_mongo(monkeypatch: pytest.MonkeyPatch) -> Iterator[KrakenMongoHook]:
    """``kraken_mongo_default`` → a fresh database of the test's own, connected under the ``kraken_s3`` alias.

    Afterwards the test's database is dropped by name, and so is the one the alias points at if the test
    re-pointed it to another (a server keeps what is not dropped)."""
    database = f"kraken_test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(KRAKEN_MONGO_CONN_ENV, kraken_connection_json(database))
    hook = KrakenMongoHook()
    hook.connect()
    try:
        yield hook
    finally:
        try:
            db = mongoengine.get_db(alias=KRAKEN_DB_ALIAS)
            db.client.drop_database(db.name)
        except mongoengine.connection.ConnectionFailure:
            pass  # the test disconnected the alias itself
        disconnect_kraken_alias()
        drop_test_database(database)


@pytest.fixture
def kraken_db(kraken_mongo: KrakenMongoHook):
    """pymongo ``Database`` of the test's alphakraken database."""
    return kraken_mongo.get_conn()


def insert_raw_file(
    raw_file_id: str = "20240101_astral1_sample.raw",
    *,
    extra_fields: Mapping[str, Any] | None = None,
    **fields: Any,
) -> RawFile:
    """Insert a RawFile as alphakraken would have left it after the local copy, and return it loaded.

    ``fields`` override model fields (``size``, ``file_info``, ``backup_status``, ...); ``extra_fields`` are
    stored raw, bypassing the model, to imitate fields only alphakraken knows (``status``, ``lab_note``).
    The kraken_s3 alias must be connected (use the ``kraken_mongo`` fixture).
    """
    size = fields.pop("size", 1024)
    values: dict[str, Any] = {
        "project_id": "P1234",
        "instrument_id": "astral1",
        "backup_base_path": "/fs/pool/backup/astral1/2024_01",
        "size": size,
        "created_at": datetime(2024, 1, 1, 12, 0, 0, tzinfo=timezone.utc),
        "file_info": {raw_file_id: [size, "d41d8cd98f00b204e9800998ecf8427e"]},
        "backup_status": BackupStatus.COPYING_DONE,
    }
    values.update(fields)
    document = RawFile(id=raw_file_id, **values).to_mongo().to_dict()
    document.update(extra_fields or {})
    RawFile._get_collection().insert_one(document)
    return RawFile.objects.get(id=raw_file_id)


@pytest.fixture
def make_raw_file(kraken_mongo: KrakenMongoHook):
    """Factory fixture: ``make_raw_file("x.raw", size=..., extra_fields={...})`` → loaded RawFile."""
    return insert_raw_file


def set_record(raw_file_id: str, **fields: Any) -> None:
    """Put a RawFile into a state directly (as another attempt or alphakraken would have left it)."""
    RawFile._get_collection().update_one({"_id": raw_file_id}, {"$set": fields})
