"""Tests of KrakenMongoHook: Connection parsing, embedded mode, alias handling, reachability."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import mongoengine
import mongomock
import pytest
from mongoengine.base.common import _document_registry

from airflow_provider_kraken_s3.core.errors import InvalidInputError, MongoUnavailableError
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook, KrakenMongoSettings
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.records.models import KRAKEN_DB_ALIAS, RawFile
from kraken_standins.mongo import InMemoryMongoClient
from tests.conftest_mongo import (
    KRAKEN_MONGO_CONN_ENV,
    disconnect_kraken_alias,
    kraken_connection_json,
    mongomock_connection_json,
    mongomock_only,
)

PASSWORD = "s3cr3t-P@ss"


@pytest.fixture(autouse=True)
def _clean_alias():
    """Every test starts and ends without our alias, whatever it connected to."""
    disconnect_kraken_alias()
    yield
    disconnect_kraken_alias()


def _set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str = "kraken_mongo_default", **conn: Any) -> None:
    conn.setdefault("conn_type", "kraken_mongo")
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))


def _settings(monkeypatch: pytest.MonkeyPatch, **conn: Any) -> KrakenMongoSettings:
    _set_conn(monkeypatch, **conn)
    return KrakenMongoHook().get_connection_settings()


# --- class attributes and UI -------------------------------------------------------------------------


def test_hook_attributes() -> None:
    assert KrakenMongoHook.conn_name_attr == "mongo_conn_id"
    assert KrakenMongoHook.default_conn_name == "kraken_mongo_default"
    assert KrakenMongoHook.conn_type == "kraken_mongo"
    assert KrakenMongoHook.hook_name == "Kraken MongoDB"
    assert KrakenMongoHook().mongo_conn_id == "kraken_mongo_default"
    assert KrakenMongoHook("other").mongo_conn_id == "other"


def test_ui_field_behaviour() -> None:
    behaviour = KrakenMongoHook.get_ui_field_behaviour()
    assert behaviour["hidden_fields"] == []
    assert behaviour["relabeling"]["host"] == "Host or mongodb:// URI"
    assert behaviour["relabeling"]["schema"] == "Database"
    assert set(behaviour["placeholders"]) <= {"host", "port", "schema", "login", "password", "extra"}
    json.loads(behaviour["placeholders"]["extra"])


# --- parsing the Connection (no network) ----------------------------------------------------------------


def test_hostname_port_login_password_extras(monkeypatch) -> None:
    settings = _settings(
        monkeypatch,
        host="mongo.example.org",
        port=27018,
        schema="krakendb",
        login="kraken",
        password=PASSWORD,
        extra={"replicaSet": "rs0", "tls": True, "serverSelectionTimeoutMS": 5000},
    )
    kwargs = settings.connect_kwargs()
    assert kwargs["host"] == "mongodb://mongo.example.org:27018"
    assert kwargs["db"] == "krakendb"
    assert kwargs["alias"] == KRAKEN_DB_ALIAS
    assert kwargs["username"] == "kraken"
    assert kwargs["password"] == PASSWORD
    assert kwargs["replicaSet"] == "rs0"
    assert kwargs["tls"] is True
    assert kwargs["serverSelectionTimeoutMS"] == 5000
    assert kwargs["authSource"] == "krakendb"  # alphakraken's users live in its database
    assert kwargs["uuidRepresentation"] == "standard"
    assert "mongo_client_class" not in kwargs
    assert PASSWORD not in repr(settings)
    assert PASSWORD not in settings.describe()


def test_explicit_auth_source_and_several_hosts(monkeypatch) -> None:
    settings = _settings(
        monkeypatch,
        host="h1,h2:27019",
        port=27017,
        schema="krakendb",
        login="kraken",
        password="pw",
        extra={"authSource": "admin"},
    )
    kwargs = settings.connect_kwargs()
    assert kwargs["host"] == "mongodb://h1:27017,h2:27019"
    assert kwargs["authSource"] == "admin"


def test_no_credentials_no_auth_source(monkeypatch) -> None:
    kwargs = _settings(monkeypatch, host="localhost", schema="krakendb").connect_kwargs()
    assert kwargs["host"] == "mongodb://localhost"
    assert "username" not in kwargs
    assert "password" not in kwargs
    assert "authSource" not in kwargs


def test_full_mongodb_uri(monkeypatch) -> None:
    settings = _settings(
        monkeypatch,
        host="mongodb://alice:p%40ss%3Aword@h1:27017,h2:27018/authdb?replicaSet=rs0&readPreference=secondary",
        schema="krakendb",
    )
    kwargs = settings.connect_kwargs()
    assert kwargs["host"] == "mongodb://h1:27017,h2:27018"  # no credentials, options or path in the URI
    assert kwargs["db"] == "krakendb"
    assert kwargs["username"] == "alice"
    assert kwargs["password"] == "p@ss:word"
    assert kwargs["replicaSet"] == "rs0"
    assert kwargs["readPreference"] == "secondary"
    assert kwargs["authSource"] == "authdb"  # URI semantics: the path names the auth database
    assert "p@ss" not in settings.describe()


def test_uri_database_used_when_schema_empty(monkeypatch) -> None:
    settings = _settings(monkeypatch, host="mongodb://bob:pw@db.example.org/krakendb")
    assert settings.database == "krakendb"
    assert settings.options["authSource"] == "krakendb"


def test_connection_fields_override_uri(monkeypatch) -> None:
    settings = _settings(
        monkeypatch,
        host="mongodb://alice:old@db.example.org/?replicaset=old&authSource=admin",
        port=27099,
        schema="krakendb",
        login="bob",
        password="new",
        extra={"replicaSet": "new"},
    )
    kwargs = settings.connect_kwargs()
    assert kwargs["host"] == "mongodb://db.example.org:27099"
    assert kwargs["username"] == "bob"
    assert kwargs["password"] == "new"
    assert kwargs["replicaSet"] == "new"
    assert "replicaset" not in kwargs  # pymongo options ignore case: only one spelling may remain
    assert kwargs["authSource"] == "admin"


def test_uri_port_wins_over_connection_port_when_given(monkeypatch) -> None:
    settings = _settings(monkeypatch, host="mongodb://db.example.org:27020", port=27017, schema="k")
    assert settings.hosts == ("db.example.org:27020",)


def test_srv_uri(monkeypatch) -> None:
    settings = _settings(
        monkeypatch,
        host="mongodb+srv://kraken:pw@cluster0.example.net/?retryWrites=true&w=majority",
        schema="krakendb",
        port=27017,  # ignored: SRV records carry the ports
    )
    kwargs = settings.connect_kwargs()
    assert kwargs["host"] == "mongodb+srv://cluster0.example.net"
    assert kwargs["retryWrites"] == "true"
    assert kwargs["w"] == "majority"
    assert kwargs["username"] == "kraken"


def test_official_mongo_connection_type(monkeypatch) -> None:
    settings = _settings(
        monkeypatch,
        conn_type="mongo",
        host="cluster0.example.net",
        schema="krakendb",
        login="kraken",
        password="pw",
        extra={"srv": True, "ssl": True, "allow_insecure": True, "appname": "kraken-s3"},
    )
    kwargs = settings.connect_kwargs()
    assert kwargs["host"] == "mongodb+srv://cluster0.example.net"
    assert kwargs["tls"] is True
    assert kwargs["tlsAllowInvalidCertificates"] is True
    assert kwargs["appname"] == "kraken-s3"
    for extra_only in ("srv", "ssl", "allow_insecure"):
        assert extra_only not in kwargs


def test_string_extras_from_uri_style_connections(monkeypatch) -> None:
    settings = _settings(monkeypatch, host="db", schema="k", extra={"srv": "false", "ssl": "true"})
    assert settings.scheme == "mongodb"
    assert settings.options["tls"] is True


def test_missing_database_names_conn_id(monkeypatch) -> None:
    _set_conn(monkeypatch, conn_id="kraken_no_db", host="db.example.org")
    with pytest.raises(InvalidInputError, match="kraken_no_db"):
        KrakenMongoHook("kraken_no_db").connect()


@pytest.mark.parametrize(
    "host",
    [
        "",
        "postgres://db.example.org/k",
        "mongodb+srv://a.example.net,b.example.net/k",
        "mongodb:///k",
        "mongodb://kraken:hunter2@/k",
    ],
)
def test_invalid_hosts(monkeypatch, host) -> None:
    _set_conn(monkeypatch, host=host, schema="k")
    with pytest.raises(InvalidInputError, match="kraken_mongo_default") as err:
        KrakenMongoHook().get_connection_settings()
    assert "hunter2" not in str(err.value)


def test_unknown_option_is_invalid_input(monkeypatch) -> None:
    _set_conn(monkeypatch, host="localhost", schema="k", extra={"notAPymongoOption": 1})
    with pytest.raises(InvalidInputError, match="notAPymongoOption"):
        KrakenMongoHook().connect()


# --- connecting ------------------------------------------------------------------------------------


def test_a_registered_scheme_connects_with_its_client_class(monkeypatch) -> None:
    kwargs = _settings(monkeypatch, host="mongomock://localhost", schema="k").connect_kwargs()
    assert kwargs["host"] == "mongodb://localhost"
    assert kwargs["mongo_client_class"] is InMemoryMongoClient


def test_an_unregistered_scheme_is_refused_naming_the_known_ones(monkeypatch) -> None:
    with pytest.raises(
        InvalidInputError, match=r"host scheme 'montydb' is not one of \['mongodb', 'mongodb\+srv'"
    ):
        _settings(monkeypatch, host="montydb://localhost", schema="k")


@pytest.mark.slow  # starts a Python (or a second moto_server) process
def test_the_runtime_package_imports_no_stand_in() -> None:
    """mongomock and moto are test and demo stand-ins: the provider's modules never import them."""
    code = (
        "import sys, airflow_provider_kraken_s3.hooks.kraken_mongo, airflow_provider_kraken_s3.records.lease, "
        "airflow_provider_kraken_s3.operators.raw_file_backup, airflow_provider_kraken_s3.cli.main; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'mongomock', 'moto', 'kraken_standins'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert done.stdout.strip().splitlines()[-1] == "[]"


@mongomock_only
def test_connect_registers_our_alias(kraken_mongo) -> None:
    assert kraken_mongo.connect() == KRAKEN_DB_ALIAS
    client = mongoengine.get_connection(alias=KRAKEN_DB_ALIAS)
    assert isinstance(client, InMemoryMongoClient)
    assert mongoengine.get_db(alias=KRAKEN_DB_ALIAS).name == kraken_mongo.get_connection_settings().database


def test_same_settings_reuse_client_and_data(kraken_mongo, make_raw_file) -> None:
    make_raw_file("shared.raw")
    client = mongoengine.get_connection(alias=KRAKEN_DB_ALIAS)

    KrakenMongoHook().connect()  # e.g. an operator building its own hook from the same connection

    assert mongoengine.get_connection(alias=KRAKEN_DB_ALIAS) is client
    assert store.get_raw_file("shared.raw").id == "shared.raw"


def test_changed_settings_reconnect(kraken_mongo, make_raw_file, monkeypatch) -> None:
    make_raw_file("first.raw")
    other_db = f"kraken_test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(KRAKEN_MONGO_CONN_ENV, kraken_connection_json(other_db))

    KrakenMongoHook().connect()

    assert mongoengine.get_db(alias=KRAKEN_DB_ALIAS).name == other_db
    assert RawFile._get_collection().database.name == other_db  # no stale cached collection
    assert RawFile.objects.count() == 0


def test_default_alias_untouched(monkeypatch) -> None:
    mongoengine.connect(
        "other_app_db",
        alias="default",
        host="mongodb://otherhost",
        mongo_client_class=mongomock.MongoClient,
        uuidRepresentation="standard",
    )
    try:
        default_db = mongoengine.get_db()
        default_db.raw_file.insert_one({"_id": "theirs.raw"})

        monkeypatch.setenv(KRAKEN_MONGO_CONN_ENV, mongomock_connection_json("kraken_a"))
        KrakenMongoHook().connect()
        monkeypatch.setenv(KRAKEN_MONGO_CONN_ENV, mongomock_connection_json("kraken_b"))
        KrakenMongoHook().connect()  # reconnect: must only disconnect our alias

        assert mongoengine.get_db() is default_db
        assert mongoengine.get_db().name == "other_app_db"
        assert mongoengine.get_db().raw_file.find_one({"_id": "theirs.raw"}) is not None
        assert RawFile.objects.count() == 0  # ours does not see theirs
    finally:
        mongoengine.disconnect(alias="default")


def _define_other_rawfile() -> type[mongoengine.Document]:
    """A second document class named ``RawFile`` on the ``default`` alias, like alphakraken's own model."""

    class RawFile(mongoengine.Document):
        meta = {"collection": "raw_file", "strict": False}

    return RawFile


def test_reconnect_survives_another_rawfile_document_class(kraken_mongo, make_raw_file, monkeypatch) -> None:
    """Defining the other class replaces ours in mongoengine's class registry (by name)."""
    make_raw_file("first.raw")
    assert RawFile._get_collection().database.name == kraken_mongo.get_connection_settings().database
    monkeypatch.setitem(_document_registry, "RawFile", RawFile)  # put ours back after the test
    _define_other_rawfile()
    assert _document_registry["RawFile"] is not RawFile

    other_db = f"kraken_test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv(KRAKEN_MONGO_CONN_ENV, kraken_connection_json(other_db))
    KrakenMongoHook().connect()

    assert RawFile._get_collection().database.name == other_db  # no stale cached collection
    assert RawFile.objects.count() == 0


# --- reachability ----------------------------------------------------------------------------------


def test_check_reachable_embedded(kraken_mongo) -> None:
    kraken_mongo.check_reachable()
    ok, message = kraken_mongo.test_connection()
    assert ok
    assert kraken_mongo.get_connection_settings().database in message


def _unreachable(monkeypatch: pytest.MonkeyPatch) -> KrakenMongoHook:
    _set_conn(
        monkeypatch,
        host="127.0.0.1",
        port=1,
        schema="kraken_unreachable",
        login="kraken",
        password=PASSWORD,
        extra={"serverSelectionTimeoutMS": 200},
    )
    return KrakenMongoHook()


def test_unreachable_server(monkeypatch) -> None:
    hook = _unreachable(monkeypatch)
    with pytest.raises(MongoUnavailableError) as err:
        hook.check_reachable()
    message = str(err.value)
    assert "127.0.0.1" in message
    assert "kraken_unreachable" in message
    assert "retried" in message
    assert PASSWORD not in message


def test_unreachable_server_uri_password_not_leaked(monkeypatch) -> None:
    _set_conn(
        monkeypatch,
        host=f"mongodb://kraken:{PASSWORD.replace('@', '%40')}@127.0.0.1:1/?serverSelectionTimeoutMS=200",
        schema="kraken_unreachable",
    )
    with pytest.raises(MongoUnavailableError) as err:
        KrakenMongoHook().check_reachable()
    assert PASSWORD not in str(err.value)
    assert "%40" not in str(err.value)


def test_test_connection_reports_failure_without_password(monkeypatch) -> None:
    ok, message = _unreachable(monkeypatch).test_connection()
    assert not ok
    assert "127.0.0.1" in message
    assert PASSWORD not in message


def test_test_connection_reports_bad_settings(monkeypatch) -> None:
    _set_conn(monkeypatch, host="db.example.org")
    ok, message = KrakenMongoHook().test_connection()
    assert not ok
    assert "database" in message
