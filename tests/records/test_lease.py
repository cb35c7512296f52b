"""One owner per RawFile backup: claiming, backing off, expiring, renewing, and losing the lease."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_kraken_s3.core.errors import LeaseHeldError, LeaseLostError
from airflow_provider_kraken_s3.records import lease


@pytest.fixture
def raw(make_raw_file, kraken_db):
    make_raw_file("l.raw")
    return lambda: kraken_db.raw_file.find_one({"_id": "l.raw"})


def test_a_second_attempt_backs_off_while_the_first_holds_the_lease(raw) -> None:
    first, second = lease.Attempt.new("t/run/try1"), lease.Attempt.new("t/run/try2")
    lease.claim("l.raw", first)
    lease.claim("l.raw", first)  # claiming again is renewing
    with pytest.raises(LeaseHeldError, match=rf"{first.owner}.*will be retried"):
        lease.claim("l.raw", second)
    assert raw()["s3_lease_owner"] == first.owner


def test_a_killed_workers_lease_expires_and_the_next_attempt_takes_over(raw, kraken_db) -> None:
    dead = lease.Attempt.new("t/run/try1")
    lease.claim("l.raw", dead)
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    kraken_db.raw_file.update_one({"_id": "l.raw"}, {"$set": {"s3_lease_expires_at": past}})  # SIGKILLed
    nxt = lease.Attempt.new("t/run/try2")
    lease.claim("l.raw", nxt)
    assert raw()["s3_lease_owner"] == nxt.owner
    with pytest.raises(LeaseLostError, match="no longer owns"):
        lease.renew("l.raw", dead)


def test_the_keeper_renews_and_cancels_when_the_lease_is_taken(raw, kraken_db) -> None:
    mine = lease.Attempt.new("t/run/try1", ttl=timedelta(seconds=0.3))
    lease.claim("l.raw", mine)
    before = raw()["s3_lease_expires_at"]
    cancel = threading.Event()
    with lease.LeaseKeeper("l.raw", mine, cancel) as keeper:
        assert not cancel.wait(0.35)
        assert raw()["s3_lease_expires_at"] > before  # renewed while working
        # Only possible after an expiry (a frozen worker); forced here.
        kraken_db.raw_file.update_one({"_id": "l.raw"}, {"$set": {"s3_lease_owner": "newer#1"}})
        assert cancel.wait(2), "losing the lease must stop the upload"
    assert isinstance(keeper.lost, LeaseLostError)


@pytest.fixture
def worker_clock(monkeypatch):
    """``worker_clock(minutes)``: from now on this worker's clock runs ``minutes`` ahead (behind if negative)
    of the database server's (mongomock's ``utcnow``), as on a host whose NTP is broken."""

    def skew(minutes: float) -> None:
        monkeypatch.setattr(lease, "_now", lambda: datetime.now(timezone.utc) + timedelta(minutes=minutes))

    return skew


def test_a_worker_whose_clock_runs_ahead_does_not_take_a_live_lease(raw, worker_clock) -> None:
    """Defect 10: expiry is judged by the server's clock; a worker 11 minutes ahead must not find a fresh lease expired."""
    live = lease.Attempt.new("t/run/try1")
    lease.claim("l.raw", live)
    worker_clock(11)
    with pytest.raises(LeaseHeldError):
        lease.claim("l.raw", lease.Attempt.new("t/run/try2"))
    assert raw()["s3_lease_owner"] == live.owner


def test_a_worker_whose_clock_runs_behind_writes_a_lease_the_others_respect(raw, worker_clock) -> None:
    """Defect 10: a lease written from a clock 11 minutes behind must not be expired for everyone else."""
    worker_clock(-11)
    behind = lease.Attempt.new("t/run/try1")
    lease.claim("l.raw", behind)
    lease.renew("l.raw", behind)
    worker_clock(0)
    with pytest.raises(LeaseHeldError):
        lease.claim("l.raw", lease.Attempt.new("t/run/try2"))
    expires = raw()["s3_lease_expires_at"].replace(tzinfo=timezone.utc)
    assert expires > datetime.now(timezone.utc) + lease.DEFAULT_TTL - timedelta(
        minutes=1
    )  # in the server's time


def test_an_expired_lease_is_taken_by_a_worker_whose_clock_runs_behind(raw, kraken_db, worker_clock) -> None:
    """Defect 10: a SIGKILLed worker's lease, expired by the server's clock, does not wait for a slow clock."""
    lease.claim("l.raw", lease.Attempt.new("t/run/try1"))
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    kraken_db.raw_file.update_one({"_id": "l.raw"}, {"$set": {"s3_lease_expires_at": past}})
    worker_clock(-11)
    nxt = lease.Attempt.new("t/run/try2")
    lease.claim("l.raw", nxt)
    assert raw()["s3_lease_owner"] == nxt.owner


def test_the_lease_follows_the_servers_clock_not_the_workers(raw, monkeypatch) -> None:
    """Defect 10: with the server 30 minutes behind every worker, a fresh lease still holds for its whole length."""
    import mongomock

    monkeypatch.setattr(mongomock, "utcnow", lambda: datetime.utcnow() - timedelta(minutes=30))
    live = lease.Attempt.new("t/run/try1")
    lease.claim("l.raw", live)
    with pytest.raises(LeaseHeldError):
        lease.claim("l.raw", lease.Attempt.new("t/run/try2"))
    assert raw()["s3_lease_owner"] == live.owner
