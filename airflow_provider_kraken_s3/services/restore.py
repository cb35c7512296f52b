"""Restore a RawFile's files from S3 into a folder, each one proven against the inventory first. No Airflow.

For every file of the raw file (one ``.raw``, or every file of a ``.d``/``.wiff`` set):

1. its place under the destination folder comes from its inventory path (``core.layout.local_path``); a path
   that would leave the folder — ``..``, an absolute path, a symlink inside the folder pointing out — is
   refused before anything is written;
2. an existing file is never overwritten unless ``overwrite=True``; one that already holds the inventory's
   bytes is left as it is (``already_present``);
3. the object is streamed (:mod:`..transfer.download`: parallel ranged GETs, each conditional on the ETag
   seen at the start) into a temporary file beside the target, ``.<name>.<etag>.kraken-restore``. An
   interrupted restore leaves it behind; the next run re-hashes its bytes and fetches only the rest;
4. the temporary file is fsynced and verified against the inventory — size, MD5 and, when recorded, the
   ETag at the recorded part size (:func:`..core.fixity.judge_restored`). Only then is it renamed into place
   (without replacing a file that appeared meanwhile) and the directory fsynced. A file that fails is not put
   in place: its temporary file is removed and the report says why.

Archived objects are reported ``needs_restore`` (restore them from the archive tier first); the other files
are still restored. Callers connect MongoDB first and pass an :class:`S3Access`.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from airflow_provider_kraken_s3.core.errors import (
    IntegrityError,
    InvalidInputError,
    PermanentBackupError,
    TransientBackupError,
)
from airflow_provider_kraken_s3.core.fixity import (
    Downloaded,
    Finding,
    FixityOutcome,
    archived_finding,
    judge_restored,
    missing_finding,
)
from airflow_provider_kraken_s3.core.inventory import BackupObject, backup_objects
from airflow_provider_kraken_s3.core.layout import key_prefix, local_path
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.records import fixity as records
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.buckets import check_bucket
from airflow_provider_kraken_s3.transfer.download import (
    RANGE_SIZE,
    Digests,
    ObjectDownload,
    ObjectHead,
    head_object,
    run_per_object,
)
from airflow_provider_kraken_s3.transfer.progress import kv

_log = logging.getLogger(__name__)

#: Suffix of the temporary file a restore writes beside its target (hidden: its name starts with a dot).
PARTIAL_SUFFIX = ".kraken-restore"
#: Block size for re-hashing a partial file or an existing target.
READ_BLOCK = 4 * MIB


class RestoreOutcome(str, enum.Enum):
    RESTORED = "restored"  # downloaded, verified, renamed into place
    ALREADY_PRESENT = "already_present"  # the target already holds the inventory's bytes; left untouched
    EXISTS = "exists"  # another file is there and overwrite=False: left untouched
    FAILED = "failed"  # the downloaded bytes are not the inventory's: not put in place
    MISSING = "missing"  # no object in S3
    NEEDS_RESTORE = "needs_restore"  # archived: restore it from the archive tier first


@dataclass(frozen=True)
class FileReport:
    """One file's restore: where it went, what happened, and why."""

    path: str  # the inventory path
    key: str
    target: str
    outcome: RestoreOutcome
    bytes: int  # bytes downloaded by this run
    resumed_from: int  # bytes of a partial file from an earlier run that were re-hashed, not downloaded
    seconds: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome.value, "seconds": round(self.seconds, 3)}


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
        counts = {o.value: sum(i.outcome is o for i in self.files) for o in RestoreOutcome}
        shown = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
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


_MD5_ETAG = re.compile(r"[0-9a-f]{32}(-[0-9]+)?")


def partial_path(target: Path, etag: str) -> Path:
    """The temporary file beside ``target`` for the object with ``etag``: a later run with the same object
    continues it; another version of the object never continues it. (An ETag that is not an MD5 ETag, which
    could hold any character, is replaced by its MD5.)"""
    tag = etag if _MD5_ETAG.fullmatch(etag) else hashlib.md5(etag.encode()).hexdigest()
    return target.with_name(f".{target.name}.{tag}{PARTIAL_SUFFIX}")


@dataclass
class Restore:
    """Restore one RawFile; see :func:`restore_raw_file` for the parameters."""

    access: S3Access
    raw_file_id: str
    destination: Path
    overwrite: bool = False
    max_concurrency: int = 4
    range_size: int = RANGE_SIZE
    cancel: threading.Event = field(default_factory=threading.Event)
    log: logging.Logger = _log
    progress: Callable[[int], None] | None = None

    def run(self) -> RestoreReport:
        started = time.monotonic()
        document = records.read_record(self.raw_file_id)
        bucket = document.get("s3_bucket")
        if not bucket:
            raise InvalidInputError(
                f"raw file {self.raw_file_id!r} has no s3_bucket: it was never backed up, so there is nothing "
                "to restore"
            )
        prefix = key_prefix(
            self.raw_file_id,
            project_id=document.get("project_id"),
            instrument_id=document.get("instrument_id"),
            created_at=document.get("created_at"),
        )
        objects = backup_objects(self.raw_file_id, document.get("file_info"), prefix=prefix)
        check_bucket(self.access, bucket)
        self.destination.mkdir(parents=True, exist_ok=True)
        targets = [self._target(item) for item in objects]  # every path checked before a byte is written
        self.log.info(
            "restore start %s",
            kv(raw_file=self.raw_file_id, bucket=bucket, files=len(objects), destination=self.destination),
        )
        reports: list[FileReport] = run_per_object(
            [item.size for item in objects],
            lambda i: self._restore_file(bucket, objects[i], targets[i]),
            range_size=self.range_size,
            max_concurrency=self.max_concurrency,
        )
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
        self.log.info(
            "restore %s",
            kv(
                path=item.path,
                outcome=outcome.value,
                bytes=fetched,
                resumed_from=resumed,
                seconds=report.seconds,
                mib_s=fetched / MIB / max(report.seconds, 1e-9),
            ),
        )
        return report

    def _restore(self, bucket: str, item: BackupObject, target: Path) -> tuple[RestoreOutcome, str, int, int]:
        if os.path.lexists(target):
            present = self._existing(item, target)
            if present is not None:
                return present
        head = head_object(self.access, bucket, item.key)
        if head is None:
            return RestoreOutcome.MISSING, missing_finding(bucket, item.key).reason, 0, 0
        if head.needs_restore:
            reason = archived_finding(bucket, item.key, head.storage_class, head.restore).reason
            return RestoreOutcome.NEEDS_RESTORE, reason, 0, 0
        _make_dirs(target.parent, self.destination)
        partial = partial_path(target, head.etag)
        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
        with open(fd, "r+b") as handle:
            _lock(handle, partial)
            got, fetched, resumed = self._download_into(handle, partial, bucket, item, head)
            if got is None:
                reason = archived_finding(bucket, item.key, head.storage_class, head.restore).reason
                partial.unlink()
                return RestoreOutcome.NEEDS_RESTORE, reason, 0, 0
            handle.flush()
            os.fsync(handle.fileno())
        finding = judge_restored(str(target), item, got)
        if finding.outcome is not FixityOutcome.OK:
            partial.unlink()
            return RestoreOutcome.FAILED, _not_placed(target, finding, resumed), fetched, resumed
        if os.path.lexists(target) and not self.overwrite:
            partial.unlink()
            return RestoreOutcome.EXISTS, _exists(target, "appeared while it was restored"), fetched, resumed
        _put_in_place(partial, target, overwrite=self.overwrite)
        _forget_other_partials(target, keep=partial)
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
        part_sizes = [item.precomputed.part_size] if item.precomputed else []
        digests = Digests(head.size, part_sizes)
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
            _hash_file(handle, partial, have, digests)
        handle.seek(have)
        result = ObjectDownload(
            self.access,
            bucket,
            head,
            digests,
            sink=handle,
            start=have,
            range_size=self.range_size,
            max_concurrency=1 if head.size <= self.range_size else self.max_concurrency,
            cancel=self.cancel,
            progress=self.progress,
        ).run()
        if result.needs_restore:
            return None, 0, have
        got = Downloaded(size=head.size, md5=result.md5 or "", etags=result.etags, s3_etag=head.etag)
        return got, result.bytes_fetched, have

    def _existing(self, item: BackupObject, target: Path) -> tuple[RestoreOutcome, str, int, int] | None:
        """An existing target: left alone if it holds the inventory's bytes, or unless ``overwrite``."""
        if target.is_file() and not target.is_symlink() and target.stat().st_size == item.size:
            part_sizes = [item.precomputed.part_size] if item.precomputed else []
            digests = Digests(item.size, part_sizes)
            with open(target, "rb") as handle:
                _hash_file(handle, target, item.size, digests)
            got = Downloaded(size=item.size, md5=digests.md5, etags=digests.etags(), s3_etag="")
            if judge_restored(str(target), item, got).outcome is FixityOutcome.OK:
                return (
                    RestoreOutcome.ALREADY_PRESENT,
                    f"{target} already holds the inventory's bytes (MD5 {item.md5}); left as it is",
                    0,
                    0,
                )
            why = "differs from the inventory"
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


def _not_placed(target: Path, finding: Finding, resumed: int) -> str:
    text = f"{target} was NOT put in place: {finding.reason}"
    if resumed:
        return (
            f"{text} The download continued a partial file of {resumed} bytes left by an earlier restore; it was "
            "removed, so running the restore again downloads everything. If that fails the same way, S3's copy "
            "differs from the inventory: deep-verify the raw file."
        )
    return f"{text} The temporary file was removed; deep-verify the raw file to see S3's copy judged."


def _hash_file(handle: BinaryIO, path: Path, length: int, digests: Digests) -> None:
    """Feed the first ``length`` bytes of ``handle`` into ``digests``."""
    handle.seek(0)
    buffer = bytearray(min(READ_BLOCK, max(length, 1)))
    view = memoryview(buffer)
    remaining = length
    while remaining:
        got = handle.readinto(view[: min(remaining, len(buffer))])
        if not got:
            raise TransientBackupError(f"{path} became shorter while it was read; run the restore again")
        digests.update(view[:got])
        remaining -= got


def _lock(handle: BinaryIO, partial: Path) -> None:
    """One restore per temporary file: a second one at the same time would interleave its writes."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise TransientBackupError(
            f"{partial} is being written by another restore right now; wait for it to finish, then run again"
        ) from None


def _put_in_place(partial: Path, target: Path, *, overwrite: bool) -> None:
    """Rename the verified file to its name; without ``overwrite``, never over a file that appeared meanwhile
    (a hard link fails if the name exists; file systems without hard links fall back to check-then-rename)."""
    if overwrite:
        os.replace(partial, target)
    else:
        try:
            os.link(partial, target)
        except FileExistsError:
            partial.unlink()
            raise PermanentBackupError(_exists(target, "appeared while it was restored")) from None
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if os.path.lexists(target):
                partial.unlink()
                raise PermanentBackupError(_exists(target, "appeared while it was restored")) from None
            os.rename(partial, target)
        else:
            partial.unlink()
    _fsync_dir(target.parent)


def _forget_other_partials(target: Path, *, keep: Path) -> None:
    """Temporary files of other versions of the object (it was replaced between two runs) are useless now.

    Matched exactly (name, then an ETag): ``.x.wiff.*`` would also match ``.x.wiff.scan.…``, a sibling's.
    """
    prefix, suffix = f".{target.name}.", PARTIAL_SUFFIX
    for other in target.parent.iterdir():
        name = other.name
        ours = name.startswith(prefix) and name.endswith(suffix)
        if ours and _MD5_ETAG.fullmatch(name[len(prefix) : -len(suffix)]) and other != keep:
            other.unlink(missing_ok=True)


def _make_dirs(folder: Path, base: Path) -> None:
    """Create ``folder`` (inside ``base``) and fsync each parent that got a new entry."""
    missing = []
    while not folder.exists() and folder != base:
        missing.append(folder)
        folder = folder.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        _fsync_dir(directory.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def restore_raw_file(
    access: S3Access,
    raw_file_id: str,
    destination: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_concurrency: int = 4,
    range_size: int = RANGE_SIZE,
    cancel: threading.Event | None = None,
    log: logging.Logger | None = None,
    progress: Callable[[int], None] | None = None,
) -> RestoreReport:
    """Restore every file of a RawFile's backup into ``destination`` (at its inventory paths), verified.

    Returns a report per file (``restored``, ``already_present``, ``exists``, ``failed``, ``missing``,
    ``needs_restore``); :meth:`RestoreReport.check` raises unless every file is in place. An interrupted
    restore (an error, ``cancel``) keeps its temporary files; running it again continues them.

    :param overwrite: replace existing files that differ from the inventory (never a directory).
    :param max_concurrency: ranged GETs in flight (and small files of a set restored at once).
    :param range_size: bytes per ranged GET; memory stays below about ``2 * max_concurrency * range_size``.
    :param cancel: set it from another thread to stop (raises :class:`~..core.errors.BackupInterrupted`).
    :param progress: told of the bytes of every range written (from several threads for small files).
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
