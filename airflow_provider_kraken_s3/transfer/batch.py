"""The files of a set (a Bruker ``.d`` folder, a Sciex ``.wiff`` set) uploaded concurrently, all or nothing.

Small files cost a round trip each, not bandwidth; one after another, a folder of a thousand takes minutes.
Files run side by side, and files and parts draw from one budget of requests in flight (each job's
``budget``), so memory stays bounded whatever the mix. The first failure stops the others; the set's final
state is then proven with one listing instead of a HEAD per file.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from airflow_provider_kraken_s3.core.errors import BackupInterrupted, IntegrityError
from airflow_provider_kraken_s3.core.etag import normalize_etag
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.listing import list_prefix
from airflow_provider_kraken_s3.transfer.pool import run_until_first_failure
from airflow_provider_kraken_s3.transfer.streams import UploadStopped
from airflow_provider_kraken_s3.transfer.upload import UploadResult, VerifiedUpload


def run_all(
    jobs: Sequence[VerifiedUpload], *, concurrency: int, cancel: threading.Event
) -> list[UploadResult]:
    """Run every job, ``concurrency`` files at a time; the first failure stops the rest and is raised.

    However it ends — a failure, ``cancel``, or an exception from outside (Airflow's timeout is raised in this
    thread) — no file thread outlives it: the others are cancelled and waited for, so the failure recorded
    next is the last word (each stops at its next block; its multipart upload is kept for a resume).
    """
    if len(jobs) <= 1:
        return [job.run() for job in jobs]
    return run_until_first_failure(
        [job.run for job in jobs],
        workers=concurrency,
        name="kraken-file",
        stop=cancel,  # the files watch it: the first failure stops them, their uploads are kept
        cancel=cancel,
        interrupted=lambda: BackupInterrupted("the upload of the set was stopped before every file was sent"),
        cause=_first_cause,
        wait_after_interruption=True,
    )


def verify_listed(access: S3Access, bucket: str, prefix: str, results: Sequence[UploadResult]) -> None:
    """After the uploads: one listing must show every uploaded object with its proven ETag and size."""
    listed = list_prefix(access, bucket, prefix)
    wrong = []
    for result in results:
        found = listed.get(result.key)
        if found is None or normalize_etag(found.etag) != result.etag or found.size != result.size:
            what = "nothing" if found is None else f"ETag {found.etag}, {found.size} bytes"
            wrong.append(f"{result.key}: {what} (uploaded ETag {result.etag}, {result.size} bytes)")
    if wrong:
        raise IntegrityError(
            f"after the upload, s3://{bucket}/{prefix} lists other objects than were proven: {'; '.join(wrong)}. "
            "Something replaced them concurrently; re-run the backup."
        )


def _first_cause(errors: list[BaseException]) -> BaseException:
    """The error that stopped the set, not the interruptions it caused in the other files."""
    causes = [e for e in errors if not isinstance(e, (BackupInterrupted, UploadStopped))]
    return (causes or errors)[0]
