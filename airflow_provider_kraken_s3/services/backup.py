"""Back up one RawFile: claim it, upload what S3 does not provably hold, and record the truth. No Airflow.

The steps, in the order they run:

1. read the RawFile and **claim** its backup (a lease naming this attempt; a second attempt backs off);
2. check the bucket (or create it) and that it belongs to the raw file's project;
3. **look before writing**: HEAD every object and keep those S3 already proves (same rule as the sensor).
   Nothing left to do → the record says DONE (a verified DONE is never downgraded, even when the local copy
   is gone); only when there is work is ``upload_in_progress`` written;
4. upload each remaining file through :class:`~..transfer.upload.VerifiedUpload`, resuming the multipart
   uploads the record lists for the same file, part size and expectation;
5. record DONE with each file's verified ETag — or, on any failure or interruption, FAILED with a reason a
   person can act on. Every write is conditional on still holding the lease, and gives it back at the end.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_kraken_s3.core.decision import Expectation, RemoteObject, prove
from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    BucketNotFoundError,
    InvalidInputError,
    LeaseLostError,
    LocalFileChangedError,
    MongoUnavailableError,
    NothingToBackUp,
    PermanentBackupError,
)
from airflow_provider_kraken_s3.core.etag import format_precomputed_etag
from airflow_provider_kraken_s3.core.inventory import BackupObject, backup_objects
from airflow_provider_kraken_s3.core.layout import (
    backup_key,
    key_prefix,
    listing_folder,
    local_path,
    project_of,
    set_etag,
    upload_path,
)
from airflow_provider_kraken_s3.core.naming import bucket_name
from airflow_provider_kraken_s3.core.parts import MIB, plan_parts
from airflow_provider_kraken_s3.core.paths import missing_hint, skip_reason, worker_base_path
from airflow_provider_kraken_s3.core.settings import BackupSettings
from airflow_provider_kraken_s3.records import lease, store
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.transfer import buckets, remote
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.batch import run_all, verify_listed
from airflow_provider_kraken_s3.transfer.listing import list_prefix
from airflow_provider_kraken_s3.transfer.progress import kv
from airflow_provider_kraken_s3.transfer.upload import UploadResult, VerifiedUpload


@dataclass(frozen=True)
class BackupOutcome:
    """What the attempt did and what the record now says (the operator's XCom)."""

    status: str
    bucket: str
    s3_backup_key: str
    s3_etag: str
    s3_upload_path: str
    files: int
    bytes: int
    bytes_uploaded: int
    files_skipped: int
    seconds: float
    #: the lineage: every object the record now vouches for, and the local files this attempt read to
    #: upload or prove one (a file S3 proved without a byte read is not an input of this attempt)
    keys: tuple[str, ...] = ()
    read_paths: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The XCom: the record's summary, without the per-file lists (a .d folder may hold thousands)."""
        summary = {name: value for name, value in self.__dict__.items() if name not in ("keys", "read_paths")}
        return {**summary, "seconds": round(self.seconds, 3)}


def expectation(item: BackupObject) -> Expectation:
    """What the inventory says about one file, in the words of the proof rule."""
    return Expectation(
        size=item.size,
        md5=item.md5,
        etag=item.precomputed.etag if item.precomputed else None,
        part_size=item.precomputed.part_size if item.precomputed else None,
    )


@dataclass
class RawFileBackup:
    """One attempt at backing up one RawFile.

    :param tries: (this try, total tries) as Airflow counts them; only changes the words recorded.
    :param cancel: set from outside (task killed) to stop the upload at the next block; the lease keeper
        sets it too when the lease is lost.
    """

    raw_file_id: str
    settings: BackupSettings
    access: S3Access
    attempt: lease.Attempt
    log: logging.Logger
    max_concurrency: int = 4
    tries: tuple[int, int] = (1, 1)
    cancel: threading.Event = field(default_factory=threading.Event)
    bucket: str | None = None
    prefix: str = ""

    def run(self) -> BackupOutcome:
        started = time.monotonic()
        raw_file = store.get_raw_file(self.raw_file_id)
        if (why := skip_reason(raw_file.backup_status, raw_file.backup_base_path)) is not None:
            raise NothingToBackUp(why)  # before the claim: nothing is written
        lease.claim(self.raw_file_id, self.attempt)
        keeper = lease.LeaseKeeper(self.raw_file_id, self.attempt, self.cancel)
        try:
            with keeper:
                return self._back_up(raw_file, started)
        except BaseException as error:
            self._record_failure(keeper.lost or error)
            if keeper.lost is not None and error is not keeper.lost:
                raise keeper.lost from error
            raise

    # ------------------------------------------------------------------ the steps

    def _back_up(self, raw_file: RawFile, started: float) -> BackupOutcome:
        self.prefix = key_prefix(
            raw_file.id,
            project_id=raw_file.project_id,
            instrument_id=raw_file.instrument_id,
            created_at=raw_file.created_at,
        )
        objects = backup_objects(raw_file.id, raw_file.file_info, prefix=self.prefix)
        self.bucket = bucket_name(self.settings.bucket_prefix or "", project_of(raw_file.project_id))
        self._ensure_bucket(project_of(raw_file.project_id))
        listed = self._listing(objects)
        todo = self._not_yet_proven(objects, listed)
        results: dict[str, UploadResult] = {}
        if todo:
            files = [(item, self._local_file(raw_file, item)) for item in todo]
            total = sum(item.size for item in todo)
            store.mark_in_progress(
                raw_file.id,
                self.attempt.owner,
                f"uploading {len(todo)} of {len(objects)} file(s), {total / MIB:.1f} MiB, to s3://{self.bucket}/",
            )
            self.log.info(
                "backup start %s",
                kv(
                    raw_file=raw_file.id,
                    bucket=self.bucket,
                    files=len(todo),
                    bytes=total,
                    attempt=self.attempt.owner,
                ),
            )
            budget = threading.BoundedSemaphore(self.max_concurrency)
            jobs = [
                self._upload(raw_file, item, path, listed=listed, budget=budget if len(files) > 1 else None)
                for item, path in files
            ]
            done = run_all(jobs, concurrency=self.max_concurrency, cancel=self.cancel)
            if listed is not None:
                verify_listed(self.access, self.bucket, listing_folder(i.key for i in objects), done)
            results = {item.path: result for (item, _), result in zip(files, done, strict=True)}
        return self._record_done(raw_file, objects, results, started)

    def _ensure_bucket(self, project_id: str) -> None:
        assert self.bucket is not None
        try:
            buckets.check_bucket(self.access, self.bucket)
        except BucketNotFoundError:
            if not self.settings.create_buckets:
                raise
            buckets.create_backup_bucket(
                self.access,
                self.bucket,
                tags={buckets.PROJECT_TAG: project_id, "created_by": "airflow-provider-kraken-s3"},
                log=self.log,
            )
        buckets.check_project(self.access, self.bucket, project_id, self.log)

    def _listing(self, objects: list[BackupObject]) -> dict[str, RemoteObject] | None:
        """For a set, what S3 holds under its folder, from one listing; None for one object (one HEAD)."""
        folder = listing_folder(item.key for item in objects)
        if not folder:
            return None
        return list_prefix(self.access, self.bucket or "", folder)

    def _not_yet_proven(
        self, objects: list[BackupObject], listed: dict[str, RemoteObject] | None
    ) -> list[BackupObject]:
        """What S3 does not prove yet; what it proves needs neither the local file nor a status change."""
        todo = []
        for item in objects:
            found = (
                listed.get(item.key)
                if listed is not None
                else remote.head(self.access, self.bucket or "", item.key)
            )
            proof = prove(found, expectation(item)) if found is not None else None
            if proof is None:
                todo.append(item)
            elif len(objects) == 1:
                self.log.info("already in S3: s3://%s/%s (%s)", self.bucket, item.key, proof)
        if len(objects) > 1 and len(todo) < len(objects):
            self.log.info(
                "already in S3: %d of %d files, proven by one listing (ETag and size equal the inventory's)",
                len(objects) - len(todo),
                len(objects),
            )
        return todo

    def _base_path(self, raw_file: RawFile) -> str:
        return worker_base_path(raw_file.backup_base_path, self.settings.backup_paths)

    def _local_file(self, raw_file: RawFile, item: BackupObject) -> Path:
        """The file on disk for an inventory entry (``backup_base_path`` as this worker sees it, see
        :mod:`..core.paths`); refuses paths escaping that folder."""
        base_path = self._base_path(raw_file)
        path = local_path(base_path, item.path)
        base = Path(base_path).resolve()
        try:
            resolved = path.resolve(strict=False)
        except (RuntimeError, OSError) as error:  # a symlink loop (RuntimeError before Python 3.13)
            raise InvalidInputError(f"{path} cannot be resolved ({error}); refusing to upload it") from error
        if not resolved.is_relative_to(base):
            raise InvalidInputError(
                f"{path} resolves to {resolved}, outside backup_base_path {base} (a symlink?); refusing to "
                "upload a file from elsewhere."
            )
        if not path.is_file():
            raise LocalFileChangedError(
                f"{path} (inventory entry {item.path!r}) does not exist or is not a file, and S3 does not hold a "
                "verified copy of it. Was the local copy moved or deleted? Restore it, then clear the task. "
                + missing_hint(raw_file.backup_base_path, base_path, self.settings.backup_paths)
            )
        actual = path.stat().st_size
        if actual != item.size:
            raise LocalFileChangedError(
                f"{path} has {actual} bytes but the inventory says {item.size}: the local copy differs from the "
                "acquired file. Re-copy it from the instrument; nothing was uploaded."
            )
        return path

    def _upload(
        self,
        raw_file: RawFile,
        item: BackupObject,
        path: Path,
        *,
        listed: dict[str, RemoteObject] | None,
        budget: threading.Semaphore | None,
    ) -> VerifiedUpload:
        """The upload job of one file, resuming the stored multipart upload made for the same plan."""
        precomputed = item.precomputed
        part_size = precomputed.part_size if precomputed else self.settings.part_size
        planned = plan_parts(item.size, part_size, fixed=precomputed is not None).part_size
        expect = f"etag:{precomputed.etag}" if precomputed else f"md5:{item.md5}"
        resumable = next(
            (
                entry["upload_id"]
                for entry in raw_file.s3_uploads or []
                if entry.get("path") == item.path
                and entry.get("key") == item.key
                and entry.get("part_size") == planned
                and entry.get("expect") == expect
            ),
            None,
        )

        def remember(upload_id: str | None, used_part_size: int) -> None:
            # Persisted before any part is sent, so the next attempt on any worker resumes this upload.
            if upload_id is None:
                store.forget_upload(raw_file.id, self.attempt.owner, item.path)
                return
            entry = {"path": item.path, "key": item.key, "upload_id": upload_id}
            store.record_upload(
                raw_file.id, self.attempt.owner, {**entry, "part_size": used_part_size, "expect": expect}
            )

        return VerifiedUpload(
            access=self.access,
            path=path,
            bucket=self.bucket or "",
            key=item.key,
            part_size=part_size,
            log=self.log,
            expected_etag=precomputed.etag if precomputed else None,
            expected_md5=item.md5,
            upload_id=resumable,
            on_upload_id=remember,
            max_concurrency=self.max_concurrency,
            storage_class=self.settings.storage_class,
            cancel=self.cancel,
            known_absent=listed is not None and item.key not in listed,
            check_after=listed is None,
            budget=budget,
        )

    def _record_done(
        self, raw_file: RawFile, objects: list[BackupObject], results: dict[str, UploadResult], started: float
    ) -> BackupOutcome:
        etags: dict[str, str] = {}
        verified: dict[str, tuple[int, str, str]] = {}
        for item in objects:
            result = results.get(item.path)
            if result is None and item.precomputed is not None:  # proven by HEAD: the inventory's own ETag
                etag, etag_info = item.precomputed.etag, str(item.precomputed)
            elif result is None:  # proven by HEAD: a single-part object whose ETag is the inventory MD5
                single_part = max(self.settings.part_size, -(-item.size // MIB) * MIB)
                etag, etag_info = item.md5, format_precomputed_etag(item.md5, single_part)
            else:
                etag, etag_info = result.etag, format_precomputed_etag(result.etag, result.part_size)
            etags[item.key] = etag
            verified[item.path] = (item.size, item.md5, etag_info)
        key = backup_key(raw_file.id, {item.path: item.key for item in objects}, prefix=self.prefix)
        etag = set_etag(etags) if key.endswith("/") else etags[objects[0].key]
        seconds = time.monotonic() - started
        uploaded = sum(result.bytes_sent for result in results.values())
        skipped = len(objects) - sum(not result.skipped for result in results.values())
        total = sum(item.size for item in objects)
        outcome = BackupOutcome(
            status=BackupStatus.DONE,
            bucket=self.bucket or "",
            s3_backup_key=key,
            s3_etag=etag,
            s3_upload_path=upload_path(self.bucket or "", self.prefix),
            files=len(objects),
            bytes=total,
            bytes_uploaded=uploaded,
            files_skipped=skipped,
            seconds=seconds,
            keys=tuple(item.key for item in objects),
            read_paths=tuple(
                str(local_path(self._base_path(raw_file), item.path))
                for item in objects
                if (result := results.get(item.path)) is not None
                and (result.bytes_read or not result.skipped)
            ),
        )
        unchanged = (
            not results
            and raw_file.backup_status == BackupStatus.DONE
            and raw_file.s3_etag == etag
            and raw_file.s3_upload_path == outcome.s3_upload_path
        )
        if unchanged:  # a verified DONE, re-verified against S3: nothing to write but the lease
            store.release(raw_file.id, self.attempt.owner)
            self.log.info("RawFile %s is DONE and S3 still proves every object; nothing to do", raw_file.id)
        else:
            details = (
                f"verified {len(objects)} file(s), {total / MIB:.1f} MiB in s3://{self.bucket}/{key} "
                f"({uploaded / MIB:.1f} MiB uploaded, {skipped} already there) in {seconds:.1f} s"
            )
            store.mark_done(
                raw_file.id, self.attempt.owner, bucket=outcome.bucket, backup_key=key, etag=etag,
                upload_path=outcome.s3_upload_path, verified=verified, details=details,
            )  # fmt: skip
        self.log.info("backup summary %s", kv(raw_file=raw_file.id, **outcome.as_dict()))
        return outcome

    # ------------------------------------------------------------------ failures

    def failure_reason(self, error: BaseException) -> str:
        """The recorded reason: what happened and what will happen (or must be done) next."""
        if not isinstance(error, Exception) or isinstance(error, (LeaseLostError, BackupInterrupted)):
            return (
                f"{type(error).__name__}: interrupted ({error or 'no message'}); the multipart uploads are kept and "
                "the next attempt resumes them"
            )
        if isinstance(error, (PermanentBackupError, PermissionError)):
            return f"{type(error).__name__}: {error} (permanent: fix the cause, then clear the task)"
        try_number, max_tries = self.tries
        if try_number < max_tries:
            return f"{type(error).__name__}: {error} (transient, try {try_number} of {max_tries}: Airflow retries and resumes)"
        return f"{type(error).__name__}: {error} (transient, last of {max_tries} tries failed: clear the task to resume)"

    def _record_failure(self, error: BaseException) -> None:
        """Record FAILED if this attempt still owns the record; never let this hide the original error."""
        reason = self.failure_reason(error)
        self.log.error("backup of %s failed: %s", self.raw_file_id, reason)
        if isinstance(error, (MongoUnavailableError, LeaseLostError)):
            return
        try:
            store.mark_failed(self.raw_file_id, self.attempt.owner, reason, bucket=self.bucket)
        except Exception as record_error:  # the original error is what the task must end with
            self.log.error("could not record the failure on RawFile %s: %s", self.raw_file_id, record_error)
