"""Airflow hook that connects mongoengine to alphakraken's MongoDB under this provider's own alias.

Why a hook of our own instead of the official Mongo provider's ``MongoHook``: the store uses mongoengine
documents, which need a *registered mongoengine alias*, not a pymongo client. The hook reads an Airflow
Connection (of its own ``kraken_mongo`` type, or the official ``mongo`` type), turns it into
``mongoengine.connect(...)`` arguments and registers them under :data:`KRAKEN_DB_ALIAS`. It never touches
mongoengine's ``default`` alias, which other DAG code (alphakraken's own models) may be using.

The provider knows MongoDB's own schemes only. A process may register a client class for another scheme
(:func:`register_client_class`): the project's demo and tests register ``mongomock://`` for an in-memory
stand-in (``kraken_standins.mongo``, outside this package), which the hook connects as
``host="mongodb://<host>", mongo_client_class=<that class>``; mongoengine hands out one client for identical
settings, so everything that connects through this hook with the same Connection sees the same data.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

import mongoengine
import pymongo
from airflow.providers.common.compat.sdk import BaseHook
from pymongo.database import Database
from pymongo.errors import ConfigurationError, PyMongoError

from airflow_provider_kraken_s3 import MONGO_UI_FIELD_BEHAVIOUR
from airflow_provider_kraken_s3.core.errors import InvalidInputError, MongoUnavailableError
from airflow_provider_kraken_s3.records.models import KRAKEN_DB_ALIAS, RawFile

log = logging.getLogger(__name__)

_MONGODB_SCHEMES = ("mongodb", "mongodb+srv")

#: Client classes for schemes beyond MongoDB's own, registered by the process that needs them (the demo and
#: the tests: an in-memory stand-in). Empty in a deployment.
_CLIENT_CLASSES: dict[str, type] = {}


def register_client_class(scheme: str, client_class: type) -> None:
    """Connect ``<scheme>://`` hosts with ``client_class`` (a pymongo-compatible client) in this process.

    A class whose ``IN_MEMORY`` attribute is true is an in-process store: the hook says so once in the task
    log, since under a real scheduler every task's process would start with an empty one.
    """
    _CLIENT_CLASSES[scheme.lower()] = client_class


def _uri_schemes() -> tuple[str, ...]:
    return (*_MONGODB_SCHEMES, *_CLIENT_CLASSES)


# Extras that describe the connection rather than being pymongo options (``srv``, ``ssl`` and
# ``allow_insecure`` come from the official Mongo provider's ``mongo`` connection type).
_NON_PYMONGO_EXTRAS = frozenset({"srv", "ssl", "allow_insecure"})

#: Seconds a reachability check may take before MongoDB counts as unavailable.
DEFAULT_PING_TIMEOUT = 5.0


def _as_bool(value: Any) -> bool:
    """Interpret an extra that may arrive as JSON bool or as string (URI-style connections)."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


def _has_port(host: str) -> bool:
    """Whether one ``host[:port]`` entry names a port (IPv6 literals are bracketed: ``[::1]:27017``)."""
    if host.startswith("["):
        return "]:" in host
    return ":" in host


def _redact(text: str, secret: str | None) -> str:
    """Remove a password from a message that may quote a URI or a driver error."""
    if not secret:
        return text
    return text.replace(secret, "***")


@dataclass(frozen=True)
class KrakenMongoSettings:
    """Everything needed to connect, parsed from one Airflow Connection (no network access)."""

    conn_id: str
    database: str
    scheme: str  # mongodb, mongodb+srv, or a scheme registered with register_client_class
    hosts: tuple[str, ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: pymongo client options (``authSource``, ``tls``, ``replicaSet``, ``serverSelectionTimeoutMS``, ...).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def client_class(self) -> type | None:
        """The registered client class for a non-MongoDB scheme (None: pymongo's own client)."""
        return _CLIENT_CLASSES.get(self.scheme)

    @property
    def in_memory(self) -> bool:
        """Whether the store lives in this process (a registered in-memory stand-in)."""
        return bool(getattr(self.client_class, "IN_MEMORY", False))

    @property
    def display_host(self) -> str:
        """Host part for messages and logs: scheme and hosts, never credentials."""
        return f"{self.scheme}://{','.join(self.hosts)}"

    def connect_kwargs(self) -> dict[str, Any]:
        """Arguments for ``mongoengine.connect``.

        The host URI carries neither credentials nor options: mongoengine lets a URI's username and
        options override the separate arguments, but the Airflow Connection's fields must win, so
        everything except scheme and hosts is passed as keyword arguments.
        """
        kwargs: dict[str, Any] = {"db": self.database, "alias": KRAKEN_DB_ALIAS, **self.options}
        # Without it mongoengine warns and falls back to the legacy UUID encoding; RawFile stores no UUIDs.
        if not any(key.lower() == "uuidrepresentation" for key in kwargs):
            kwargs["uuidRepresentation"] = "standard"
        if self.client_class is not None:
            kwargs["host"] = f"mongodb://{','.join(self.hosts)}"
            kwargs["mongo_client_class"] = self.client_class
        else:
            kwargs["host"] = f"{self.scheme}://{','.join(self.hosts)}"
        if self.username is not None:
            kwargs["username"] = self.username
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs

    def describe(self) -> str:
        """Where we connect, for messages: host, database and Airflow connection id (no password)."""
        return f"MongoDB {self.display_host} (database {self.database!r}, connection {self.conn_id!r})"


def _split_uri(uri: str) -> tuple[str, str | None, str | None, str, str | None, list[tuple[str, str]]]:
    """Split a MongoDB URI into scheme, user, password, hosts, database and query options.

    Done by hand rather than with ``pymongo.uri_parser``: that one resolves ``mongodb+srv`` names over DNS,
    and building settings (for the Connections UI, for tests) must not need the network.
    """
    parts = urlsplit(uri)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user = password = None
    if userinfo:
        raw_user, sep, raw_password = userinfo.partition(":")
        user = unquote(raw_user) or None
        password = unquote(raw_password) if sep else None
    database = unquote(parts.path.lstrip("/")) or None
    return (
        parts.scheme.lower(),
        user,
        password,
        hosts,
        database,
        parse_qsl(parts.query, keep_blank_values=True),
    )


def _merge_options(target: dict[str, Any], key: str, value: Any) -> None:
    """Set a pymongo option, replacing any spelling of the same name (pymongo options ignore case)."""
    for existing in [k for k in target if k.lower() == key.lower()]:
        del target[existing]
    target[key] = value


def settings_from_connection(conn: Any, conn_id: str) -> KrakenMongoSettings:
    """Parse an Airflow Connection (``kraken_mongo`` or ``mongo`` type) into :class:`KrakenMongoSettings`.

    Rules, in the order a reader of the Connection form would expect:

    - *host* is a hostname (``db.example.org``, or ``h1:27017,h2:27017``), a ``mongodb://`` or
      ``mongodb+srv://`` URI, or ``<scheme>://host`` for a scheme registered with :func:`register_client_class`.
    - Connection fields win over the URI: *login*/*password* replace the URI's credentials, *port* applies
      to hosts that name none, *schema* replaces the URI's database. The database is required.
    - Extras are pymongo options and win over the URI's query options. ``srv: true`` selects the
      ``mongodb+srv`` scheme, ``ssl`` means ``tls``, ``allow_insecure`` skips certificate checks (the
      official Mongo provider's extras).
    - With credentials and no ``authSource`` the user authenticates against the URI's database if it names
      one, else against the Connection's database (alphakraken creates its users in its database).
    """
    raw_host = (conn.host or "").strip()
    if not raw_host:
        raise InvalidInputError(
            f"Airflow connection {conn_id!r} has no host; set a hostname or mongodb:// URI."
        )

    options: dict[str, Any] = {}
    uri_user = uri_password = uri_database = None
    scheme = "mongodb"
    if "://" in raw_host:
        scheme, uri_user, uri_password, host_part, uri_database, query = _split_uri(raw_host)
        if scheme not in _uri_schemes():
            raise InvalidInputError(
                f"Airflow connection {conn_id!r}: host scheme {scheme!r} is not one of {list(_uri_schemes())}."
            )
        for key, value in query:
            existing = next((k for k in options if k.lower() == key.lower()), None)
            if existing is not None:  # repeated option, e.g. readPreferenceTags
                previous = options[existing]
                options[existing] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                options[key] = value
    else:
        host_part = raw_host
    hosts = [h.strip() for h in host_part.split(",") if h.strip()]
    if not hosts:
        # The host is not quoted: a URI may carry a password.
        raise InvalidInputError(f"Airflow connection {conn_id!r}: the host field names no server.")

    extras = dict(conn.extra_dejson or {})
    if _as_bool(extras.get("srv", False)) and scheme == "mongodb":
        scheme = "mongodb+srv"
    if conn.port:
        if scheme == "mongodb+srv":
            log.warning(
                "Connection %r: port %s ignored, mongodb+srv looks ports up in DNS.", conn_id, conn.port
            )
        else:
            hosts = [h if _has_port(h) else f"{h}:{int(conn.port)}" for h in hosts]
    if scheme == "mongodb+srv" and len(hosts) != 1:
        raise InvalidInputError(f"Airflow connection {conn_id!r}: mongodb+srv needs exactly one host name.")

    for key, value in extras.items():
        if key not in _NON_PYMONGO_EXTRAS:
            _merge_options(options, key, value)
    if "ssl" in extras and not any(k.lower() == "tls" for k in extras):
        _merge_options(options, "tls", _as_bool(extras["ssl"]))
    if _as_bool(extras.get("allow_insecure", False)):
        _merge_options(options, "tlsAllowInvalidCertificates", True)

    database = (conn.schema or "").strip() or uri_database
    if not database:
        raise InvalidInputError(
            f"Airflow connection {conn_id!r} names no database: set its Schema (Database) field "
            "to the database alphakraken uses."
        )
    username = conn.login or uri_user
    password = conn.password or uri_password
    if username and not any(k.lower() == "authsource" for k in options):
        options["authSource"] = uri_database or database

    return KrakenMongoSettings(
        conn_id=conn_id,
        database=database,
        scheme=scheme,
        hosts=tuple(hosts),
        username=username or None,
        password=password or None,
        options=options,
    )


class KrakenMongoHook(BaseHook):
    """Connect mongoengine's ``kraken_s3`` alias to alphakraken's MongoDB from an Airflow Connection.

    Usage: ``KrakenMongoHook(mongo_conn_id).connect()`` once per task, then use
    :mod:`airflow_provider_kraken_s3.records.store`. ``check_reachable()`` turns an unreachable server into a
    :class:`MongoUnavailableError`, which the operators let Airflow retry.
    """

    conn_name_attr = "mongo_conn_id"
    default_conn_name = "kraken_mongo_default"
    conn_type = "kraken_mongo"
    hook_name = "Kraken MongoDB"

    #: Connection types whose Connections this hook understands.
    supported_conn_types: ClassVar[frozenset[str]] = frozenset({"kraken_mongo", "mongo"})

    def __init__(self, mongo_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mongo_conn_id = mongo_conn_id
        self._settings: KrakenMongoSettings | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Labels and placeholders of the Connection form (Airflow < 3.2 reads them from here)."""
        behaviour = dict(MONGO_UI_FIELD_BEHAVIOUR)
        behaviour["hidden_fields"] = behaviour.pop("hidden-fields")  # the hook spells it with "_"
        return behaviour

    def get_connection_settings(self) -> KrakenMongoSettings:
        """Read and parse the Airflow Connection once per hook instance."""
        if self._settings is None:
            conn = self.get_connection(self.mongo_conn_id)
            conn_type = (conn.conn_type or "").replace("-", "_")
            if conn_type and conn_type not in self.supported_conn_types:
                log.warning(
                    "Connection %r has type %r; reading it as a %s connection.",
                    self.mongo_conn_id,
                    conn.conn_type,
                    self.conn_type,
                )
            self._settings = settings_from_connection(conn, self.mongo_conn_id)
        return self._settings

    def connect(self) -> str:
        """Register the mongoengine alias for this Connection and return the alias name.

        Cheap to call repeatedly: with identical settings mongoengine keeps the existing client (and so,
        with an in-memory stand-in, the same data). With different settings the alias is disconnected and
        connected again, since mongoengine refuses to silently re-point a connected alias.
        """
        settings = self.get_connection_settings()
        kwargs = settings.connect_kwargs()
        try:
            mongoengine.connect(**kwargs)
        except mongoengine.connection.ConnectionFailure:
            # Either the alias is connected with other settings, or building the client failed; in both
            # cases start from a clean alias, and a second failure is a real one.
            log.info("Reconnecting mongoengine alias %r to %s.", KRAKEN_DB_ALIAS, settings.describe())
            self._disconnect_alias()
            try:
                mongoengine.connect(**kwargs)
            except (mongoengine.connection.ConnectionFailure, PyMongoError) as err:
                raise self._connect_error(settings, err) from err
        except PyMongoError as err:  # URI parsing (e.g. DNS lookup of mongodb+srv) before any client exists
            raise self._connect_error(settings, err) from err
        log.debug("mongoengine alias %r connected to %s.", KRAKEN_DB_ALIAS, settings.describe())
        if settings.in_memory and settings.describe() not in _warned_in_memory:
            _warned_in_memory.add(settings.describe())  # once per store and process: every task log shows it
            log.warning(IN_MEMORY_WARNING, settings.scheme)
        return KRAKEN_DB_ALIAS

    @staticmethod
    def _disconnect_alias() -> None:
        """Drop our alias and RawFile's cached collection.

        mongoengine detaches cached collections only for documents it finds under their class name; if
        other DAG code defines its own ``RawFile`` document, that lookup finds the other class and ours
        would keep using the old client, so it is detached explicitly.
        """
        mongoengine.disconnect(alias=KRAKEN_DB_ALIAS)
        RawFile._disconnect()

    @staticmethod
    def _connect_error(settings: KrakenMongoSettings, err: Exception) -> Exception:
        """Classify a failure to set up the client: DNS trouble is retried, a bad setting is not."""
        message = _redact(str(err), settings.password)
        if settings.scheme == "mongodb+srv" and isinstance(
            err, ConfigurationError | mongoengine.ConnectionFailure
        ):
            return MongoUnavailableError(
                f"Cannot resolve {settings.describe()} (DNS lookup of the mongodb+srv name): {message}. "
                "The task will be retried."
            )
        return InvalidInputError(f"Cannot set up a client for {settings.describe()}: {message}")

    def get_conn(self) -> Database:
        """Connect and return the pymongo ``Database`` our documents live in (for raw, untyped access)."""
        alias = self.connect()
        return mongoengine.get_db(alias=alias)

    def check_reachable(self, timeout: float = DEFAULT_PING_TIMEOUT) -> None:
        """Ping the server; raise :class:`MongoUnavailableError` if it does not answer within ``timeout``.

        Run before a backup starts, so an unreachable database fails the attempt early (and Airflow retries
        it) instead of after minutes of uploading with nowhere to record the result.
        """
        settings = self.get_connection_settings()
        alias = self.connect()
        # pymongo.timeout bounds server selection as well as the command (pymongo ≥ 4.2), and while it is
        # active pymongo ignores serverSelectionTimeoutMS, so a shorter configured value is applied here.
        configured = next(
            (v for k, v in settings.options.items() if k.lower() == "serverselectiontimeoutms"), None
        )
        with contextlib.suppress(TypeError, ValueError):
            if configured is not None and float(configured) > 0:
                timeout = min(timeout, float(configured) / 1000)
        limit = getattr(pymongo, "timeout", None)
        try:
            with limit(timeout) if limit is not None else contextlib.nullcontext():
                mongoengine.get_connection(alias=alias).admin.command("ping")
        except PyMongoError as err:
            raise MongoUnavailableError(
                f"{settings.describe()} is not reachable: {_redact(str(err), settings.password)}. "
                "The task will be retried."
            ) from err

    def test_connection(self) -> tuple[bool, str]:
        """Back the Connections UI's *Test* button: parse the Connection and ping the server."""
        try:
            settings = self.get_connection_settings()
            self.check_reachable()
        except Exception as err:  # the UI shows any failure as text rather than a stack trace
            password = self._settings.password if self._settings is not None else None
            return False, _redact(str(err), password)
        return True, f"Connected to {settings.describe()}."


#: In-memory stores this process has already warned about.
_warned_in_memory: set[str] = set()

#: Said when an in-memory store is used: under a real scheduler it looks like data loss otherwise.
IN_MEMORY_WARNING = (
    "kraken_mongo points at an in-memory MongoDB stand-in (%s://): a store that lives and dies with "
    "this process. `airflow dags test` runs every task in one process; a real scheduler runs each task in its "
    "own, which starts with an empty store. Point the kraken_mongo connection at a MongoDB server for that."
)


def connect(mongo_conn_id: str) -> str:
    """Connect the ``kraken_s3`` alias from an Airflow connection id (for code that takes a connector)."""
    return KrakenMongoHook(mongo_conn_id=mongo_conn_id).connect()
