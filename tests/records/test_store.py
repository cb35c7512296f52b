"""Tests of the RawFile store: each write's effect, atomicity rules, unknown fields, error translation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError

from airflow_provider_kraken_s3.core.errors import (
    InvalidInputError,
    InventoryChangedError,
    LeaseLostError,
    MongoUnavailableError,
    PermanentBackupError,
    RawFileNotFoundError,
    TransientBackupError,
)
from airflow_provider_kraken_s3.core.manifest import Manifest, ManifestObject, Proof
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook
from airflow_provider_kraken_s3.records import lease, store
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from tests.conftest_mongo import (
    KRAKEN_MONGO_CONN_ENV,
    disconnect_kraken_alias,
    mongomock_connection_json,
    mongomock_only,
)

RAW_ID = "20240101_astral1_P1234_sample.d"
FILE_INFO = {
    "20240101_astral1_P1234_sample.d/analysis.tdf": [2048, "92eb5ffee6ae2fec3ad71c777531578f"],
    "20240101_astral1_P1234_sample.d/analysis.tdf_bin": [8 << 20, "4a8a08f09d37b73795649038408b5f33"],
}
ALPHAKRAKEN_ONLY = {
    "lab_note": "keep me",
    "status": "quanting",
    "original_name": RAW_ID,
    "nested": {"a.b": 1},
}


@pytest.fixture
def raw_doc(make_raw_file, kraken_db):
    """A RawFile with fields only alphakraken knows; returns a reader of its raw stored form."""
    make_raw_file(RAW_ID, size=2048 + (8 << 20), file_info=FILE_INFO, extra_fields=ALPHAKRAKEN_ONLY)
    return lambda: kraken_db.raw_file.find_one({"_id": RAW_ID})


def _recent(value: datetime) -> bool:
    """pymongo returns naive UTC datetimes (millisecond precision)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now - timedelta(seconds=30) <= value <= now + timedelta(seconds=1)


def test_get_raw_file(raw_doc) -> None:
    raw_file = store.get_raw_file(RAW_ID)
    assert isinstance(raw_file, RawFile)
    assert raw_file.file_info == FILE_INFO
    assert raw_file.project_id == "P1234"


def test_get_raw_file_missing(kraken_mongo) -> None:
    with pytest.raises(RawFileNotFoundError) as err:
        store.get_raw_file("nope.raw")
    message = str(err.value)
    assert "'nope.raw'" in message
    assert "raw_file" in message
    assert kraken_mongo.get_connection_settings().database in message


@pytest.mark.parametrize("bad_id", ["", None, 42])
def test_invalid_id(kraken_mongo, bad_id) -> None:
    with pytest.raises(InvalidInputError):
        store.get_raw_file(bad_id)
    with pytest.raises(InvalidInputError):
        store.mark_in_progress(bad_id, OWNER, "x")


OWNER = "upload_to_s3/manual/try1#test"
MANIFEST = Manifest(
    bucket="kraken-backup",
    prefix="",
    objects=tuple(
        ManifestObject(
            path=path, key=path, size=size, md5=md5, etag=md5, part_size=64 << 20, proof=Proof.UPLOADED
        )
        for path, (size, md5) in sorted(FILE_INFO.items())
    ),
)


def mark_done(
    raw_file_id: str = RAW_ID, manifest: Manifest = MANIFEST, details: str = "ok", **kwargs
) -> None:
    store.mark_done(
        raw_file_id, OWNER, manifest=manifest, planned_file_info=FILE_INFO, details=details, **kwargs
    )


@pytest.fixture
def owned(raw_doc):
    """The RawFile, its backup claimed by OWNER (as RawFileBackup does before any write)."""
    lease.claim(RAW_ID, lease.Attempt(OWNER))
    return raw_doc


def test_mark_in_progress(owned) -> None:
    store.mark_in_progress(RAW_ID, OWNER, "uploading 2 files to s3://bucket/P1234/")
    doc = owned()
    assert doc["backup_status"] == BackupStatus.IN_PROGRESS
    assert doc["s3_backup_details"] == "uploading 2 files to s3://bucket/P1234/"
    assert _recent(doc["s3_backup_updated_at"])
    assert doc["file_info"] == FILE_INFO and doc["s3_lease_owner"] == OWNER


def test_upload_entries_are_added_and_removed_one_at_a_time(owned) -> None:
    """Defect 7: one file's entry is written without rewriting the others' from memory."""
    first = {"path": "a.d/x", "key": "a.d/x", "upload_id": "u1", "part_size": 5 << 20, "expect": "md5:0"}
    second = {**first, "path": "a.d/y", "key": "a.d/y", "upload_id": "u2"}
    store.record_upload(RAW_ID, OWNER, first)
    store.record_upload(RAW_ID, OWNER, second)
    store.record_upload(RAW_ID, OWNER, {**first, "upload_id": "u3"})  # replaces only a.d/x's entry
    assert sorted((e["path"], e["upload_id"]) for e in owned()["s3_uploads"]) == [
        ("a.d/x", "u3"),
        ("a.d/y", "u2"),
    ]
    store.forget_upload(RAW_ID, OWNER, "a.d/x")
    assert [e["upload_id"] for e in owned()["s3_uploads"]] == ["u2"]
    with pytest.raises(InvalidInputError, match="no upload_id"):
        store.record_upload(RAW_ID, OWNER, {**first, "upload_id": ""})


def test_replacing_an_upload_entry_never_leaves_the_file_without_one(owned, monkeypatch) -> None:
    """Defect 11d: between a ``$pull`` and a ``$push`` reconcile would see the upload unreferenced, and abort
    the one being resumed. After every write the file has an entry: the old upload or the new one."""
    from airflow_provider_kraken_s3.records import queries

    entry = {"path": "a.d/x", "key": "a.d/x", "upload_id": "u1", "part_size": 5 << 20, "expect": "md5:0"}
    store.record_upload(RAW_ID, OWNER, entry)
    seen: list[set[str]] = []
    real_update_where = store.update_where

    def update_where_then_reconcile_looks(*args, **kwargs) -> bool:
        written = real_update_where(*args, **kwargs)
        seen.append(queries.referenced_upload_ids())
        return written

    monkeypatch.setattr(store, "update_where", update_where_then_reconcile_looks)
    store.record_upload(RAW_ID, OWNER, entry)  # a resume records its upload again
    store.record_upload(RAW_ID, OWNER, {**entry, "upload_id": "u2"})  # a new upload replaces it
    assert seen and all(ids & {"u1", "u2"} for ids in seen), seen
    assert [e["upload_id"] for e in owned()["s3_uploads"]] == ["u2"]


def test_mark_done_writes_the_manifest_and_alphakrakens_fields_and_releases_the_lease(owned) -> None:
    mark_done(details="2 files verified")
    doc = owned()
    assert doc["backup_status"] == BackupStatus.DONE
    assert doc["s3_bucket"] == "kraken-backup" and doc["s3_upload_path"] == "s3://kraken-backup"
    assert doc["s3_backup_key"] == f"{RAW_ID}/" and doc["s3_etag"] == MANIFEST.s3_etag(RAW_ID)
    assert Manifest.from_document(doc["s3_manifest"]).objects == MANIFEST.objects
    assert doc["file_info"] == {path: [size, md5, f"{md5}__64"] for path, (size, md5) in FILE_INFO.items()}
    assert doc["s3_uploads"] == [] and doc["s3_backup_details"] == "2 files verified"
    assert "s3_lease_owner" not in doc and _recent(doc["s3_backup_updated_at"])


def test_mark_done_keeps_a_third_element_that_agrees_with_s3_and_fixes_one_that_does_not(
    owned, kraken_db
) -> None:
    """Issue 14: the inventory is an acquisition fact; issue 13 defect 3: alphakraken's remover must verify."""
    first, second = sorted(FILE_INFO)
    inventory = {
        first: [*FILE_INFO[first], f"{FILE_INFO[first][1]}__64"],
        second: [*FILE_INFO[second], "a" * 32 + "-1__5"],
    }
    kraken_db.raw_file.update_one({"_id": RAW_ID}, {"$set": {"file_info": inventory}})
    store.mark_done(RAW_ID, OWNER, manifest=MANIFEST, planned_file_info=inventory, details="ok")
    file_info = owned()["file_info"]
    assert file_info[first] == inventory[first]  # untouched: S3's ETag is the one recorded
    assert file_info[second][2] == f"{FILE_INFO[second][1]}__64"  # what S3 answered


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"late_file": [1, "0" * 32]}, id="file-added"),
        pytest.param({next(iter(FILE_INFO)): [2048, "f" * 32]}, id="entry-redone"),
    ],
)
def test_mark_done_refuses_an_inventory_changed_under_the_attempt(owned, kraken_db, change) -> None:
    """Issue 13 defect 2: DONE covers exactly the inventory the attempt planned from."""
    kraken_db.raw_file.update_one({"_id": RAW_ID}, {"$set": {"file_info": {**FILE_INFO, **change}}})
    with pytest.raises(InventoryChangedError, match=next(iter(change))):
        mark_done()
    doc = owned()
    assert doc["backup_status"] == BackupStatus.COPYING_DONE and not doc.get("s3_manifest")
    assert doc["s3_lease_owner"] == OWNER  # the caller records the failure, still owning the record


def test_mark_done_validates_field_limits(owned) -> None:
    long_bucket = Manifest(bucket="b" * 2000, prefix="", objects=MANIFEST.objects)
    with pytest.raises(InvalidInputError):
        mark_done(manifest=long_bucket)
    assert owned()["backup_status"] == BackupStatus.COPYING_DONE


def test_mark_failed_keeps_upload_entries_and_the_location_and_releases_the_lease(owned) -> None:
    entry = {"path": "a", "key": "a", "upload_id": "u1", "part_size": 5 << 20, "expect": "md5:0"}
    store.record_upload(RAW_ID, OWNER, entry)
    store.mark_failed(RAW_ID, OWNER, "AccessDenied on PutObject")
    doc = owned()
    assert doc["backup_status"] == BackupStatus.FAILED
    assert doc["s3_backup_details"] == "AccessDenied on PutObject"
    assert doc["s3_uploads"] == [entry] and "s3_bucket" not in doc
    assert "s3_lease_owner" not in doc and _recent(doc["s3_backup_updated_at"])


def test_a_stale_attempt_cannot_write(owned) -> None:
    """Defect 5: once another attempt owns the record, every write of the old one is refused."""
    mark_done(details="done")
    lease.claim(RAW_ID, lease.Attempt("newer#1"))
    for write in (
        lambda: store.mark_failed(RAW_ID, OWNER, "late failure"),
        lambda: store.mark_in_progress(RAW_ID, OWNER, "late start"),
        lambda: store.forget_upload(RAW_ID, OWNER, "a"),
        lambda: mark_done(details="late"),
    ):
        with pytest.raises(LeaseLostError, match=r"newer#1"):
            write()
    assert owned()["backup_status"] == BackupStatus.DONE and owned()["s3_backup_details"] == "done"


def test_long_details_are_clipped(owned) -> None:
    details = "start " + "x" * 20_000 + " end"
    store.mark_failed(RAW_ID, OWNER, details)
    stored = owned()["s3_backup_details"]
    assert len(stored) <= store.DETAILS_MAX_LENGTH
    assert stored.startswith("start ")
    assert stored.endswith(" end")


def test_set_backup_status(raw_doc) -> None:
    for status in (BackupStatus.COPYING_IN_PROGRESS, BackupStatus.COPYING_FAILED, BackupStatus.COPYING_DONE):
        store.set_backup_status(RAW_ID, status)
        assert raw_doc()["backup_status"] == status
    assert "s3_backup_updated_at" not in raw_doc()


def test_set_backup_status_rejects_unknown(raw_doc) -> None:
    with pytest.raises(InvalidInputError, match="copy_done"):
        store.set_backup_status(RAW_ID, "copy_done")


def _claimed(write):
    """Claim the lease first (as every attempt does), then write."""

    def run(raw_file_id: str) -> None:
        lease.claim(raw_file_id, lease.Attempt(OWNER))
        write(raw_file_id)

    return run


WRITES = {
    "mark_in_progress": _claimed(lambda rid: store.mark_in_progress(rid, OWNER, "started")),
    "mark_done": _claimed(lambda rid: mark_done(rid)),
    "mark_failed": _claimed(lambda rid: store.mark_failed(rid, OWNER, "boom")),
    "set_backup_status": lambda rid: store.set_backup_status(rid, BackupStatus.COPYING_DONE),
}


def test_every_write_preserves_unknown_fields(raw_doc) -> None:
    for name, write in WRITES.items():
        write(RAW_ID)
        doc = raw_doc()
        for key, value in ALPHAKRAKEN_ONLY.items():
            assert doc[key] == value, f"{name} lost {key}"
        assert doc["project_id"] == "P1234", name
        assert doc["instrument_id"] == "astral1", name


@pytest.mark.parametrize("name", sorted(WRITES))
def test_writes_to_missing_document_raise_and_create_nothing(kraken_db, name) -> None:
    with pytest.raises(RawFileNotFoundError, match=r"missing\.raw"):
        WRITES[name]("missing.raw")
    assert kraken_db.raw_file.count_documents({}) == 0  # never upserts


def test_writes_only_touch_their_document(make_raw_file, kraken_db) -> None:
    make_raw_file("one.raw", file_info=FILE_INFO)
    make_raw_file("two.raw")
    before = kraken_db.raw_file.find_one({"_id": "two.raw"})
    for write in WRITES.values():
        write("one.raw")
    assert kraken_db.raw_file.find_one({"_id": "two.raw"}) == before


class _FailingQuerySet:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def __call__(self, *args, **kwargs):
        return self

    def first(self):
        raise self.error

    def update_one(self, *args, **kwargs):
        raise self.error


class _FailingCollection:
    """Every pymongo collection method raises ``error`` (the conditional writes use the collection)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str):
        def fail(*args, **kwargs):
            raise self.error

        return fail


@pytest.mark.parametrize(
    "error",
    [
        ServerSelectionTimeoutError("no servers"),
        AutoReconnect("primary stepped down"),
        NetworkTimeout("timed out"),
        ConnectionFailure("connection refused"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_connection_errors_become_mongo_unavailable(kraken_mongo, monkeypatch, error) -> None:
    monkeypatch.setattr(RawFile, "objects", _FailingQuerySet(error))
    monkeypatch.setattr(RawFile, "_get_collection", classmethod(lambda cls: _FailingCollection(error)))
    with pytest.raises(MongoUnavailableError) as read_err:
        store.get_raw_file(RAW_ID)
    assert isinstance(read_err.value, TransientBackupError)
    assert RAW_ID in str(read_err.value)
    assert "retried" in str(read_err.value)
    for write in WRITES.values():
        with pytest.raises(MongoUnavailableError):
            write(RAW_ID)


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_unreachable_server_becomes_mongo_unavailable(monkeypatch) -> None:
    conn = {
        "conn_type": "kraken_mongo",
        "host": "127.0.0.1",
        "port": 1,
        "schema": "kraken_unreachable",
        "extra": {"serverSelectionTimeoutMS": 200},
    }
    monkeypatch.setenv(KRAKEN_MONGO_CONN_ENV, json.dumps(conn))
    KrakenMongoHook().connect()
    try:
        with pytest.raises(MongoUnavailableError):
            store.get_raw_file(RAW_ID)
        with pytest.raises(MongoUnavailableError):
            store.mark_failed(RAW_ID, OWNER, "x")
    finally:
        disconnect_kraken_alias()


def test_not_connected_is_a_clear_error() -> None:
    disconnect_kraken_alias()
    with pytest.raises(PermanentBackupError, match=r"KrakenMongoHook\(\.\.\.\)\.connect\(\)"):
        store.get_raw_file(RAW_ID)


@mongomock_only
def test_a_missing_raw_file_in_the_embedded_store_says_why_it_may_be_missing(kraken_mongo, task_log) -> None:
    """Under a real scheduler the embedded store is empty in each task's process: say so, not only "the id"."""
    with pytest.raises(
        RawFileNotFoundError, match=r"in-memory MongoDB stand-in, per process.*MongoDB server"
    ):
        store.get_raw_file("not-here.raw")


def test_the_embedded_store_warning_is_said_once_per_store(monkeypatch, caplog) -> None:
    monkeypatch.setenv(KRAKEN_MONGO_CONN_ENV, mongomock_connection_json("kraken_warned_once"))
    try:
        KrakenMongoHook().connect()
        KrakenMongoHook().connect()
        assert caplog.text.count("in-memory MongoDB stand-in (mongomock://)") == 1
    finally:
        disconnect_kraken_alias()
