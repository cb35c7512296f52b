"""The multipart half of a verified upload: parts in parallel, each proven as it returns, then completion.

Sends a :class:`~.shipment.Shipment` whose file is larger than one part. Every part streams from disk in 1 MiB
blocks and is MD5-hashed and CRC64NVME-checksummed on its first read; S3's answer must prove the part
(:func:`~..core.decision.prove_stored`: its ETag equals that MD5 where the encryption allows, its CRC64NVME
ours). Before completing, the ETag of all part MD5s must equal the inventory's ETag and, for ``[size, md5]``
inventories only, a whole-file MD5 (following the parts in the same read pass) must equal the inventory's
MD5. Only integrity and local-file failures abort the upload; anything else keeps it, so the next attempt
resumes.

**Checksums.** A new upload is created ``FULL_OBJECT`` CRC64NVME; each part declares its CRC64NVME (botocore
computes it from the bytes it sends, S3 checks it on arrival), and the completion declares the whole file's
value — combined from the part CRCs read on the way, never a second pass — with ``MpuObjectSize``: S3
combines the CRCs of the parts it holds and refuses a completion that differs. Under SSE-KMS/SSE-C, where the
ETags are opaque, that checksum is the proof. A resumed upload keeps the parts S3 proves: by the CRC64NVME
ListParts shows for them (AWS), or by their ETag (an MD5, where the encryption allows; moto and Ceph list no
checksums) with the CRC recomputed from the local read that checked it; a part that neither proves is sent
again. Once the store refused streamed checksums (411, Ceph 16 over HTTPS), nothing more is declared
(:meth:`~.access.S3Access.declares_checksums`): such a store keeps none, and the ETags prove as before.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from airflow_provider_kraken_s3.core.checksum import (
    ALGORITHM,
    Checksum,
    Encryption,
    checksum_of,
    encryption_of,
    full_object_crc64nvme,
)
from airflow_provider_kraken_s3.core.decision import (
    META_MD5,
    META_PART_SIZE,
    META_RCLONE_MD5,
    Evidence,
    RemoteObject,
    prove_stored,
    validated_checksum,
)
from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    IntegrityError,
    KrakenBackupError,
    S3ErrorKind,
    UnprovableObjectError,
    UploadVanishedError,
    should_abort_multipart,
)
from airflow_provider_kraken_s3.core.etag import etag_from_part_digests, normalize_etag
from airflow_provider_kraken_s3.core.parts import Part, PartPlan
from airflow_provider_kraken_s3.transfer import remote
from airflow_provider_kraken_s3.transfer.pool import run_until_first_failure
from airflow_provider_kraken_s3.transfer.progress import kv
from airflow_provider_kraken_s3.transfer.remote import RemotePart, version_of
from airflow_provider_kraken_s3.transfer.shipment import Sent, Shipment
from airflow_provider_kraken_s3.transfer.streams import (
    PartBody,
    SequentialMd5,
    UploadStopped,
    check_unchanged,
)


@dataclass
class SentPart:
    """One part in S3: its ETag (S3's: our MD5 of it where the encryption allows), its binary MD5, its
    CRC64NVME as read, and whether an earlier attempt sent it."""

    part: Part
    etag: str
    digest: bytes
    reused: bool
    crc: int = 0

    def completed_part(self, with_checksum: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"ETag": self.etag, "PartNumber": self.part.number}
        if with_checksum:
            entry["ChecksumCRC64NVME"] = full_object_crc64nvme([(self.crc, self.part.length)]).value
        return entry


def object_metadata(plan: PartPlan, expected_md5: str | None, expected_etag: str | None) -> dict[str, str]:
    """Hints for later readers, set where the object cannot complete unverified (multipart only: a single
    PUT's ETag already is its MD5).

    ``kraken-md5`` and rclone's ``md5chksum`` (base64) carry the inventory MD5, so ``rclone check`` can compare
    our objects without downloading them — only when that MD5 is computed from the bytes sent and checked
    before completion (no precomputed ETag; the same condition as the whole-file MD5 of
    :class:`MultipartSender`): a claim nobody checked could be false. ``kraken-part-size`` says how to
    recompute the ETag.
    """
    metadata = {META_PART_SIZE: str(plan.part_size)}
    if expected_md5 and expected_etag is None:  # the whole-file MD5 is computed and checked
        metadata[META_MD5] = expected_md5
        metadata[META_RCLONE_MD5] = base64.b64encode(bytes.fromhex(expected_md5)).decode()
    return metadata


class MultipartSender:
    """Send (or resume) one multipart upload and complete it only once it is proven."""

    def __init__(self, shipment: Shipment) -> None:
        self.job = shipment
        self.plan = shipment.plan
        self.upload_id: str | None = None
        self.version_id: str | None = None
        #: whether this upload was created with our full-object CRC64NVME (and so completes with it)
        self.declared = False
        #: the encryption S3's answers declared (creation, parts): a completion answer does not name SSE-C
        self.encryption = Encryption.NONE
        #: the object as S3 answered the completion (ETag, checksum, encryption), and what that showed
        self.completed: RemoteObject | None = None
        self.evidence: Evidence | None = None
        # The whole-file MD5 is paid for only when the inventory has no ETag to prove the parts against.
        whole = shipment.expected_md5 and not shipment.expected_etag
        self.whole = SequentialMd5(shipment.path, self.plan, cancel=shipment.cancel) if whole else None

    def run(self) -> Sent:
        """Send every part not yet proven in S3, prove them all, complete; what was sent and proven."""
        job = self.job
        self.upload_id, in_s3 = self._existing_parts()
        if self.upload_id is None:
            self.upload_id = self._create()
            self._record_new_id()
        elif job.on_upload_id is not None:
            job.on_upload_id(self.upload_id, self.plan.part_size)
        try:
            if self.whole is not None:
                self.whole.start()
            sent = self._send_parts(in_s3)
            check_unchanged(job.path, job.stat)
            etag = etag_from_part_digests([s.digest for s in sent], multipart=True)
            md5 = self.whole.hexdigest() if self.whole is not None else None
            self._prove(etag, md5)
            checksum = full_object_crc64nvme([(s.crc, s.part.length) for s in sent])
            job.log.info(
                "all %d parts proven, completing %s",
                len(sent),
                kv(
                    target=job.target, etag=etag, md5=md5 or job.expected_md5 or "-", crc64nvme=checksum.value
                ),
            )
            self._complete(sent, etag, checksum)
        except BaseException as error:
            if self.whole is not None:
                self.whole.stop()
            self._after_failure(error)
            raise
        if job.on_upload_id is not None:
            job.on_upload_id(None, self.plan.part_size)
        if self.whole is not None and self.whole.reread_bytes:
            job.log.info(
                "whole-file MD5 re-read %d bytes from the page cache (each proven)", self.whole.reread_bytes
            )
        fresh = tuple(s.part for s in sent if not s.reused)
        completed = self.completed
        return Sent(
            normalize_etag(completed.etag) if completed is not None and completed.etag else etag,
            md5,
            fresh,
            parts_reused=len(sent) - len(fresh),
            version_id=self.version_id,
            local_etag=etag,
            local_checksum=checksum,
            checksum=validated_checksum(completed, checksum) if completed is not None else None,
            encryption=completed.encryption if completed is not None else Encryption.NONE,
            proven=self.evidence is not None and self.evidence.proven is not None,
        )

    def _existing_parts(self) -> tuple[str | None, dict[int, RemotePart]]:
        """The upload to resume (id and its parts in S3), or ``(None, {})`` when there is none left."""
        job = self.job
        if job.upload_id is None:
            return None, {}
        parts = remote.list_parts(job.access, job.bucket, job.key, job.upload_id)
        if parts is None:
            job.log.warning(
                "upload id %s of %s no longer exists; starting a new upload", job.upload_id, job.target
            )
            return None, {}
        if parts.other_checksum:  # created before this provider declared CRC64NVME: cannot complete as ours
            self.upload_id = job.upload_id
            self._abort(
                f"it was created with checksum {parts.algorithm} ({parts.checksum_type}), not a full-object "
                f"{ALGORITHM}; starting a new upload"
            )
            self.upload_id = None
            return None, {}
        # S3 says how the upload was created where it can; otherwise it was made as this code makes them.
        self.declared = parts.algorithm == ALGORITHM if parts.algorithm else job.access.declares_checksums()
        job.log.info(
            "resuming multipart upload %s",
            kv(
                target=job.target,
                upload_id=job.upload_id,
                parts_in_s3=len(parts),
                part_size=self.plan.part_size,
            ),
        )
        return job.upload_id, parts

    def _record_new_id(self) -> None:
        """Persist a new upload id before any part is sent; if that fails, nobody could ever resume the
        upload, so it is aborted (it is ours and still empty) and the original error is raised."""
        if self.job.on_upload_id is None:
            return
        try:
            self.job.on_upload_id(self.upload_id, self.plan.part_size)
        except BaseException as error:
            self._abort(f"its id could not be recorded ({type(error).__name__}: {error})")
            raise

    def _create(self) -> str:
        job = self.job
        self.declared = job.access.declares_checksums()
        checksum: dict[str, Any] = (
            {"ChecksumAlgorithm": ALGORITHM, "ChecksumType": "FULL_OBJECT"} if self.declared else {}
        )
        response = job.access.call(
            "create_multipart_upload",
            f"starting the upload of {job.target}",
            Bucket=job.bucket,
            Key=job.key,
            Metadata=object_metadata(self.plan, job.expected_md5, job.expected_etag),
            **job.object_arguments(),
            **checksum,
        )
        self._saw(encryption_of(response))  # type: ignore[arg-type]
        upload_id = response["UploadId"]  # type: ignore[index]
        job.log.info("multipart upload started %s", kv(target=job.target, upload_id=upload_id))
        return upload_id

    def _saw(self, encryption: Encryption) -> None:
        """Remember the encryption an answer declared (the first that is not none)."""
        if encryption is not Encryption.NONE and self.encryption is Encryption.NONE:
            self.encryption = encryption

    def _prove(self, etag: str, md5: str | None) -> None:
        job = self.job
        if job.expected_etag is not None and etag != normalize_etag(job.expected_etag):
            raise IntegrityError(
                f"{job.path} was read with ETag {etag}, but {job.expected_etag} was expected: the local file "
                f"differs from the inventory. The upload was not completed; {job.target} is unchanged."
            )
        if job.expected_md5 is not None and md5 is not None and md5 != job.expected_md5:
            raise IntegrityError(
                f"{job.path} was read with MD5 {md5}, but the inventory says {job.expected_md5}: the local file "
                f"differs from the acquired one. The upload was not completed; {job.target} is unchanged."
            )

    def _complete(self, sent: list[SentPart], etag: str, checksum: Checksum) -> None:
        job = self.job
        # Declared at creation, and the store has not refused checksums since: S3 checks the whole file's.
        declare = self.declared and job.access.declares_checksums()
        whole: dict[str, Any] = (
            {
                "ChecksumCRC64NVME": checksum.value,
                "ChecksumType": "FULL_OBJECT",
                "MpuObjectSize": self.plan.file_size,
            }
            if declare
            else {}
        )
        response = job.access.call(
            "complete_multipart_upload",
            f"completing {job.target}",
            none_on={S3ErrorKind.NO_SUCH_UPLOAD},
            Bucket=job.bucket,
            Key=job.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": [s.completed_part(declare) for s in sent]},
            **whole,
        )
        if response is None:  # a retry of a completion whose first response was lost, or someone aborted it
            if self._completed_elsewhere(etag, checksum):
                job.log.warning(
                    "completing %s answered NoSuchUpload, but the object is there with ETag %s and %d bytes: "
                    "the first completion landed and its response was lost",
                    job.target,
                    etag,
                    self.plan.file_size,
                )
                return
            raise UploadVanishedError(
                f"multipart upload {self.upload_id} of {job.target} vanished before it was completed (aborted "
                "by a lifecycle rule or by hand); the next attempt starts a new upload."
            )
        self.version_id = version_of(response)
        returned = normalize_etag(response.get("ETag", ""))
        encryption = encryption_of(response)
        self.completed = RemoteObject(
            returned or etag,
            self.plan.file_size,
            checksum=checksum_of(response),
            encryption=encryption if encryption is not Encryption.NONE else self.encryption,
        )
        if self.completed.etag_is_md5_based and returned and returned != etag:
            # Before calling it corrupt: S3's answer to a completion does not say SSE-C; HEAD does.
            final = remote.head(job.access, job.bucket, job.key)
            if final is not None and not final.encryption.etag_is_md5:
                self.completed = replace(final, checksum=self.completed.checksum or final.checksum)
        self.evidence = prove_stored(self.completed, size=self.plan.file_size, etag=etag, checksum=checksum)
        if self.completed.etag_is_md5_based and returned and returned != etag:
            raise IntegrityError(
                f"S3 completed {job.target} with ETag {returned}, but the parts read locally give {etag}. "
                "The object is corrupt; re-run the backup."
            )
        if self.evidence.differs is not None:
            raise IntegrityError(
                f"S3 completed {job.target}, but {self.evidence.differs} (the parts read locally give "
                f"{checksum}). The object is corrupt; re-run the backup."
            )

    def _completed_elsewhere(self, etag: str, checksum: Checksum) -> bool:
        """After ``NoSuchUpload`` on completion: did our completion land (its response lost)?"""
        job = self.job
        final = remote.head(job.access, job.bucket, job.key)
        if final is None:
            return False
        self.version_id = final.version_id
        evidence = prove_stored(final, size=self.plan.file_size, etag=etag, checksum=checksum)
        if evidence.proven is not None:
            self.completed, self.evidence = final, evidence
        return evidence.proven is not None

    def _after_failure(self, error: BaseException) -> None:
        """Abort only what can never become a true object; keep everything else for a resume."""
        job = self.job
        if isinstance(error, UploadVanishedError) or should_abort_multipart(error):
            if not isinstance(error, UploadVanishedError):
                self._abort(str(error))
            if job.on_upload_id is not None:
                job.on_upload_id(None, self.plan.part_size)
            return
        job.log.warning(
            "upload of %s interrupted (%s: %s); multipart upload %s is kept so the next attempt resumes it",
            job.target,
            type(error).__name__,
            error,
            self.upload_id,
        )

    def _abort(self, reason: str) -> None:
        job = self.job
        try:
            job.access.call(
                "abort_multipart_upload",
                f"aborting upload {self.upload_id} of {job.target}",
                none_on={S3ErrorKind.NO_SUCH_UPLOAD, S3ErrorKind.NOT_FOUND},
                Bucket=job.bucket,
                Key=job.key,
                UploadId=self.upload_id,
            )
            job.log.warning("aborted multipart upload %s of %s: %s", self.upload_id, job.target, reason)
        except KrakenBackupError as error:  # never let cleanup hide the original error
            job.log.warning(
                "could not abort multipart upload %s of %s (%s); the bucket's lifecycle rule will remove it",
                self.upload_id,
                job.target,
                error,
            )

    def _send_parts(self, in_s3: dict[int, RemotePart]) -> list[SentPart]:
        """Hash and send (or re-check) every part on a bounded pool; stop all at the first failure.

        After a failed part the others are waited for, so that none lands after an abort. After an
        interruption (a timeout, a kill, a lost lease) the upload is kept for a resume, and a part stuck on
        the network must not hold the task past its deadline: they are not waited for.
        """
        stop = threading.Event()
        target = self.job.target
        return run_until_first_failure(
            [partial(self._send_part, part, in_s3.get(part.number), stop) for part in self.plan.parts()],
            workers=self.job.max_concurrency,
            name="kraken-part",
            stop=stop,
            cancel=self.job.cancel,
            interrupted=lambda: BackupInterrupted(f"upload of {target} stopped: the attempt was interrupted"),
            cause=_first_real_error,
            wait_after_interruption=False,
        )

    def _send_part(self, part: Part, in_s3: RemotePart | None, stop: threading.Event) -> SentPart:
        job = self.job
        body = PartBody(
            job.path,
            part,
            on_new_bytes=self.whole.offer if self.whole is not None else None,
            should_stop=lambda: stop.is_set() or job.cancel.is_set(),
        )
        try:
            if in_s3 is not None and in_s3.size == part.length:
                body.drain()  # the MD5 and the CRC of the local part, from one read
                kept = _proves_part(in_s3, body.hexdigest(), body.checksum())
                if kept:
                    job.reporter.add(part.length)
                    return SentPart(part, in_s3.etag, body.digest(), reused=True, crc=body.crc64nvme())
                job.log.info(
                    "part %d in S3 %s; sending it again",
                    part.number,
                    "differs from the local part"
                    if kept is False
                    else "cannot be proven (no checksum listed, and its ETag is not the part's MD5)",
                )
            body.seek(0)
            declare = self.declared and job.access.declares_checksums()
            checksum: dict[str, Any] = {"ChecksumAlgorithm": ALGORITHM} if declare else {}
            try:
                with job.transfer_slot():
                    response = job.access.call(
                        "upload_part",
                        f"sending part {part.number} of {job.target}",
                        Bucket=job.bucket,
                        Key=job.key,
                        UploadId=self.upload_id,
                        PartNumber=part.number,
                        Body=body,
                        ContentLength=part.length,
                        **checksum,
                    )
            except Exception:  # not only ours: awscrt (botocore's signer) wraps the body's failure in its own
                if stop.is_set() or isinstance(body.failure, UploadStopped):
                    raise UploadStopped("stopped") from None
                body.raise_failure()
                raise
            returned = normalize_etag(response["ETag"])  # type: ignore[index]
            self._saw(encryption_of(response))  # type: ignore[arg-type]
            stored = RemoteObject(
                returned,
                part.length,
                checksum=checksum_of(response),  # type: ignore[arg-type]
                encryption=self.encryption,
            )
            evidence = prove_stored(stored, size=part.length, etag=body.hexdigest(), checksum=body.checksum())
            if stored.etag_is_md5_based and returned != body.hexdigest():
                raise IntegrityError(
                    f"S3 acknowledged part {part.number} of {job.target} with ETag {returned}, but the bytes "
                    f"read have MD5 {body.hexdigest()}: corrupted in transit or the file changed."
                )
            if evidence.differs is not None:
                raise IntegrityError(
                    f"S3 acknowledged part {part.number} of {job.target}, but {evidence.differs} (the bytes read "
                    f"have {body.checksum()}): corrupted in transit or the file changed."
                )
            if evidence.proven is None and not declare:
                # An opaque part ETag and no checksum, nor one declared for the completion to check: never.
                raise UnprovableObjectError(
                    f"part {part.number} of {job.target} cannot be proven: {evidence.unprovable}. The upload is "
                    "aborted; back this file up to a bucket with SSE-S3, or a store that keeps checksums."
                )
            # Without proof here (SSE-KMS, no checksum echoed), the declared full-object CRC64NVME that S3
            # checks at completion, and reads back after it, proves the part with the rest.
            job.reporter.add(part.length)  # acknowledged by S3, and proven
            return SentPart(part, returned, body.digest(), reused=False, crc=body.crc64nvme())
        finally:
            body.close()


def _proves_part(in_s3: RemotePart, md5: str, ours: Checksum) -> bool | None:
    """Whether a part an earlier attempt left in S3 is the local part: by the CRC64NVME ListParts shows (S3
    checked it when the part arrived), else by its ETag, where that is the part's MD5. None: neither can
    prove it (an opaque ETag under SSE-KMS/SSE-C with no checksum listed); False: shown to differ."""
    if in_s3.checksum is not None:
        return in_s3.checksum.value == ours.value
    return True if in_s3.etag == md5 else None


def _first_real_error(errors: list[BaseException]) -> BaseException:
    """The error that stopped the parts, not the ``UploadStopped`` of the parts it stopped."""
    real = [e for e in errors if not isinstance(e, UploadStopped)]
    return real[0] if real else BackupInterrupted("the upload was stopped before every part was sent")
