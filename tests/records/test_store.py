"""Tests of the RawFile store: each write's effect, atomicity rules, unknown fields, error translation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError

from airflow_provider_kraken_s3.core.errors import (
    InvalidInputError,
    MongoUnavailableError,
    PermanentBackupError,
    RawFileNotFoundError,
    TransientBackupError,
)
from airflow_provider_kraken_s3.hooks.kraken_mongo import KrakenMongoHook
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from tests.conftest_mongo import KRAKEN_MONGO_CONN_ENV, disconnect_kraken_alias

RAW_ID = "20240101_astral1_P1234_sample.d"
FILE_INFO = {
    "20240101_astral1_P1234_sample.d/analysis.tdf": [2048, "92eb5ffee6ae2fec3ad71c777531578f"],
    "20240101_astral1_P1234_sample.d/analysis.tdf_bin": [8 << 20, "4a8a08f09d37b73795649038408b5f33"],
}
FILE_INFO_WITH_ETAGS = {
    "20240101_astral1_P1234_sample.d/analysis.tdf": [2048, "92eb5ffee6ae2fec3ad71c777531578f", "92eb5f__64"],
    "20240101_astral1_P1234_sample.d/analysis.tdf_bin": [8 << 20, "4a8a08f09d37b73795", "c0ffee-2__4"],
}
UPLOAD_IDS = {"20240101_astral1_P1234_sample.d/analysis.tdf_bin": "upload-id-1"}
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
        store.mark_in_progress(bad_id, "x")


def test_mark_in_progress(raw_doc) -> None:
    store.mark_in_progress(RAW_ID, "uploading 2 files to s3://bucket/P1234/")
    doc = raw_doc()
    assert doc["backup_status"] == BackupStatus.IN_PROGRESS
    assert doc["s3_backup_details"] == "uploading 2 files to s3://bucket/P1234/"
    assert _recent(doc["s3_backup_updated_at"])
    assert doc["file_info"] == FILE_INFO


def test_record_upload_id_writes_whole_dict(raw_doc) -> None:
    store.record_upload_id(RAW_ID, UPLOAD_IDS)
    assert raw_doc()["s3_upload_ids"] == UPLOAD_IDS

    both = {**UPLOAD_IDS, "20240101_astral1_P1234_sample.d/analysis.tdf": "upload-id-2"}
    store.record_upload_id(RAW_ID, both)
    assert raw_doc()["s3_upload_ids"] == both  # dotted keys stay flat

    store.record_upload_id(RAW_ID, {})
    assert raw_doc()["s3_upload_ids"] == {}


@pytest.mark.parametrize("bad", [{"$x": "u"}, {"a.raw": ""}, {"a.raw": None}, {1: "u"}, ["a.raw"]])
def test_record_upload_id_rejects_bad_values(raw_doc, bad) -> None:
    with pytest.raises(InvalidInputError):
        store.record_upload_id(RAW_ID, bad)


def test_record_file_etags(raw_doc) -> None:
    as_tuples = {path: tuple(entry) for path, entry in FILE_INFO_WITH_ETAGS.items()}
    store.record_file_etags(RAW_ID, as_tuples)
    assert raw_doc()["file_info"] == FILE_INFO_WITH_ETAGS
    assert store.get_raw_file(RAW_ID).file_info == FILE_INFO_WITH_ETAGS


@pytest.mark.parametrize(
    "bad",
    [{"a.raw": [1]}, {"a.raw": [1, "m", "e", "x"]}, {"a.raw": "1,m"}, {"$a": [1, "m"]}, {"a.raw": None}],
)
def test_record_file_etags_rejects_bad_entries(raw_doc, bad) -> None:
    with pytest.raises(InvalidInputError):
        store.record_file_etags(RAW_ID, bad)
    assert raw_doc()["file_info"] == FILE_INFO


def test_mark_done(raw_doc) -> None:
    store.record_upload_id(RAW_ID, UPLOAD_IDS)
    store.mark_done(
        RAW_ID,
        bucket="kraken-backup",
        backup_key="P1234/20240101_astral1_P1234_sample.d/",
        etag="c0ffee-2",
        file_info=FILE_INFO_WITH_ETAGS,
        details="2 files verified",
    )
    doc = raw_doc()
    assert doc["backup_status"] == BackupStatus.DONE
    assert doc["s3_bucket"] == "kraken-backup"
    assert doc["s3_backup_key"] == "P1234/20240101_astral1_P1234_sample.d/"
    assert doc["s3_etag"] == "c0ffee-2"
    assert doc["file_info"] == FILE_INFO_WITH_ETAGS
    assert doc["s3_upload_ids"] == {}
    assert doc["s3_backup_details"] == "2 files verified"
    assert _recent(doc["s3_backup_updated_at"])


def test_mark_done_validates_field_limits(raw_doc) -> None:
    with pytest.raises(InvalidInputError):
        store.mark_done(RAW_ID, bucket="b", backup_key="k" * 1025, etag="e", file_info=FILE_INFO, details="")
    with pytest.raises(InvalidInputError):
        store.mark_done(RAW_ID, bucket="b", backup_key="k", etag="e" * 129, file_info=FILE_INFO, details="")
    assert raw_doc()["backup_status"] == BackupStatus.COPYING_DONE


def test_mark_failed_keeps_upload_ids(raw_doc) -> None:
    store.record_upload_id(RAW_ID, UPLOAD_IDS)
    store.mark_failed(RAW_ID, "AccessDenied on PutObject")
    doc = raw_doc()
    assert doc["backup_status"] == BackupStatus.FAILED
    assert doc["s3_backup_details"] == "AccessDenied on PutObject"
    assert _recent(doc["s3_backup_updated_at"])
    assert doc["s3_upload_ids"] == UPLOAD_IDS
    assert "s3_bucket" not in doc

    store.mark_failed(RAW_ID, "again", bucket="kraken-backup")
    assert raw_doc()["s3_bucket"] == "kraken-backup"


def test_long_details_are_clipped(raw_doc) -> None:
    details = "start " + "x" * 20_000 + " end"
    store.mark_failed(RAW_ID, details)
    stored = raw_doc()["s3_backup_details"]
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


WRITES = {
    "mark_in_progress": lambda rid: store.mark_in_progress(rid, "started"),
    "record_upload_id": lambda rid: store.record_upload_id(rid, UPLOAD_IDS),
    "record_file_etags": lambda rid: store.record_file_etags(rid, FILE_INFO_WITH_ETAGS),
    "mark_done": lambda rid: store.mark_done(
        rid, bucket="b", backup_key="k/", etag="e", file_info=FILE_INFO_WITH_ETAGS, details="ok"
    ),
    "mark_failed": lambda rid: store.mark_failed(rid, "boom", bucket="b"),
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
    make_raw_file("one.raw")
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
    with pytest.raises(MongoUnavailableError) as read_err:
        store.get_raw_file(RAW_ID)
    assert isinstance(read_err.value, TransientBackupError)
    assert RAW_ID in str(read_err.value)
    assert "retried" in str(read_err.value)
    for write in WRITES.values():
        with pytest.raises(MongoUnavailableError):
            write(RAW_ID)


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
            store.mark_failed(RAW_ID, "x")
    finally:
        disconnect_kraken_alias()


def test_not_connected_is_a_clear_error() -> None:
    disconnect_kraken_alias()
    with pytest.raises(PermanentBackupError, match=r"KrakenMongoHook\(\.\.\.\)\.connect\(\)"):
        store.get_raw_file(RAW_ID)
