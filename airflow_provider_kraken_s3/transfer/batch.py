"""The files of a set (a Bruker ``.d`` folder, a Sciex ``.wiff`` set) uploaded concurrently, all or nothing.

Small files cost a round trip each, not bandwidth; one after another, a folder of a thousand takes minutes.
Files run side by side, and files and parts draw from one budget of requests in flight (each job's
``budget``), so memory stays bounded whatever the mix. The first failure stops the others; the set's final
state is then proven with one listing instead of a HEAD per file.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait

from airflow_provider_kraken_s3.core.errors import BackupInterrupted, IntegrityError
from airflow_provider_kraken_s3.core.etag import normalize_etag
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.listing import list_prefix
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
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="kraken-file")
    futures: list[Future[UploadResult]] = [pool.submit(job.run) for job in jobs]
    settled = False  # every job finished or one failed; otherwise something from outside ends the wait
    try:
        while True:
            done, pending = wait(futures, timeout=1.0, return_when=FIRST_EXCEPTION)
            failed = [f for f in done if not f.cancelled() and f.exception() is not None]
            if failed:
                settled = True
                cancel.set()  # stop the other files at their next block; their uploads are kept
                raise _first_cause(failed)
            if not pending:
                settled = True
                return [future.result() for future in futures]
            if cancel.is_set():
                raise BackupInterrupted("the upload of the set was stopped before every file was sent")
    finally:
        if not settled:
            cancel.set()  # interrupted from outside: stop every file at its next block
        pool.shutdown(wait=True, cancel_futures=True)


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


def _first_cause(failed: list[Future[UploadResult]]) -> BaseException:
    """The error that stopped the set, not the interruptions it caused in the other files."""
    errors = [f.exception() for f in failed]
    causes = [e for e in errors if e is not None and not isinstance(e, (BackupInterrupted, UploadStopped))]
    return (causes or errors)[0]  # type: ignore[return-value]
