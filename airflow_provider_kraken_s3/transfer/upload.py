"""VerifiedUpload: one file to one S3 object, proven byte for byte, resumable, never replacing on hope.

The steps read like the design: look at what S3 holds, decide (:mod:`..core.decision`), then either
skip, hash first, or send — single PUT or streamed multipart — prove, complete, check once more.

Proof (see :mod:`..core.decision`): each part's ETag from S3 equals the MD5 of the bytes we read and sent;
the object's ETag equals the ETag of those part MD5s; and those bytes match the inventory — its
precomputed ETag (then the part MD5s alone prove it, in one read pass) or, for ``[size, md5]`` entries, its
MD5 (then a whole-file MD5 follows the parts, in the same read pass). A multipart upload is completed only
after that proof, so only then may an object carry ``kraken-md5``; a single PUT's ETag already is its MD5.

Every new object also declares its full-object CRC64NVME, computed in the same read (S3 checks it on arrival
and keeps it): where S3's ETag is not an MD5 (SSE-KMS, SSE-C, read from its answers' headers) that checksum,
equal to ours, is the proof; an object S3 answered for without either link is read back with HEAD, and one
that still cannot be proven is refused as such (:class:`~..core.errors.UnprovableObjectError`). An object
already there that another tool wrote with a CRC32/CRC32C is compared in one read at its part layout
(``GetObjectAttributes`` lists it, or the common part sizes are tried: :mod:`..core.part_layouts`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from airflow_provider_kraken_s3.core.checksum import Checksum, Encryption
from airflow_provider_kraken_s3.core.decision import (
    Decision,
    Expectation,
    RemoteObject,
    UploadAction,
    after_hashing,
    cannot_compare,
    comparable,
    decide,
    prove,
    prove_stored,
    stored_checksum,
    validated_checksum,
)
from airflow_provider_kraken_s3.core.errors import (
    IntegrityError,
    KrakenBackupError,
    LocalFileChangedError,
    ObjectConflictError,
    PermanentBackupError,
    UnprovableObjectError,
)
from airflow_provider_kraken_s3.core.etag import etag_part_count, normalize_etag, one_part_etag
from airflow_provider_kraken_s3.core.log import Log
from airflow_provider_kraken_s3.core.part_layouts import needs_listed_parts
from airflow_provider_kraken_s3.core.parts import MIB, PartPlan, plan_parts
from airflow_provider_kraken_s3.transfer import buckets, remote
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.attributes import object_attributes
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_digests, hash_file
from airflow_provider_kraken_s3.transfer.multipart import MultipartSender
from airflow_provider_kraken_s3.transfer.progress import ProgressReporter, kv
from airflow_provider_kraken_s3.transfer.shipment import Sent, Shipment, UploadIdCallback
from airflow_provider_kraken_s3.transfer.single_put import put_single
from airflow_provider_kraken_s3.transfer.streams import local_read_error, stat_or_fail

__all__ = ["UploadIdCallback", "UploadResult", "VerifiedUpload"]


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
    #: S3's checksum of the object (validated against ours; for a skipped one S3's stored one, maybe another
    #: tool's composite CRC32/CRC32C), None where the store keeps none
    checksum: Checksum | None = None
    #: the encryption S3 declared for the object (under SSE-KMS/SSE-C only the checksum proves it)
    encryption: Encryption = Encryption.NONE


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

    These are the inputs; running the upload changes none of them.
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
        plan, expected = self._plan(stat.st_size)
        found = None if self.known_absent else remote.head(self.access, self.bucket, self.key)
        found = self._with_listed_parts(found, expected)
        decision, versioned = self._decide(found, expected)
        for note in decision.notes:
            self.log.warning("%s: %s", self.target, note)
        known: Checksum | None = None  # the file's CRC64NVME, when a read before sending computed it
        if decision.action is UploadAction.HASH_FIRST:
            decision, plan, known = self._hash_first(found, expected, decision, plan, versioned)  # type: ignore[arg-type]
        if decision.action is UploadAction.REFUSE:
            raise ObjectConflictError(f"{self.target}: {decision.reason}")
        if decision.action is UploadAction.SKIP:
            return self._finish(
                found.etag,  # type: ignore[union-attr]
                plan,
                started,
                skipped=True,
                reason=decision.reason,
                bytes_read=plan.file_size if decision.part_sizes else 0,
                version_id=found.version_id,  # type: ignore[union-attr]
                checksum=stored_checksum(found),  # type: ignore[arg-type]
                encryption=found.encryption,  # type: ignore[union-attr]
            )
        if decision.action is UploadAction.REPLACE:
            self.log.warning("REPLACING %s: %s", self.target, decision.reason)
            if not plan.is_multipart:
                known = self._prove_before_put(plan, expected) or known
        return self._send(self._shipment(stat, plan, expected, known), started, decision)

    # ------------------------------------------------------------------ deciding

    def _plan(self, size: int) -> tuple[PartPlan, Expectation]:
        """The part plan, and what the bytes must prove under it."""
        etag = self.expected_etag
        plan = plan_parts(size, self.part_size, fixed=etag is not None)
        if note := plan.describe_adjustment():
            self.log.warning("%s: %s", self.path.name, note)
        md5 = self.expected_md5
        if (
            etag is not None
            and md5 is not None
            and not plan.is_multipart
            and one_part_etag(md5) == normalize_etag(etag)
        ):
            etag = None  # a one-part multipart ETag (…-1) follows from the MD5: a single PUT is proven against it
        if etag is not None and etag_part_count(etag) != (plan.part_count if plan.is_multipart else None):
            raise IntegrityError(
                f"{self.path} has {size} bytes, which at {plan.part_size_mib} MiB parts does not give the "
                f"{etag_part_count(etag) or 1} part(s) of the expected ETag {etag}: "
                "the local file differs from the inventory (truncated or replaced?)."
            )
        part_size = plan.part_size if etag else None
        return plan, Expectation(size=plan.file_size, md5=md5, etag=etag, part_size=part_size)

    def _with_listed_parts(self, found: RemoteObject | None, expected: Expectation) -> RemoteObject | None:
        """``found`` with what ``GetObjectAttributes`` says of its checksum, where only that can say how the
        local file is to be compared with it: another tool's CRC32/CRC32C on a multipart object whose ETag
        proves nothing (its kind, which HEAD may hide, and its part sizes, which HEAD never lists). Where the
        call is refused (no ``s3:GetObjectAttributes``), HEAD's answer stands."""
        if (
            found is None
            or self.distrusted
            or found.etag_is_md5_based
            or found.size != expected.size
            or not needs_listed_parts(found.checksum, found.is_multipart)
        ):
            return found
        try:
            attributes = object_attributes(self.access, self.bucket, self.key, found.version_id)
        except PermanentBackupError as error:
            self.log.warning("%s: cannot read the part layout of its checksum: %s", self.target, error)
            return found
        if attributes is None or attributes.checksum is None:
            return found
        return replace(found, checksum=attributes.checksum, parts=attributes.part_sizes)

    def _decide(self, found: RemoteObject | None, expected: Expectation) -> tuple[Decision, bool]:
        """The decision, and whether the bucket keeps versions (asked of S3 only when it matters)."""
        if found is not None and self.distrusted:
            decision = Decision(
                UploadAction.REPLACE,
                f"{self.distrusted}; its ETag proves nothing, the verified local bytes replace it",
                replaced_etag=normalize_etag(found.etag),
            )
            return decision, bool(self.versioned)
        if found is None or prove(found, expected) is not None:
            return decide(found, expected, versioned=False), bool(self.versioned)
        hint = None
        if found.is_multipart and found.size == expected.size and found.part_size_hint is None:
            hint = remote.part_size_from_s3(self.access, self.bucket, self.key, found)
        versioned = self.versioned
        if versioned is None:
            versioned = buckets.is_versioned(self.access, self.bucket, self.log)
        return decide(found, expected, versioned=versioned, part_size_hint=hint), versioned

    def _hash_first(
        self, found: RemoteObject, expected: Expectation, decision: Decision, plan: PartPlan, versioned: bool
    ) -> tuple[Decision, PartPlan, Checksum | None]:
        """Hash the local file at the object's candidate part sizes (and its CRC64NVME, and another tool's
        CRC32/CRC32C at the layouts the decision names, all in one read) and decide again from all of them;
        the file's CRC64NVME too, when computed."""
        self.log.info("%s: %s", self.target, decision.reason)
        sizes = [size for size in decision.part_sizes if self._fits(plan.file_size, size)]
        if not sizes:  # hints S3 cannot have used: nothing to compare with
            return cannot_compare(found, expected, versioned=versioned), plan, None
        with self._reading():
            hashed = hash_file(
                self.path, sizes, cancel=self.cancel, checksum=decision.checksum, layouts=decision.layouts
            )
        local_etags, local_md5, local_checksum = hashed.etags, hashed.md5, hashed.checksum
        if etag_part_count(found.etag) == 1:  # one part: the ETag follows from the whole-file MD5
            local_etags = {size: one_part_etag(local_md5) for size in local_etags}
        # The part size whose ETag is S3's first: where the checksum proves, it still names the part size.
        ordered = sorted(local_etags.items(), key=lambda item: item[1] != normalize_etag(found.etag))
        for size, local_etag in ordered:
            after = after_hashing(
                found,
                expected,
                local_etag=local_etag,
                local_md5=local_md5,
                versioned=versioned,
                local_checksum=local_checksum,
                at_layouts=hashed.at_layouts,
            )
            if after.action is UploadAction.REFUSE and expected.md5 not in (None, local_md5):
                raise IntegrityError(f"{self.path}: {after.reason}")
            if after.action is UploadAction.SKIP:
                proven = plan_parts(plan.file_size, size, fixed=True)
                return Decision(UploadAction.SKIP, after.reason, part_sizes=(size,)), proven, local_checksum
            if comparable(found.checksum, local_checksum) or not found.etag_is_md5_based:
                return after, plan, local_checksum  # the checksum decided, whatever the part size
        if decision.part_size_known:  # hashed at the object's own part size: a difference was shown
            return after, plan, local_checksum
        return cannot_compare(found, expected, versioned=versioned), plan, local_checksum  # no guess matched

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Hashing the local file: its disappearance or a read error said as what it means."""
        try:
            yield
        except FileNotFoundError as error:
            raise LocalFileChangedError(f"{self.path} disappeared while it was hashed") from error
        except OSError as error:
            raise local_read_error(self.path, error) from error

    @staticmethod
    def _fits(file_size: int, part_size: int) -> bool:
        try:
            plan_parts(file_size, part_size, fixed=True)
        except KrakenBackupError:
            return False
        return True

    def _prove_before_put(self, plan: PartPlan, expected: Expectation) -> Checksum | None:
        """A single PUT replaces the object the moment it lands, and not every store checks Content-MD5:
        before replacing anything with one, prove the local file is the inventory's. The same read gives the
        file's CRC64NVME, which the PUT then declares as it is (S3 checks the bytes against it)."""
        want = expected.md5 or expected.etag
        if want is None:
            return None
        with self._reading():
            digests = compute_s3_digests(self.path, plan.part_size, cancel=self.cancel)
        if digests.md5 != want:
            raise IntegrityError(
                f"{self.path} has MD5 {digests.md5}, but {want} was expected: the local copy is not the "
                f"acquired file, so it must not replace {self.target}. Restore it from the instrument."
            )
        return digests.checksum

    # ------------------------------------------------------------------ sending

    def _shipment(
        self, stat: os.stat_result, plan: PartPlan, expected: Expectation, checksum: Checksum | None
    ) -> Shipment:
        """Everything a sender needs, fixed from here on."""
        reporter = ProgressReporter(
            self.log if plan.is_multipart else _QUIET, self.key, plan.file_size, callback=self.progress
        )  # no progress lines for a file of one part: its summary line says it all
        return Shipment(
            access=self.access,
            path=self.path,
            stat=stat,
            plan=plan,
            bucket=self.bucket,
            key=self.key,
            log=self.log,
            reporter=reporter,
            cancel=self.cancel,
            expected_md5=expected.md5,
            expected_etag=expected.etag,
            storage_class=self.storage_class,
            upload_id=self.upload_id,
            on_upload_id=self.on_upload_id,
            max_concurrency=self.max_concurrency,
            budget=self.budget,
            checksum=checksum,
        )

    def _send(self, shipment: Shipment, started: float, decision: Decision) -> UploadResult:
        plan = shipment.plan
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
        sent = MultipartSender(shipment).run() if plan.is_multipart else put_single(shipment)
        # HEAD decides where S3's answer alone did not prove the object, and tells the checksum S3 kept where
        # its completion answer did not (moto's never does; AWS's does): one HEAD per multipart file.
        unseen = plan.is_multipart and sent.checksum is None
        if self.check_after or not sent.proven or unseen:
            sent = self._check_final(sent, plan.file_size)
        return self._finish(
            sent.etag,
            plan,
            started,
            skipped=False,
            reason="replaced" if decision.action is UploadAction.REPLACE else "uploaded",
            bytes_read=plan.file_size,
            bytes_sent=sent.bytes_sent,
            parts_sent=len(sent.parts_sent),
            parts_reused=sent.parts_reused,
            md5=sent.md5,
            replaced_etag=decision.replaced_etag,
            version_id=sent.version_id,
            checksum=sent.checksum,
            encryption=sent.encryption,
        )

    def _check_final(self, sent: Sent, size: int) -> Sent:
        """HEAD the object once it is written: S3 must prove the bytes sent (their ETag where it is an MD5,
        their CRC64NVME); what it shows is what the record keeps (ETag, checksum, encryption)."""
        final = remote.head(self.access, self.bucket, self.key)
        evidence = (
            None
            if final is None
            else prove_stored(final, size=size, etag=sent.local_etag, checksum=sent.local_checksum)
        )
        if final is None or evidence is None or evidence.differs is not None:
            found = "no object" if final is None else f"ETag {final.etag}, {final.size} bytes"
            why = f": {evidence.differs}" if evidence is not None and evidence.differs else ""
            raise IntegrityError(
                f"{self.target} reports {found} after the upload, expected ETag {sent.local_etag} and {size} "
                f"bytes{why}; the object is corrupt or was replaced concurrently. Re-run the backup."
            )
        if evidence.proven is None:
            raise UnprovableObjectError(
                f"{self.target} was written, but it cannot be proven: {evidence.unprovable}. It is not a backup "
                "(not recorded); back this file up to a bucket with SSE-S3, or to a store that keeps checksums."
            )
        return replace(
            sent,
            etag=normalize_etag(final.etag),
            checksum=validated_checksum(final, sent.local_checksum) or sent.checksum,
            encryption=final.encryption,
            proven=True,
        )

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
