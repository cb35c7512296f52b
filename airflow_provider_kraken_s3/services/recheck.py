"""Is a DONE record's backup still proven where the record says it is? The re-run of a verified DONE. No Airflow.

A backup task may run again for a raw file that is already DONE (a cleared task, a re-triggered DAG, settings
that changed since). Its first question is not "what would I upload now?" but "does S3 still prove what the
record vouches for, at the bucket and keys the record names?" — read from the record
(:func:`~..core.manifest.recorded_backup`), never from today's settings or ``project_id``. If it does, the
record stands: nothing is moved, nothing downgraded, and a record without a manifest (alphakraken's own
uploader, an older version of this provider) gets one. If it does not, the caller backs up again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_provider_kraken_s3.core.decision import Expectation, prove, stored_checksum
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.layout import listing_folder
from airflow_provider_kraken_s3.core.manifest import (
    Manifest,
    ManifestObject,
    Proof,
    Source,
    proven_part_size,
    recorded_backup,
)
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.attributes import head_as_recorded
from airflow_provider_kraken_s3.transfer.listing import list_prefix


@dataclass(frozen=True)
class Recheck:
    """The outcome: the manifest S3 still proves (``unchanged`` when it is the stored one), or why not."""

    manifest: Manifest | None
    reason: str = ""
    unchanged: bool = False


def recheck(
    access: S3Access,
    raw_file_id: str,
    document: Mapping[str, Any],
    *,
    planned: Mapping[str, Any],
    part_size: int,
    attempt: str,
) -> Recheck:
    """Prove every object a DONE record vouches for (one listing for a set, a HEAD for one object).

    ``planned`` is ``file_info`` as stored now: a backup that no longer covers it is not kept. S3 errors
    propagate (a failure to look decides nothing; the caller keeps the record as it is).
    """
    try:
        recorded = recorded_backup(raw_file_id, document)
    except InvalidInputError as error:
        return Recheck(None, f"its record cannot be read ({error})")
    gaps = recorded.coverage_problems(planned) + [
        f"no ETag recorded for {item.path}" for item in recorded.objects if item.etag is None
    ]
    if gaps:
        return Recheck(None, f"its backup does not cover file_info: {'; '.join(gaps)}")
    folder = listing_folder(item.key for item in recorded.objects)
    listed = list_prefix(access, recorded.bucket, folder) if folder else None
    entries = []
    for item in recorded.objects:
        # An object recorded under SSE-KMS/SSE-C is proven by its checksum, which only HEAD shows.
        by_listing = listed is not None and item.encryption.etag_is_md5
        found = (
            listed.get(item.key)
            if listed is not None and by_listing
            else head_as_recorded(access, recorded.bucket, item.key, item.checksum)
        )
        wanted = Expectation(
            size=item.size, md5=item.md5, etag=item.etag, part_size=item.part_size, checksum=item.checksum
        )
        if found is None or prove(found, wanted) is None:
            what = "missing" if found is None else f"ETag {found.etag}, {found.size} bytes"
            return Recheck(None, f"s3://{recorded.bucket}/{item.key} is {what}")
        entries.append(
            ManifestObject(
                path=item.path,
                key=item.key,
                size=item.size,
                md5=item.md5,
                etag=found.etag,
                part_size=item.part_size or proven_part_size(found.etag, item.size, None, part_size),
                version_id=found.version_id,
                proof=Proof.LISTING if by_listing else Proof.HEAD,
                checksum=stored_checksum(found, item.checksum),
                encryption=found.encryption if not by_listing else item.encryption,
            )
        )
    if recorded.source is Source.MANIFEST:
        return Recheck(recorded, unchanged=True)
    manifest = Manifest(
        bucket=recorded.bucket,
        prefix=recorded.prefix,
        objects=tuple(entries),
        proven_at=datetime.now(timezone.utc),
        attempt=attempt,
    )
    return Recheck(manifest)
