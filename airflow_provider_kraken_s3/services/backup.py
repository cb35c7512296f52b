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

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from airflow_provider_kraken_s3.core.decision import Expectation, RemoteObject, prove, stored_checksum
from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    BucketNotFoundError,
    InvalidInputError,
    LeaseLostError,
    LocalFileChangedError,
    NothingToBackUp,
    PermanentBackupError,
)
from airflow_provider_kraken_s3.core.inventory import BackupObject, backup_objects
from airflow_provider_kraken_s3.core.layout import key_prefix, listing_folder, local_path, project_of
from airflow_provider_kraken_s3.core.log import Log
from airflow_provider_kraken_s3.core.manifest import (
    DISTRUSTING_OUTCOMES,
    MANIFEST_FIELD,
    Manifest,
    ManifestObject,
    Proof,
    proven_part_size,
)
from airflow_provider_kraken_s3.core.naming import bucket_name
from airflow_provider_kraken_s3.core.parts import MIB, plan_parts
from airflow_provider_kraken_s3.core.paths import missing_hint, skip_reason, worker_base_path
from airflow_provider_kraken_s3.core.settings import BackupSettings
from airflow_provider_kraken_s3.records import lease, store
from airflow_provider_kraken_s3.records.models import BackupStatus, RawFile
from airflow_provider_kraken_s3.services.recheck import recheck
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
    log: Log
    max_concurrency: int = 4
    tries: tuple[int, int] = (1, 1)
    cancel: threading.Event = field(default_factory=threading.Event)
    bucket: str | None = None
    prefix: str = ""
    #: ``file_info`` as stored when the attempt planned: DONE is written only onto that inventory
    planned: dict[str, Any] = field(default_factory=dict)
    #: why the record's evidence forbids proving any object by its ETag (a failed deep verify), or None
    distrust: str | None = None
    #: the record was a verified DONE when the attempt began, and this attempt has not yet said otherwise
    was_done: bool = False
    wrote_in_progress: bool = False

    def run(self) -> BackupOutcome:
        started = time.monotonic()
        copy = store.read_fields(self.raw_file_id, "backup_status", "backup_base_path")
        if (why := skip_reason(copy.get("backup_status"), copy.get("backup_base_path"))) is not None:
            raise NothingToBackUp(why)  # before the claim: nothing is written
        lease.claim(self.raw_file_id, self.attempt)  # then what is read next is read as its owner
        keeper = lease.LeaseKeeper(self.raw_file_id, self.attempt, self.cancel)
        try:
            with keeper:
                return self._back_up(store.get_raw_file(self.raw_file_id), started)
        except BaseException as error:
            self._record_failure(keeper.lost or error)
            if keeper.lost is not None and error is not keeper.lost:
                raise keeper.lost from error
            raise

    # ------------------------------------------------------------------ the steps

    def _back_up(self, raw_file: RawFile, started: float) -> BackupOutcome:
        document = store.read_fields(raw_file.id, *_RECORD_FIELDS)
        self.planned = document.get("file_info") or {}
        outcome = document.get("s3_verify_outcome")
        if outcome in DISTRUSTING_OUTCOMES:
            self.distrust = (
                f"deep verification found the backup {outcome} at {document.get('s3_verified_at')}"
            )
            self.log.warning(
                "%s: no object is taken as proven by its ETag until it is uploaded again", self.distrust
            )
        elif document.get("backup_status") == BackupStatus.DONE:
            self.was_done = True
            kept = self._recheck_recorded(raw_file, document, started)
            if kept is not None:
                return kept
        self.prefix = key_prefix(
            raw_file.id,
            project_id=raw_file.project_id,
            instrument_id=raw_file.instrument_id,
            created_at=raw_file.created_at,
        )
        objects = backup_objects(raw_file.id, self.planned, prefix=self.prefix)
        self.bucket = bucket_name(self.settings.bucket_prefix or "", project_of(raw_file.project_id))
        self._ensure_bucket(project_of(raw_file.project_id))
        listed = self._listing(objects)
        todo, proven = self._not_yet_proven(objects, listed)
        results: dict[str, UploadResult] = {}
        if todo:
            files = [(item, self._local_file(raw_file, item)) for item in todo]
            total = sum(item.size for item in todo)
            store.mark_in_progress(
                raw_file.id,
                self.attempt.owner,
                f"uploading {len(todo)} of {len(objects)} file(s), {total / MIB:.1f} MiB, to s3://{self.bucket}/",
            )
            self.wrote_in_progress = True
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
        manifest = Manifest(
            bucket=self.bucket,
            prefix=self.prefix,
            objects=tuple(proven.get(item.path) or _uploaded(item, results[item.path]) for item in objects),
            proven_at=datetime.now(timezone.utc),
            attempt=self.attempt.owner,
        )
        return self._record_done(raw_file, manifest, results, started)

    def _recheck_recorded(
        self, raw_file: RawFile, document: dict[str, Any], started: float
    ) -> BackupOutcome | None:
        """A DONE record whose objects S3 still proves where it says stays as it is (:mod:`.recheck`);
        None: back up again."""
        checked = recheck(
            self.access,
            raw_file.id,
            document,
            planned=self.planned,
            part_size=self.settings.part_size,
            attempt=self.attempt.owner,
        )
        if checked.manifest is None:  # evidence against the DONE: from now on a failure is recorded as one
            self.was_done = False
            self.log.warning("RawFile %s is DONE, but %s; backing up again", raw_file.id, checked.reason)
            return None
        manifest = checked.manifest
        self.bucket, self.prefix = manifest.bucket, manifest.prefix
        configured = bucket_name(self.settings.bucket_prefix or "", project_of(raw_file.project_id))
        if configured != manifest.bucket:
            self.log.warning(
                "RawFile %s is backed up in s3://%s/, not in s3://%s/ as the settings would place it now: a "
                "verified backup is never moved (to back it up anew elsewhere, remove its s3_* fields first)",
                raw_file.id, manifest.bucket, configured,
            )  # fmt: skip
        return self._record_done(raw_file, manifest, {}, started, unchanged=checked.unchanged)

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
    ) -> tuple[list[BackupObject], dict[str, ManifestObject]]:
        """What S3 does not prove yet, and the manifest entries of what it proves (S3's own ETag, version and
        part size): those need neither the local file nor a status change. A distrusted record proves nothing."""
        todo, proven = [], {}
        for item in objects:
            found = (
                listed.get(item.key)
                if listed is not None
                else remote.head(self.access, self.bucket or "", item.key)
            )
            proof = prove(found, expectation(item)) if found is not None and not self.distrust else None
            if proof is None or found is None:
                todo.append(item)
                continue
            proven[item.path] = ManifestObject(
                path=item.path, key=item.key, size=item.size, md5=item.md5, etag=found.etag,
                part_size=proven_part_size(found.etag, item.size, item.precomputed, self.settings.part_size),
                version_id=found.version_id, proof=Proof.LISTING if listed is not None else Proof.HEAD,
                checksum=stored_checksum(found), encryption=found.encryption,
            )  # fmt: skip
            if len(objects) == 1:
                self.log.info("already in S3: s3://%s/%s (%s)", self.bucket, item.key, proof)
        if len(objects) > 1 and len(todo) < len(objects):
            self.log.info(
                "already in S3: %d of %d files, proven by one listing (ETag and size equal the inventory's)",
                len(objects) - len(todo),
                len(objects),
            )
        return todo, proven

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
            distrusted=self.distrust,
        )

    def _record_done(
        self,
        raw_file: RawFile,
        manifest: Manifest,
        results: dict[str, UploadResult],
        started: float,
        *,
        unchanged: bool = False,
    ) -> BackupOutcome:
        """Write DONE with the manifest (or, ``unchanged``, only give the lease back) and say so."""
        key = manifest.backup_key(raw_file.id)
        seconds = time.monotonic() - started
        uploaded = sum(result.bytes_sent for result in results.values())
        skipped = len(manifest.objects) - sum(not result.skipped for result in results.values())
        total = sum(item.size for item in manifest.objects)
        outcome = BackupOutcome(
            status=BackupStatus.DONE,
            bucket=manifest.bucket,
            s3_backup_key=key,
            s3_etag=manifest.s3_etag(raw_file.id),
            s3_upload_path=manifest.upload_path,
            files=len(manifest.objects),
            bytes=total,
            bytes_uploaded=uploaded,
            files_skipped=skipped,
            seconds=seconds,
            keys=tuple(item.key for item in manifest.objects),
            read_paths=tuple(
                str(local_path(self._base_path(raw_file), item.path))
                for item in manifest.objects
                if (result := results.get(item.path)) is not None
                and (result.bytes_read or not result.skipped)
            ),
        )
        if unchanged:  # a verified DONE, re-verified against S3: nothing to write but the lease
            store.release(raw_file.id, self.attempt.owner)
            self.log.info("RawFile %s is DONE and S3 still proves every object; nothing to do", raw_file.id)
        else:
            details = (
                f"verified {len(manifest.objects)} file(s), {total / MIB:.1f} MiB in s3://{manifest.bucket}/{key} "
                f"({uploaded / MIB:.1f} MiB uploaded, {skipped} already there) in {seconds:.1f} s"
            )
            store.mark_done(
                raw_file.id,
                self.attempt.owner,
                manifest=manifest,
                planned_file_info=self.planned,
                details=details,
                clear_evidence=self.distrust is not None,
            )
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
        """Record FAILED if this attempt still owns the record; never let this hide the original error.

        A verified DONE that this attempt only failed to re-check (S3 or MongoDB not answering, an
        interruption) stays DONE: a failure to look is no evidence against the backup.
        """
        reason = self.failure_reason(error)
        if isinstance(error, LeaseLostError):
            self.log.error("backup of %s failed: %s", self.raw_file_id, reason)
            return
        looked_only = self.was_done and not self.wrote_in_progress
        if looked_only and not isinstance(error, PermanentBackupError):
            self.log.warning(
                "re-checking RawFile %s failed (%s); it stays DONE: a failure to look is no evidence against "
                "its backup", self.raw_file_id, reason,
            )  # fmt: skip
            self._give_back()
            return
        self.log.error("backup of %s failed: %s", self.raw_file_id, reason)
        try:
            store.mark_failed(self.raw_file_id, self.attempt.owner, reason)
        except Exception as record_error:  # the original error is what the task must end with
            self.log.error(
                "could not record the failure on RawFile %s (%s); its lease expires at the latest in %s, and the "
                "next try of this task takes it over at once",
                self.raw_file_id, record_error, self.attempt.ttl,
            )  # fmt: skip

    def _give_back(self) -> None:
        try:
            store.release(self.raw_file_id, self.attempt.owner)
        except Exception as record_error:
            self.log.error("could not release the lease on RawFile %s: %s", self.raw_file_id, record_error)


#: The stored fields a backup plans from (``file_info`` exactly as stored: DONE is conditional on it).
_RECORD_FIELDS = ("file_info", MANIFEST_FIELD, "s3_upload_path", "s3_bucket", "s3_verify_outcome", "s3_verified_at",
                  "backup_status", "project_id", "instrument_id", "created_at")  # fmt: skip


def _uploaded(item: BackupObject, result: UploadResult) -> ManifestObject:
    """The manifest entry of a file this attempt uploaded (or proved by hashing it at the object's part size)."""
    return ManifestObject(
        path=item.path,
        key=item.key,
        size=item.size,
        md5=item.md5,
        etag=result.etag,
        part_size=result.part_size,
        version_id=result.version_id,
        proof=Proof.HASHED if result.skipped else Proof.UPLOADED,
        checksum=result.checksum,
        encryption=result.encryption,
    )
