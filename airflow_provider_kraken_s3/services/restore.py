"""Restore a RawFile's files from S3 into a folder, each one proven against the inventory first. No Airflow.

For every file of the raw file (one ``.raw``, or every file of a ``.d``/``.wiff`` set):

1. its place under the destination folder comes from its inventory path (``core.layout.local_path``); a path
   that would leave the folder — ``..``, an absolute path, a symlink inside the folder pointing out — is
   refused before anything is written;
2. an existing file is never overwritten unless ``overwrite=True``; one that already holds the inventory's
   bytes (proven by the same rule as a restored file: size, MD5, recorded ETag and checksum) is left as it is
   (``already_present``);
3. the object is streamed (:mod:`..transfer.download`: parallel ranged GETs, each conditional on the ETag
   seen at the start) into a temporary file beside the target, ``.<name>.<etag>.kraken-restore``. An
   interrupted restore leaves it behind; the next run re-hashes its bytes and fetches only the rest;
4. the temporary file is fsynced and verified against the inventory — size, MD5 and, when recorded, the
   ETag at the recorded part size — and against the checksum the record vouches for, where it names one
   (the CRC64NVME computed in the same pass; :func:`..core.deep_verify.judge_restored`). Only then is it renamed into place
   (:mod:`..transfer.placement`: without replacing a file that appeared meanwhile) and the directory fsynced.
   A file that fails is not put in place: its temporary file is removed and the report says why.

Archived objects are reported ``needs_restore`` (restore them from the archive tier first); the other files
are still restored. Callers connect MongoDB first and pass an :class:`S3Access`.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from airflow_provider_kraken_s3.core.deep_verify import (
    DeepVerifyFinding,
    DeepVerifyOutcome,
    Downloaded,
    judge_restored,
)
from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    IntegrityError,
    InvalidInputError,
    PermanentBackupError,
    TransientBackupError,
)
from airflow_provider_kraken_s3.core.inventory import BackupObject
from airflow_provider_kraken_s3.core.layout import local_path
from airflow_provider_kraken_s3.core.log import Log
from airflow_provider_kraken_s3.core.part_layouts import CrcLayout
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.services.objects_job import ObjectRow, ObjectsJob, archived, downloaded, tally
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.download import RANGE_SIZE, ObjectHead
from airflow_provider_kraken_s3.transfer.hashing import READ_BLOCK, Digests
from airflow_provider_kraken_s3.transfer.placement import (
    forget_other_partials,
    make_dirs,
    open_locked,
    partial_path,
    put_in_place,
)
from airflow_provider_kraken_s3.transfer.progress import kv
from airflow_provider_kraken_s3.transfer.stream_checksums import StreamChecksums

_log = logging.getLogger(__name__)


class RestoreOutcome(str, enum.Enum):
    RESTORED = "restored"  # downloaded, verified, renamed into place
    ALREADY_PRESENT = "already_present"  # the target already holds the inventory's bytes; left untouched
    EXISTS = "exists"  # another file is there and overwrite=False: left untouched
    FAILED = "failed"  # the downloaded bytes are not the inventory's: not put in place
    MISSING = "missing"  # no object in S3
    NEEDS_RESTORE = "needs_restore"  # archived: restore it from the archive tier first


@dataclass(frozen=True)
class FileReport(ObjectRow):
    """One file's restore: where it went, what happened, and why."""

    path: str  # the inventory path
    key: str
    target: str
    outcome: RestoreOutcome
    bytes: int  # bytes downloaded by this run
    resumed_from: int  # bytes of a partial file from an earlier run that were re-hashed, not downloaded
    seconds: float
    detail: str


@dataclass(frozen=True)
class RestoreReport:
    raw_file_id: str
    bucket: str
    destination: str
    files: tuple[FileReport, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        """Every file is in place with the inventory's bytes."""
        done = (RestoreOutcome.RESTORED, RestoreOutcome.ALREADY_PRESENT)
        return all(item.outcome in done for item in self.files)

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.files)

    def problems(self) -> list[str]:
        done = (RestoreOutcome.RESTORED, RestoreOutcome.ALREADY_PRESENT)
        return [item.detail for item in self.files if item.outcome not in done]

    def check(self) -> None:
        """Raise unless every file is in place: :class:`IntegrityError` when bytes were wrong or an object is
        missing, :class:`PermanentBackupError` when files exist or need a restore from the archive first."""
        if self.ok:
            return
        message = (
            f"restore of raw file {self.raw_file_id!r} into {self.destination} incomplete: "
            + "; ".join(self.problems())
        )
        wrong = (RestoreOutcome.FAILED, RestoreOutcome.MISSING)
        if any(item.outcome in wrong for item in self.files):
            raise IntegrityError(message)
        raise PermanentBackupError(message)

    def summary(self) -> str:
        shown = tally((item.outcome for item in self.files), RestoreOutcome)
        return (
            f"restore of raw file {self.raw_file_id!r} into {self.destination}: {shown} "
            f"({self.bytes / MIB:.1f} MiB downloaded in {self.seconds:.1f} s)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "raw_file_id": self.raw_file_id,
            "bucket": self.bucket,
            "destination": self.destination,
            "ok": self.ok,
            "files": [item.as_dict() for item in self.files],
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


@dataclass(kw_only=True)
class Restore(ObjectsJob):
    """Restore one RawFile; see :func:`restore_raw_file` for the parameters."""

    destination: Path
    overwrite: bool = False

    def run(self) -> RestoreReport:
        started = time.monotonic()
        backup = self.read_backup("to restore")
        bucket, objects = backup.bucket, backup.objects
        self.destination.mkdir(parents=True, exist_ok=True)
        targets = {item.path: self._target(item) for item in objects}  # all checked before a byte is written
        self.log.info(
            "restore start %s",
            kv(raw_file=self.raw_file_id, bucket=bucket, files=len(objects), destination=self.destination),
        )
        reports = self.per_object(objects, lambda item: self._restore_file(bucket, item, targets[item.path]))
        report = RestoreReport(
            raw_file_id=self.raw_file_id,
            bucket=bucket,
            destination=str(self.destination),
            files=tuple(reports),
            seconds=time.monotonic() - started,
        )
        (self.log.info if report.ok else self.log.warning)("%s", report.summary())
        for problem in report.problems():
            self.log.warning("restore: %s", problem)
        return report

    def _target(self, item: BackupObject) -> Path:
        """Where an inventory path goes; refuses anything resolving outside the destination folder."""
        target = local_path(self.destination, item.path)
        base = self.destination.resolve()
        try:
            resolved = target.resolve(strict=False)
        except (RuntimeError, OSError) as error:  # a symlink loop (RuntimeError before Python 3.13)
            raise InvalidInputError(
                f"{target} cannot be resolved ({error}); refusing to restore there"
            ) from error
        if not resolved.is_relative_to(base):
            raise InvalidInputError(
                f"{target} resolves to {resolved}, outside the destination {base} (a symlink?); refusing to "
                "restore anything of this raw file there. Choose an empty destination folder."
            )
        return target

    # ------------------------------------------------------------------ one file

    def _restore_file(self, bucket: str, item: BackupObject, target: Path) -> FileReport:
        started = time.monotonic()
        outcome, detail, fetched, resumed = self._restore(bucket, item, target)
        report = FileReport(
            path=item.path,
            key=item.key,
            target=str(target),
            outcome=outcome,
            bytes=fetched,
            resumed_from=resumed,
            seconds=time.monotonic() - started,
            detail=detail,
        )
        self.log_object(
            "restore",
            path=item.path,
            outcome=outcome.value,
            bytes=fetched,
            resumed_from=resumed,
            seconds=report.seconds,
        )
        return report

    def _restore(self, bucket: str, item: BackupObject, target: Path) -> tuple[RestoreOutcome, str, int, int]:
        if os.path.lexists(target):
            present = self._existing(item, target)
            if present is not None:
                return present
        head = self.readable_head(bucket, item)
        if isinstance(head, DeepVerifyFinding):
            gone = head.outcome is DeepVerifyOutcome.MISSING
            return RestoreOutcome.MISSING if gone else RestoreOutcome.NEEDS_RESTORE, head.reason, 0, 0
        make_dirs(target.parent, self.destination)
        partial = partial_path(target, head.etag)
        with open_locked(partial) as handle:
            got, fetched, resumed = self._download_into(handle, partial, bucket, item, head)
            if got is None:
                partial.unlink()
                return RestoreOutcome.NEEDS_RESTORE, archived(bucket, head).reason, 0, 0
            handle.flush()
            os.fsync(handle.fileno())
        finding = judge_restored(str(target), item, got)
        if finding.outcome is not DeepVerifyOutcome.OK:
            partial.unlink()
            return RestoreOutcome.FAILED, _not_placed(target, finding, resumed), fetched, resumed
        if os.path.lexists(target) and not self.overwrite:
            partial.unlink()
            return RestoreOutcome.EXISTS, _exists(target, "appeared while it was restored"), fetched, resumed
        try:
            put_in_place(partial, target, overwrite=self.overwrite)
        except FileExistsError:
            raise PermanentBackupError(_exists(target, "appeared while it was restored")) from None
        forget_other_partials(target, keep=partial)
        return (
            RestoreOutcome.RESTORED,
            f"{finding.reason}; restored from s3://{bucket}/{item.key}",
            fetched,
            resumed,
        )

    def _download_into(
        self, handle: BinaryIO, partial: Path, bucket: str, item: BackupObject, head: ObjectHead
    ) -> tuple[Downloaded | None, int, int]:
        """Re-hash what an earlier run left in ``handle``, fetch the rest into it; None if archived."""
        digests = _inventory_digests(item, head.size)
        checksums, _ = self.checksums_for(
            bucket, item, head, item.precomputed.part_size if item.precomputed else None
        )
        have = os.fstat(handle.fileno()).st_size
        if have > head.size:
            self.log.warning("%s is longer than the object; starting over", partial)
            handle.truncate(0)
            have = 0
        if have:
            self.log.info(
                "restore of %s resumes at byte %d of %d: re-hashing the partial file first",
                item.path,
                have,
                head.size,
            )
            _hash_file(handle, partial, have, digests, checksums, self.cancel)
        handle.seek(have)
        result = self.download(bucket, head, digests, sink=handle, start=have, checksums=checksums)
        if result.needs_restore:
            return None, 0, have
        return downloaded(digests, head.etag, checksums=checksums), result.bytes_fetched, have

    def _existing(self, item: BackupObject, target: Path) -> tuple[RestoreOutcome, str, int, int] | None:
        """An existing target: left alone if it holds the inventory's bytes, or unless ``overwrite``."""
        if target.is_file() and not target.is_symlink() and target.stat().st_size == item.size:
            digests = _inventory_digests(item, item.size)
            checksums = _local_checksums(item)
            with open(target, "rb") as handle:
                _hash_file(handle, target, item.size, digests, checksums, self.cancel)
            finding = judge_restored(str(target), item, downloaded(digests, "", checksums=checksums))
            if finding.outcome is DeepVerifyOutcome.OK:
                proven = " and its checksum" if "checksum" in finding.proofs else ""
                return (
                    RestoreOutcome.ALREADY_PRESENT,
                    f"{target} already holds the inventory's bytes (MD5 {item.md5}{proven}); left as it is",
                    0,
                    0,
                )
            why = (
                "differs from the inventory"
                if finding.proofs != ("md5",)
                else "differs from the record's checksum"
            )
        else:
            why = "is not a regular file of the inventory's size"
        if not self.overwrite:
            return RestoreOutcome.EXISTS, _exists(target, why), 0, 0
        if target.is_dir() and not target.is_symlink():
            return RestoreOutcome.EXISTS, f"{target} is a directory; it is never replaced by a file", 0, 0
        return None


def _exists(target: Path, why: str) -> str:
    return (
        f"{target} exists and {why}; it was not overwritten. Move it away, or restore with overwrite=True to "
        "replace it with the verified copy from S3."
    )


def _not_placed(target: Path, finding: DeepVerifyFinding, resumed: int) -> str:
    text = f"{target} was NOT put in place: {finding.reason}"
    if resumed:
        return (
            f"{text} The download continued a partial file of {resumed} bytes left by an earlier restore; it was "
            "removed, so running the restore again downloads everything. If that fails the same way, S3's copy "
            "differs from the inventory: deep-verify the raw file."
        )
    return f"{text} The temporary file was removed; deep-verify the raw file to see S3's copy judged."


def _inventory_digests(item: BackupObject, size: int) -> Digests:
    """Digests that judge ``size`` bytes against ``item``: its MD5, and its ETag at the recorded part size."""
    return Digests(size, [item.precomputed.part_size] if item.precomputed else [])


def _local_checksums(item: BackupObject) -> StreamChecksums:
    """The checksums a local file is judged by: the CRC64NVME, and a 32-bit CRC the record names for the
    whole file (a composite one needs the object's part layout, which a local file does not tell)."""
    recorded = item.checksum
    if recorded is not None and recorded.full_object and recorded.algorithm in ("CRC32", "CRC32C"):
        return StreamChecksums(item.size, CrcLayout.whole(recorded.algorithm, item.size))
    return StreamChecksums(item.size)


def _hash_file(
    handle: BinaryIO,
    path: Path,
    length: int,
    digests: Digests,
    checksums: StreamChecksums,
    cancel: threading.Event,
) -> None:
    """Feed the first ``length`` bytes of ``handle`` into ``digests`` and ``checksums`` (one read), stopping
    at once on ``cancel``."""
    handle.seek(0)
    buffer = bytearray(min(READ_BLOCK, max(length, 1)))
    view = memoryview(buffer)
    remaining = length
    while remaining:
        if cancel.is_set():
            raise BackupInterrupted(f"hashing {path} was stopped: the attempt was interrupted")
        got = handle.readinto(view[: min(remaining, len(buffer))])  # type: ignore[attr-defined]
        if not got:
            raise TransientBackupError(f"{path} became shorter while it was read; run the restore again")
        digests.update(view[:got])
        checksums.update(view[:got])
        remaining -= got


def restore_raw_file(
    access: S3Access,
    raw_file_id: str,
    destination: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_concurrency: int = 4,
    range_size: int = RANGE_SIZE,
    cancel: threading.Event | None = None,
    log: Log | None = None,
    progress: Callable[[int], None] | None = None,
) -> RestoreReport:
    """Restore every file of a RawFile's backup into ``destination`` (at its inventory paths), verified.

    Returns a report per file (``restored``, ``already_present``, ``exists``, ``failed``, ``missing``,
    ``needs_restore``); :meth:`RestoreReport.check` raises unless every file is in place. An interrupted
    restore (an error, ``cancel``) keeps its temporary files; running it again continues them.

    ``max_concurrency``, ``range_size``, ``cancel`` and ``progress``: see :class:`~.objects_job.ObjectsJob`.

    :param overwrite: replace existing files that differ from the inventory (never a directory).
    :raises InvalidInputError: no bucket, an unreadable inventory, or a path escaping ``destination``.
    :raises KrakenBackupError: S3 or MongoDB failed (the partial files are kept for the next run).
    """
    return Restore(
        access=access,
        raw_file_id=raw_file_id,
        destination=Path(destination),
        overwrite=overwrite,
        max_concurrency=max_concurrency,
        range_size=range_size,
        cancel=cancel or threading.Event(),
        log=log or _log,
        progress=progress,
    ).run()
