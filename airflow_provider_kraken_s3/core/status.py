"""The values of ``RawFile.backup_status``: alphakraken's strings, defined once.

Pure module (no mongoengine): :mod:`.verdict` reasons about these values, and
:mod:`airflow_provider_kraken_s3.records.models` imports them for the stored field.
"""

from __future__ import annotations

from typing import ClassVar


class BackupStatus:
    """Values of ``RawFile.backup_status``.

    The local-copy values are alphakraken's (its ``BackupStatus`` in ``shared/db/models.py``); the S3
    values are the ones alphakraken uses for uploads, so its web app shows our progress without changes.
    """

    # Copy to the local backup location (written by alphakraken, or by this provider's local-copy path).
    COPYING_IN_PROGRESS = "copying_in_progress"
    COPYING_DONE = "copying_done"
    COPYING_FAILED = "copying_failed"

    # Upload to S3 (written by this provider).
    IN_PROGRESS = "upload_in_progress"
    DONE = "upload_done"
    FAILED = "upload_failed"

    # alphakraken: backup intentionally not done for this file.
    SKIPPED = "skipped"

    # alphakraken's names for the S3 values, so code ported from alphakraken reads naturally.
    UPLOAD_IN_PROGRESS = IN_PROGRESS
    UPLOAD_DONE = DONE
    UPLOAD_FAILED = FAILED

    #: Every value the field may hold; used to reject typos before they reach the database.
    ALL: ClassVar[frozenset[str]] = frozenset(
        {
            COPYING_IN_PROGRESS,
            COPYING_DONE,
            COPYING_FAILED,
            IN_PROGRESS,
            DONE,
            FAILED,
            SKIPPED,
        }
    )
