"""alphakraken's ``updated_at_``: every write of ours that changes what alphakraken reads moves it (aware UTC,
as their ``update_raw_file``); our lease and resume bookkeeping does not. Their alerts only look at records
whose ``updated_at_`` is recent."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_kraken_s3.records import lease, store
from airflow_provider_kraken_s3.records.models import BackupStatus
from tests.alphakraken_site import insert_their_record, recent_upload_failures

RAW_ID = "u.raw"
OWNER = "upload_to_s3/manual/try1#test"
AN_HOUR_AGO = datetime.now(timezone.utc) - timedelta(hours=1)


@pytest.fixture
def record(kraken_mongo, kraken_db):
    insert_their_record(RAW_ID, file_info={RAW_ID: [10, "0" * 32]}, updated_at_=AN_HOUR_AGO)
    return lambda: kraken_db.raw_file.find_one({"_id": RAW_ID})


def _moved(document: dict) -> bool:
    """pymongo (and mongomock) return naive UTC."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return now - timedelta(seconds=30) <= document["updated_at_"] <= now + timedelta(seconds=1)


def test_status_writes_move_it_and_bookkeeping_does_not(record) -> None:
    lease.claim(RAW_ID, lease.Attempt(OWNER))
    store.record_upload(
        RAW_ID, OWNER, {"path": RAW_ID, "key": RAW_ID, "upload_id": "u1", "part_size": 5, "expect": "md5:x"}
    )
    assert not _moved(record())  # the lease and the resume entry change nothing alphakraken reads
    store.mark_in_progress(RAW_ID, OWNER, "uploading")
    assert _moved(record())


@pytest.mark.parametrize(
    "write",
    [
        lambda: store.set_backup_status(RAW_ID, BackupStatus.COPYING_DONE),
        lambda: store.record_local_copy(
            RAW_ID, backup_base_path="/fs/pool-1/backup/a", file_info={RAW_ID: [1, "0" * 32]}
        ),
    ],
)
def test_plain_writes_move_it(record, write) -> None:
    write()
    assert _moved(record())


def test_their_alert_query_finds_our_failure(record) -> None:
    lease.claim(RAW_ID, lease.Attempt(OWNER))
    assert recent_upload_failures() == []
    store.mark_failed(RAW_ID, OWNER, "OSError: disk gone (permanent: fix the cause, then clear the task)")
    assert recent_upload_failures() == [RAW_ID]
    assert record()["backup_status"] == BackupStatus.FAILED and _moved(record())
