"""Tests of the RawFile model: alphakraken-compatible values, alias, dotted keys, unknown fields."""

from __future__ import annotations

from datetime import datetime

import mongoengine
import pytest

from airflow_provider_kraken_s3.records.models import KRAKEN_DB_ALIAS, BackupStatus, RawFile

DOTTED_FILE_INFO = {
    "sample.raw": [1024, "0cc175b9c0f1b6a831c399e269772661"],
    "sample.d/analysis.tdf": [
        2048,
        "92eb5ffee6ae2fec3ad71c777531578f",
        "9b2cf535f27731c974343645a3985328__64",
    ],
    "sample.d/analysis.tdf_bin": [4096, "4a8a08f09d37b73795649038408b5f33", "abc__8"],
}


def test_backup_status_values_match_alphakraken() -> None:
    assert BackupStatus.IN_PROGRESS == "upload_in_progress"
    assert BackupStatus.DONE == "upload_done"
    assert BackupStatus.FAILED == "upload_failed"
    assert BackupStatus.COPYING_IN_PROGRESS == "copying_in_progress"
    assert BackupStatus.COPYING_DONE == "copying_done"
    assert BackupStatus.COPYING_FAILED == "copying_failed"
    assert BackupStatus.SKIPPED == "skipped"
    assert BackupStatus.UPLOAD_DONE == BackupStatus.DONE
    assert len(BackupStatus.ALL) == 7


def test_meta_uses_own_alias_and_collection() -> None:
    assert KRAKEN_DB_ALIAS == "kraken_s3"
    assert RawFile._meta["db_alias"] == KRAKEN_DB_ALIAS
    assert RawFile._meta["collection"] == "raw_file"
    assert RawFile._meta["strict"] is False
    assert RawFile._fields["id"].primary_key
    assert RawFile._fields["id"].db_field == "_id"


def test_dotted_keys_validate() -> None:
    raw_file = RawFile(
        id="sample.raw",
        file_info=DOTTED_FILE_INFO,
        s3_uploads=[{"path": "sample.d/a.tdf", "upload_id": "u-1"}],
    )
    raw_file.validate()


def test_field_limits_validate() -> None:
    with pytest.raises(mongoengine.ValidationError):
        RawFile(id="x.raw", s3_backup_key="k" * 1025).validate()
    with pytest.raises(mongoengine.ValidationError):
        RawFile(id="x.raw", s3_etag="e" * 129).validate()
    RawFile(id="x.raw", s3_backup_key="k" * 1024, s3_etag="e" * 128).validate()


def test_dotted_keys_round_trip(kraken_db) -> None:
    RawFile(id="sample.raw", size=1024, file_info=DOTTED_FILE_INFO).save(force_insert=True)

    stored = kraken_db.raw_file.find_one({"_id": "sample.raw"})
    assert stored["file_info"] == DOTTED_FILE_INFO  # keys kept flat, not split at the dots
    assert RawFile.objects.get(id="sample.raw").file_info == DOTTED_FILE_INFO


def test_unknown_fields_are_ignored_on_load(kraken_db) -> None:
    kraken_db.raw_file.insert_one(
        {
            "_id": "other.raw",
            "status": "quanting",
            "original_name": "other.raw",
            "lab_note": "keep me",
            "size": 5,
        }
    )

    loaded = RawFile.objects.get(id="other.raw")
    assert loaded.size == 5
    assert not hasattr(loaded, "lab_note")


def test_documents_use_kraken_alias_not_default(kraken_mongo, make_raw_file) -> None:
    make_raw_file("a.raw")
    assert RawFile._get_db() is mongoengine.get_db(alias=KRAKEN_DB_ALIAS)
    assert RawFile._get_db().name == kraken_mongo.get_connection_settings().database


def test_make_raw_file_defaults(make_raw_file, kraken_db) -> None:
    raw_file = make_raw_file("b.raw", size=7, extra_fields={"status": "done"})

    assert raw_file.id == "b.raw"
    assert raw_file.size == 7
    assert raw_file.file_info == {"b.raw": [7, "d41d8cd98f00b204e9800998ecf8427e"]}
    assert raw_file.backup_status == BackupStatus.COPYING_DONE
    assert raw_file.created_at == datetime(2024, 1, 1, 12, 0, 0)  # naive UTC, as pymongo returns it
    assert kraken_db.raw_file.find_one({"_id": "b.raw"})["status"] == "done"
