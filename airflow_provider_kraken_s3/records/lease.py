"""One owner per RawFile backup at a time: a lease naming the attempt, with an expiry it renews while it works.

An attempt *claims* the record atomically (free, expired, or already its own); a second attempt finds it
held and backs off (:class:`LeaseHeldError`, transient: Airflow retries it later). While the upload runs, a
:class:`LeaseKeeper` renews the expiry; if a renewal finds the lease gone (it expired while the worker was
frozen, and another attempt took it), the keeper cancels the upload, and every later write of this attempt
is refused by its filter. A worker killed with SIGKILL renews nothing: its lease simply expires, and the next
attempt claims it and resumes the stored multipart uploads.

**Expiry is judged by the database server's clock** (:func:`server_now`), never by the worker's: the expiry
written and the expiry compared are both server time, so a worker whose clock runs minutes ahead neither
takes a live lease nor, running behind, writes one that is already expired for everyone else.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from airflow_provider_kraken_s3.core.errors import LeaseHeldError, LeaseLostError
from airflow_provider_kraken_s3.records import store
from airflow_provider_kraken_s3.records.models import RawFile

log = logging.getLogger(__name__)

#: Long enough to survive a stalled NFS read or a slow MongoDB (renewed every third of it); shorter than
#: Airflow's default retry delay (5 minutes), so a killed worker's lease has expired when any retry starts.
#: The next try of the same task instance does not even wait for that: see :attr:`Attempt.takes_over`.
DEFAULT_TTL = timedelta(minutes=4)


@dataclass(frozen=True)
class Attempt:
    """Who is backing up: a readable label (task and try) plus a unique suffix, and the lease length."""

    owner: str
    ttl: timedelta = DEFAULT_TTL
    #: labels of earlier tries of the same task instance: Airflow starts this try only after those ended
    #: (killed, timed out, or failed with a database outage that kept them from giving the lease back), so
    #: their leases are taken over at once instead of blocking the retry until they expire.
    takes_over: tuple[str, ...] = ()

    @classmethod
    def new(cls, label: str, ttl: timedelta = DEFAULT_TTL, takes_over: tuple[str, ...] = ()) -> Attempt:
        return cls(owner=f"{label}#{uuid.uuid4().hex[:12]}", ttl=ttl, takes_over=takes_over)


def _now() -> datetime:
    """This worker's clock: only for a server that cannot tell its own time."""
    return datetime.now(timezone.utc)


def server_now() -> datetime:
    """The database server's time (UTC), from its ``hello`` reply: the one clock every worker shares.

    Read, not written: no document changes. A server whose reply carries no ``localTime`` (none known)
    leaves only this worker's clock, with a warning.
    """
    with store.mongo_errors("reading the database server's clock"):
        reply = RawFile._get_db().command("hello")
    moment = reply.get("localTime")
    if not isinstance(moment, datetime):
        log.warning("the MongoDB server reports no localTime; leases are judged by this worker's clock")
        return _now()
    return _utc(moment)


def _utc(moment: datetime) -> datetime:
    """Timezone-aware UTC; a naive value is UTC already (pymongo returns naive UTC)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def claim(raw_file_id: str, attempt: Attempt) -> None:
    """Take the lease, or raise :class:`LeaseHeldError` naming the holder and its expiry."""
    now = server_now()
    free = [
        {"s3_lease_owner": None},
        {"s3_lease_expires_at": {"$lt": now}},
        {"s3_lease_owner": attempt.owner},
    ]
    earlier = [{"s3_lease_owner": {"$regex": f"^{re.escape(label)}#"}} for label in attempt.takes_over]
    before = store.read_fields(raw_file_id, "s3_lease_owner").get("s3_lease_owner") if earlier else None
    claimed = store.update_where(
        raw_file_id,
        "claiming the backup",
        {"$or": free + earlier},
        {"$set": {"s3_lease_owner": attempt.owner, "s3_lease_expires_at": now + attempt.ttl}},
    )
    if claimed:
        if before and before.split("#")[0] in attempt.takes_over:
            log.warning(
                "took over the lease of %s from %s, an earlier try of this task that did not give it back",
                raw_file_id,
                before,
            )
        return
    holder = store.read_fields(raw_file_id, "s3_lease_owner", "s3_lease_expires_at")
    raise LeaseHeldError(
        f"the backup of raw file {raw_file_id!r} is being done by attempt {holder.get('s3_lease_owner')!r} "
        f"(lease until {holder.get('s3_lease_expires_at')} UTC); this attempt does not upload the same files "
        "concurrently and will be retried."
    )


def renew(raw_file_id: str, attempt: Attempt) -> None:
    """Push the expiry forward; :class:`LeaseLostError` if the lease is no longer ours."""
    store.owned_update(
        raw_file_id,
        attempt.owner,
        "renewing the lease",
        {"$set": {"s3_lease_expires_at": server_now() + attempt.ttl}},
    )


class LeaseKeeper:
    """Renews the lease every third of its length while the upload runs; on loss, sets ``cancel``."""

    def __init__(self, raw_file_id: str, attempt: Attempt, cancel: threading.Event) -> None:
        self.raw_file_id = raw_file_id
        self.attempt = attempt
        self.cancel = cancel
        self.lost: LeaseLostError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kraken-lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        interval = self.attempt.ttl.total_seconds() / 3
        while not self._stop.wait(interval):
            try:
                renew(self.raw_file_id, self.attempt)
            except LeaseLostError as error:
                self.lost = error
                self.cancel.set()
                return
            except Exception as error:  # MongoDB blip: try again next round, the lease has time left
                log.warning("could not renew the lease on %s: %s", self.raw_file_id, error)
