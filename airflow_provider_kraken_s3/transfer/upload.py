"""VerifiedUpload: one file to one S3 object, proven byte for byte, resumable, never replacing on hope.

The steps read like the design: look at what S3 holds, decide (:mod:`..core.decision`), then either
skip, hash first, or send — single PUT or streamed multipart — prove, complete, check once more.

Proof (see :mod:`..core.decision`): each part's ETag from S3 equals the MD5 of the bytes we read and sent;
the object's ETag equals the ETag of those part MD5s; and those bytes match the inventory — its
precomputed ETag (then the part MD5s alone prove it, in one read pass) or, for ``[size, md5]`` entries, its
MD5 (then a whole-file MD5 follows the parts, in the same read pass). A multipart upload is completed only
after that proof, so only then may an object carry ``kraken-md5``; a single PUT's ETag already is its MD5.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_kraken_s3.core.decision import (
    META_MD5,
    META_PART_SIZE,
    META_RCLONE_MD5,
    Decision,
    Expectation,
    RemoteObject,
    after_hashing,
    cannot_compare,
    decide,
    one_part_etag,
    prove,
)
from airflow_provider_kraken_s3.core.decision import (
    UploadAction as Action,
)
from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    IntegrityError,
    KrakenBackupError,
    LocalFileChangedError,
    ObjectConflictError,
)
from airflow_provider_kraken_s3.core.etag import etag_part_count, normalize_etag
from airflow_provider_kraken_s3.core.log import Log
from airflow_provider_kraken_s3.core.parts import MIB, Part, PartPlan, plan_parts
from airflow_provider_kraken_s3.transfer import buckets, remote
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag_and_md5, compute_s3_etags
from airflow_provider_kraken_s3.transfer.multipart import MultipartSender
from airflow_provider_kraken_s3.transfer.progress import ProgressReporter, kv
from airflow_provider_kraken_s3.transfer.streams import (
    PartBody,
    UploadStopped,
    check_unchanged,
    local_read_error,
    stat_or_fail,
)

#: ``on_upload_id(upload_id, part_size)``: a multipart upload was started or resumed (persist it before any
#: part is sent), or ``(None, part_size)`` once it is completed or aborted.
UploadIdCallback = Callable[[str | None, int], None]


@dataclass(frozen=True)
class UploadResult:
    """What the upload did; every field is a verified fact, never a hope."""

    bucket: str
    key: str
    etag: str
    size: int
    part_size: int
    skipped: bool
    bytes_sent: int
    bytes_read: int
    parts_sent: int = 0
    parts_reused: int = 0
    md5: str | None = None
    seconds: float = 0.0
    reason: str = "uploaded"
    replaced_etag: str | None = None
    #: the version S3 created (or HEAD showed, when skipped), where the bucket keeps versions
    version_id: str | None = None


_QUIET = logging.getLogger(f"{__name__}.quiet")
_QUIET.disabled = True


@dataclass
class VerifiedUpload:
    """Upload ``path`` to ``s3://bucket/key`` and prove it, or raise saying why not.

    :param expected_etag: the inventory's precomputed ETag; ``part_size`` must be the one it assumes.
    :param expected_md5: the inventory's MD5 of the file.
    :param upload_id: a multipart upload of this key, part size and expectation to resume.
    :param versioned: whether the bucket keeps old versions (None: ask S3 when it matters).
    :param storage_class: S3 storage class of the new object (None: the bucket's default).
    :param known_absent: a listing just showed the key absent, so the HEAD before uploading is skipped.
    :param check_after: HEAD the object after the upload (off when the caller lists the whole set instead).
    :param budget: a semaphore bounding the requests in flight across all files of a set.
    :param cancel: set from outside (a task timeout, a lost lease) to stop at the next block.
    """

    access: S3Access
    path: Path
    bucket: str
    key: str
    part_size: int
    log: Log
    expected_etag: str | None = None
    expected_md5: str | None = None
    upload_id: str | None = None
    on_upload_id: UploadIdCallback | None = None
    progress: Callable[[int, int], None] | None = None
    max_concurrency: int = 4
    versioned: bool | None = None
    storage_class: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    #: Set when a listing of the prefix already said the key is absent: no HEAD before the upload.
    known_absent: bool = False
    #: False when the caller verifies the final state itself (one listing for a whole set).
    check_after: bool = True
    #: Transfers in flight, shared with the other files of a set (files and parts draw from one budget).
    budget: threading.Semaphore | None = None
    #: The record holds evidence against the object (a deep verify found other bytes behind its ETag): what
    #: S3 shows proves nothing, and the verified local bytes replace it as a new version.
    distrusted: str | None = None
    #: The version the upload created (set when S3 answers the PUT or the completion).
    version_id: str | None = field(default=None, init=False)

    @property
    def target(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def run(self) -> UploadResult:
        """Upload and prove, its log lines folded in one group in Airflow's log view (files uploaded one at a
        time only: the groups of concurrent files would interleave)."""
        if self.budget is not None:
            return self._run()
        self.log.info("::group::%s", f"upload {self.target}")
        try:
            return self._run()
        finally:
            self.log.info("::endgroup::")

    def _run(self) -> UploadResult:
        started = time.monotonic()
        stat = stat_or_fail(self.path)
        plan = self._plan(stat.st_size)
        expected = self._expectation(plan)
        found = None if self.known_absent else remote.head(self.access, self.bucket, self.key)
        decision = self._decide(found, expected)
        for note in decision.notes:
            self.log.warning("%s: %s", self.target, note)
        if decision.action is Action.HASH_FIRST:
            decision, plan = self._hash_first(found, expected, decision, plan)  # type: ignore[arg-type]
        if decision.action is Action.REFUSE:
            raise ObjectConflictError(f"{self.target}: {decision.reason}")
        if decision.action is Action.SKIP:
            self.version_id = found.version_id  # type: ignore[union-attr]
            return self._finish(
                found.etag,  # type: ignore[union-attr]
                plan,
                started,
                skipped=True,
                reason=decision.reason,
                bytes_read=plan.file_size if decision.part_sizes else 0,
            )
        if decision.action is Action.REPLACE:
            self.log.warning("REPLACING %s: %s", self.target, decision.reason)
            if not plan.is_multipart:
                self._prove_before_put(plan)
        return self._send(stat, plan, expected, started, decision)

    # ------------------------------------------------------------------ deciding

    def _plan(self, size: int) -> PartPlan:
        plan = plan_parts(size, self.part_size, fixed=self.expected_etag is not None)
        if note := plan.describe_adjustment():
            self.log.warning("%s: %s", self.path.name, note)
        one_part = (
            self.expected_etag is not None
            and self.expected_md5 is not None
            and not plan.is_multipart
            and one_part_etag(self.expected_md5) == normalize_etag(self.expected_etag)
        )
        if (
            one_part
        ):  # a one-part multipart ETag (…-1) follows from the MD5: a single PUT is proven against it
            self.expected_etag = None
        if self.expected_etag is not None and etag_part_count(self.expected_etag) != (
            plan.part_count if plan.is_multipart else None
        ):
            raise IntegrityError(
                f"{self.path} has {size} bytes, which at {plan.part_size_mib} MiB parts does not give the "
                f"{etag_part_count(self.expected_etag) or 1} part(s) of the expected ETag {self.expected_etag}: "
                "the local file differs from the inventory (truncated or replaced?)."
            )
        return plan

    def _expectation(self, plan: PartPlan) -> Expectation:
        return Expectation(
            size=plan.file_size,
            md5=self.expected_md5,
            etag=self.expected_etag,
            part_size=plan.part_size if self.expected_etag else None,
        )

    def _decide(self, found: RemoteObject | None, expected: Expectation) -> Decision:
        if found is not None and self.distrusted:
            return Decision(
                Action.REPLACE,
                f"{self.distrusted}; its ETag proves nothing, the verified local bytes replace it",
                replaced_etag=normalize_etag(found.etag),
            )
        if found is None or prove(found, expected) is not None:
            return decide(found, expected, versioned=False)
        hint = None
        if found.is_multipart and found.size == expected.size and found.part_size_hint is None:
            hint = remote.part_size_from_s3(self.access, self.bucket, self.key, found)
        if self.versioned is None:
            self.versioned = buckets.is_versioned(self.access, self.bucket, self.log)
        return decide(found, expected, versioned=self.versioned, part_size_hint=hint)

    def _hash_first(
        self, found: RemoteObject, expected: Expectation, decision: Decision, plan: PartPlan
    ) -> tuple[Decision, PartPlan]:
        """Hash the local file at the object's candidate part sizes (one read) and decide again from both."""
        self.log.info("%s: %s", self.target, decision.reason)
        sizes = [size for size in decision.part_sizes if self._fits(plan.file_size, size)]
        if not sizes:  # hints S3 cannot have used: nothing to compare with
            return cannot_compare(found, expected, versioned=bool(self.versioned)), plan
        try:
            local_etags, local_md5 = compute_s3_etags(self.path, sizes, cancel=self.cancel)
        except FileNotFoundError as error:
            raise LocalFileChangedError(f"{self.path} disappeared while it was hashed") from error
        except OSError as error:
            raise local_read_error(self.path, error) from error
        versioned = bool(self.versioned)
        if etag_part_count(found.etag) == 1:  # one part: the ETag follows from the whole-file MD5
            local_etags = {size: one_part_etag(local_md5) for size in local_etags}
        for size, local_etag in local_etags.items():
            after = after_hashing(
                found, expected, local_etag=local_etag, local_md5=local_md5, versioned=versioned
            )
            if after.action is Action.REFUSE and expected.md5 not in (None, local_md5):
                raise IntegrityError(f"{self.path}: {after.reason}")
            if after.action is Action.SKIP:
                proven = plan_parts(plan.file_size, size, fixed=True)
                return Decision(Action.SKIP, after.reason, part_sizes=(size,)), proven
        if decision.part_size_known:  # hashed at the object's own part size: a difference was shown
            return after, plan
        return cannot_compare(found, expected, versioned=versioned), plan  # no guess matched

    @staticmethod
    def _fits(file_size: int, part_size: int) -> bool:
        try:
            plan_parts(file_size, part_size, fixed=True)
        except KrakenBackupError:
            return False
        return True

    def _prove_before_put(self, plan: PartPlan) -> None:
        """A single PUT replaces the object the moment it lands, and not every store checks Content-MD5:
        before replacing anything with one, prove the local file is the inventory's."""
        expected = self.expected_md5 or self.expected_etag
        if expected is None:
            return
        _, local_md5 = self._hash(plan.part_size)
        if local_md5 != expected:
            raise IntegrityError(
                f"{self.path} has MD5 {local_md5}, but {expected} was expected: the local copy is not the "
                f"acquired file, so it must not replace {self.target}. Restore it from the instrument."
            )

    def _hash(self, part_size: int) -> tuple[str, str]:
        try:
            return compute_s3_etag_and_md5(self.path, part_size, cancel=self.cancel)
        except FileNotFoundError as error:
            raise LocalFileChangedError(f"{self.path} disappeared while it was hashed") from error
        except OSError as error:
            raise local_read_error(self.path, error) from error

    # ------------------------------------------------------------------ sending

    def _send(
        self, stat: os.stat_result, plan: PartPlan, expected: Expectation, started: float, decision: Decision
    ) -> UploadResult:
        reporter = ProgressReporter(
            self.log if plan.is_multipart else _QUIET, self.key, plan.file_size, callback=self.progress
        )  # no progress lines for a file of one part: its summary line says it all
        log_start = (
            self.log.info if plan.is_multipart else self.log.debug
        )  # a small file: its summary says it
        log_start(
            "upload start %s",
            kv(
                file=str(self.path),
                target=self.target,
                size=plan.file_size,
                part_size_mib=plan.part_size_mib,
                parts=plan.part_count,
            ),
        )
        if plan.is_multipart:
            etag, md5, sent, reused = MultipartSender(self, plan, stat, reporter).run()
        else:
            etag, md5, sent, reused = self._put(plan, stat, reporter)
        if self.check_after:
            self._check_final(etag, plan.file_size)
        return self._finish(
            etag,
            plan,
            started,
            skipped=False,
            reason="replaced" if decision.action is Action.REPLACE else "uploaded",
            bytes_read=plan.file_size,
            bytes_sent=sum(p.length for p in sent),
            parts_sent=len(sent),
            parts_reused=reused,
            md5=md5,
            replaced_etag=decision.replaced_etag,
        )

    def _put(
        self, plan: PartPlan, stat: os.stat_result, reporter: ProgressReporter
    ) -> tuple[str, str, list[Part], int]:
        """Single PUT. Content-MD5 lets S3 refuse wrong bytes; the returned ETag proves what it stored."""
        expected = self.expected_md5 or self.expected_etag
        part = next(plan.parts())
        body = PartBody(self.path, part, should_stop=self.cancel.is_set)
        extra = self.object_arguments()
        if expected:
            extra["ContentMD5"] = base64.b64encode(bytes.fromhex(expected)).decode()
        try:
            with self.transfer_slot():
                response = self.access.call(
                    "put_object",
                    f"uploading {self.target}",
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=body,
                    ContentLength=plan.file_size,
                    **extra,
                )
        except IntegrityError as error:
            raise IntegrityError(
                f"S3 refused {self.target}: the bytes read from {self.path} do not have the expected MD5 "
                f"{expected}. Nothing was stored; the local file differs from the inventory."
            ) from error
        except (KrakenBackupError, UploadStopped):
            # The cancel is heard inside the body: botocore wraps that in a network error when it reads while
            # sending, but lets it through as it is when it reads to compute a checksum first.
            if isinstance(body.failure, UploadStopped):
                raise BackupInterrupted(
                    f"upload of {self.target} stopped before it completed: the attempt was interrupted"
                ) from None
            body.raise_failure()
            raise
        finally:
            body.close()
        check_unchanged(self.path, stat)
        md5 = body.hexdigest()
        self.version_id = remote.version_of(response)  # type: ignore[arg-type]
        reporter.add(plan.file_size)
        returned = normalize_etag(response["ETag"])  # type: ignore[index]
        if returned != md5:
            raise IntegrityError(
                f"S3 stored {self.target} with ETag {returned}, but the bytes read from {self.path} have MD5 "
                f"{md5}: the data was corrupted in transit. The object is not a backup; re-run the backup."
            )
        if expected and md5 != expected:
            raise IntegrityError(
                f"{self.path} was read with MD5 {md5}, but {expected} was expected: the local file differs "
                f"from the inventory, and {self.target} now holds those bytes (not recorded as a backup; a "
                "versioned bucket keeps the previous version). Restore the file from the instrument and re-run."
            )
        return md5, md5, [part], 0

    def _check_final(self, etag: str, size: int) -> None:
        final = remote.head(self.access, self.bucket, self.key)
        if final is None or normalize_etag(final.etag) != etag or final.size != size:
            found = "no object" if final is None else f"ETag {final.etag}, {final.size} bytes"
            raise IntegrityError(
                f"{self.target} reports {found} after the upload, expected ETag {etag} and {size} bytes; the "
                "object is corrupt or was replaced concurrently. Re-run the backup."
            )

    def transfer_slot(self) -> AbstractContextManager[Any]:
        """One place in the set's shared budget of requests in flight (no limit without a budget)."""
        return self.budget if self.budget is not None else nullcontext()

    def object_arguments(self) -> dict[str, Any]:
        """Arguments every new object gets, whichever way it is uploaded."""
        return {"StorageClass": self.storage_class} if self.storage_class else {}

    def multipart_metadata(self, plan: PartPlan) -> dict[str, str]:
        """Hints for later readers, set where the object cannot complete unverified (multipart only).

        ``kraken-md5`` and rclone's ``md5chksum`` (base64) carry the inventory MD5, so ``rclone check`` can
        compare our objects without downloading them — only when that MD5 is computed from the bytes sent
        and checked before completion (no precomputed ETag): a claim nobody checked could be false.
        ``kraken-part-size`` says how to recompute the ETag.
        """
        metadata = {META_PART_SIZE: str(plan.part_size)}
        if self.expected_md5 and self.expected_etag is None:  # the whole-file MD5 is computed and checked
            metadata[META_MD5] = self.expected_md5
            metadata[META_RCLONE_MD5] = base64.b64encode(bytes.fromhex(self.expected_md5)).decode()
        return metadata

    def existing_parts(self, plan: PartPlan) -> tuple[str | None, dict[int, remote.RemotePart]]:
        """The upload to resume (id and its parts in S3), or ``(None, {})`` when there is none left."""
        if self.upload_id is None:
            return None, {}
        parts = remote.list_parts(self.access, self.bucket, self.key, self.upload_id)
        if parts is None:
            self.log.warning(
                "upload id %s of %s no longer exists; starting a new upload", self.upload_id, self.target
            )
            return None, {}
        self.log.info(
            "resuming multipart upload %s",
            kv(
                target=self.target, upload_id=self.upload_id, parts_in_s3=len(parts), part_size=plan.part_size
            ),
        )
        return self.upload_id, parts

    def completed_elsewhere(self, etag: str, size: int) -> bool:
        """After ``NoSuchUpload`` on completion: did our completion land (its response lost)?"""
        final = remote.head(self.access, self.bucket, self.key)
        if final is not None:
            self.version_id = final.version_id
        return final is not None and normalize_etag(final.etag) == etag and final.size == size

    def _finish(self, etag: str, plan: PartPlan, started: float, *, skipped: bool, reason: str, **facts: Any):
        result = UploadResult(
            bucket=self.bucket,
            key=self.key,
            etag=normalize_etag(etag),
            size=plan.file_size,
            part_size=plan.part_size,
            skipped=skipped,
            bytes_sent=facts.pop("bytes_sent", 0),
            seconds=time.monotonic() - started,
            reason=reason,
            md5=facts.pop("md5", None) or self.expected_md5,
            version_id=self.version_id,
            **facts,
        )
        seconds = max(result.seconds, 1e-9)
        self.log.info(
            "upload summary %s",
            kv(
                key=result.key,
                bucket=result.bucket,
                size=result.size,
                seconds=result.seconds,
                mib_s=result.bytes_sent / MIB / seconds,
                parts_sent=result.parts_sent,
                parts_reused=result.parts_reused,
                skipped=result.skipped,
                bytes_read=result.bytes_read,
                etag=result.etag,
                storage_class=self.storage_class or "default",
                reason=reason,
            ),
        )
        return result
