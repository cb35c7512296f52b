"""The multipart half of a verified upload: parts in parallel, each proven as it returns, then completion.

Sends a :class:`~.shipment.Shipment` whose file is larger than one part. Every part streams from disk in 1 MiB blocks and is MD5-hashed on its first read; S3's ETag of the
part must equal that MD5. Before completing, the ETag of all part MD5s must equal the inventory's ETag and,
for ``[size, md5]`` inventories only, a whole-file MD5 (following the parts in the same read pass) must
equal the inventory's MD5. Only integrity and local-file failures abort the upload; anything else keeps it,
so the next attempt resumes.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from functools import partial
from typing import Any

from airflow_provider_kraken_s3.core.decision import META_MD5, META_PART_SIZE, META_RCLONE_MD5
from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    IntegrityError,
    KrakenBackupError,
    S3ErrorKind,
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
    """One part in S3: its ETag (= our MD5 of it), its binary MD5, and whether an earlier attempt sent it."""

    part: Part
    etag: str
    digest: bytes
    reused: bool
    crc32: str | None = None

    def completed_part(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"ETag": self.etag, "PartNumber": self.part.number}
        if self.crc32:
            entry["ChecksumCRC32"] = self.crc32
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
            job.log.info(
                "all %d parts proven, completing %s",
                len(sent),
                kv(target=job.target, etag=etag, md5=md5 or job.expected_md5 or "-"),
            )
            self._complete(sent, etag)
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
        return Sent(etag, md5, fresh, parts_reused=len(sent) - len(fresh), version_id=self.version_id)

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
        checksum: dict[str, Any] = {"ChecksumAlgorithm": "CRC32"} if job.access.crc32_parts else {}
        response = job.access.call(
            "create_multipart_upload",
            f"starting the upload of {job.target}",
            Bucket=job.bucket,
            Key=job.key,
            Metadata=object_metadata(self.plan, job.expected_md5, job.expected_etag),
            **job.object_arguments(),
            **checksum,
        )
        upload_id = response["UploadId"]  # type: ignore[index]
        job.log.info("multipart upload started %s", kv(target=job.target, upload_id=upload_id))
        return upload_id

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

    def _complete(self, sent: list[SentPart], etag: str) -> None:
        job = self.job
        response = job.access.call(
            "complete_multipart_upload",
            f"completing {job.target}",
            none_on={S3ErrorKind.NO_SUCH_UPLOAD},
            Bucket=job.bucket,
            Key=job.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": [s.completed_part() for s in sent]},
        )
        if response is None:  # a retry of a completion whose first response was lost, or someone aborted it
            if self._completed_elsewhere(etag):
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
        if returned and returned != etag:
            raise IntegrityError(
                f"S3 completed {job.target} with ETag {returned}, but the parts read locally give {etag}. "
                "The object is corrupt; re-run the backup."
            )

    def _completed_elsewhere(self, etag: str) -> bool:
        """After ``NoSuchUpload`` on completion: did our completion land (its response lost)?"""
        job = self.job
        final = remote.head(job.access, job.bucket, job.key)
        if final is not None:
            self.version_id = final.version_id
        return final is not None and normalize_etag(final.etag) == etag and final.size == self.plan.file_size

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
                body.drain()
                if in_s3.etag == body.hexdigest():
                    job.reporter.add(part.length)
                    return SentPart(part, in_s3.etag, body.digest(), reused=True, crc32=in_s3.crc32)
                job.log.info("part %d in S3 differs from the local part; sending it again", part.number)
            body.seek(0)
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
                    )
            except Exception:  # not only ours: awscrt (botocore's signer) wraps the body's failure in its own
                if stop.is_set() or isinstance(body.failure, UploadStopped):
                    raise UploadStopped("stopped") from None
                body.raise_failure()
                raise
            returned = normalize_etag(response["ETag"])  # type: ignore[index]
            if returned != body.hexdigest():
                raise IntegrityError(
                    f"S3 acknowledged part {part.number} of {job.target} with ETag {returned}, but the bytes "
                    f"read have MD5 {body.hexdigest()}: corrupted in transit or the file changed."
                )
            job.reporter.add(part.length)  # acknowledged by S3, and proven
            return SentPart(part, returned, body.digest(), reused=False, crc32=response.get("ChecksumCRC32"))  # type: ignore[union-attr]
        finally:
            body.close()


def _first_real_error(errors: list[BaseException]) -> BaseException:
    """The error that stopped the parts, not the ``UploadStopped`` of the parts it stopped."""
    real = [e for e in errors if not isinstance(e, UploadStopped)]
    return real[0] if real else BackupInterrupted("the upload was stopped before every part was sent")
