"""mongoengine view of alphakraken's ``RawFile`` documents, as far as the S3 backup needs it.

alphakraken owns the ``raw_file`` collection; this provider only reads a few fields and writes the
``backup_status`` / ``s3_*`` / ``file_info`` fields. The class here is therefore deliberately partial:

- ``strict: False`` lets documents carry fields this model does not declare (alphakraken adds fields over
  time). They are ignored on load and, because :mod:`airflow_provider_kraken_s3.records.store` only ever sends
  atomic ``$set`` updates, they survive every write we make.
- ``db_alias`` is our own mongoengine alias, so DAG code that uses mongoengine's ``default`` alias (for
  example alphakraken's own models) is never reconnected or redirected by this provider.
- Never call ``save()`` on a loaded :class:`RawFile`: mongoengine's change tracking would turn a change of
  ``file_info["x.raw"]`` into a ``$set`` on the path ``file_info.x.raw``, which MongoDB reads as nested
  keys ``x`` → ``raw``. Dict fields whose keys contain dots must be written whole; the store does that.
"""

from __future__ import annotations

from typing import Any, ClassVar

from mongoengine import DateTimeField, DictField, Document, IntField, ListField, StringField

# Defined in core (pure), where the verification reasons about it; the records and their users import it here too.
from airflow_provider_kraken_s3.core.status import BackupStatus as BackupStatus

#: mongoengine alias of the connection our documents use (set up by ``KrakenMongoHook.connect()``).
#: Kept apart from ``default`` so other DAG code using mongoengine keeps its own connection.
KRAKEN_DB_ALIAS = "kraken_s3"

#: Name of alphakraken's collection of raw files.
RAW_FILE_COLLECTION = "raw_file"


class RawFile(Document):
    """One acquired mass-spectrometry raw file (a ``.raw`` file, or a ``.d``/``.wiff`` bundle of files).

    ``file_info`` maps each file's path relative to ``backup_base_path`` to ``[size, md5]``, or, once it is
    in S3, ``[size, md5, "<etag>__<part size in MiB>"]``; the third element lets a later check recompute the
    multipart ETag without downloading the object. Keys contain dots (``x.raw``, ``x.d/analysis.tdf``);
    MongoDB ≥ 3.6 accepts that in stored documents, and mongoengine's ``DictField`` only rejects keys that
    start with ``$``, so a plain ``DictField`` is used and the store writes it whole.
    """

    meta: ClassVar[dict[str, Any]] = {
        "collection": RAW_FILE_COLLECTION,
        "strict": False,
        "db_alias": KRAKEN_DB_ALIAS,
        # The collection (and its indexes) belong to alphakraken; never create indexes from here, which
        # would also need more database rights than reading and updating documents.
        "auto_create_index": False,
    }

    # Raw-file name (alphakraken may prefix it to resolve name collisions); stored as ``_id``.
    id = StringField(primary_key=True)

    project_id = StringField()
    instrument_id = StringField()
    # Directory on the backup pool that ``file_info`` paths are relative to.
    backup_base_path = StringField()
    size = IntField()  # bytes; alphakraken uses -1 for "unknown"
    created_at = DateTimeField()
    file_info = DictField()
    backup_status = StringField()
    updated_at_ = DateTimeField()  # UTC; alphakraken's, moved by every write (theirs and ours)

    # Written by this provider.
    s3_bucket = StringField()
    s3_backup_key = StringField(max_length=1024)  # S3 limits object keys to 1024 bytes
    s3_etag = StringField(max_length=128)
    # alphakraken's own field: "s3://bucket" or "s3://bucket/prefix/"; file_info paths are relative to it.
    s3_upload_path = StringField(max_length=1024)
    # Human-readable outcome of the last attempt (or its error), for the people watching alphakraken.
    s3_backup_details = StringField()
    s3_backup_updated_at = DateTimeField()  # UTC
    # Multipart uploads in progress, one entry per file: {path, key, upload_id, part_size, expect}. A retry
    # resumes an entry only when its part size and expectation (ETag or MD5) are the ones it plans now.
    # A list, not a dict keyed by path: paths contain dots, and list entries can be added and removed one at
    # a time ($push/$pull) without rewriting the others.
    s3_uploads = ListField(DictField())
    # The attempt that owns the backup right now, and until when (renewed while it works). Every write of an
    # attempt is conditional on still owning it, so a stale attempt can never overwrite a newer outcome.
    s3_lease_owner = StringField()
    s3_lease_expires_at = DateTimeField()  # UTC
    # Deep verification (download and hash, :mod:`..records.deep_verify`): when it last reached an outcome, and
    # which (``ok``, ``differs``, ``missing``, ``needs_restore``). Sampling verifies the oldest first.
    s3_verified_at = DateTimeField()  # UTC
    s3_verify_outcome = StringField()
    # What a DONE record vouches for, written in the same update as DONE (:mod:`..core.manifest`): bucket,
    # prefix, and per file its path, key, size, MD5, S3's ETag, part size, VersionId and how it was proven.
    s3_manifest = DictField()

    def __repr__(self) -> str:
        """Short form for logs: the id and where the backup stands."""
        return f"<RawFile {self.id!r} backup_status={self.backup_status!r}>"
