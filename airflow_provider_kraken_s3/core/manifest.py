"""The manifest: what a RawFile's backup record vouches for, object by object. Pure module.

A ``upload_done`` record is a promise that some objects hold the instrument's bytes. Before the manifest, every
reader rebuilt that promise from fields that can change after the fact (``project_id``, ``created_at``, the
operator's ``bucket_prefix``, ``file_info``), so a reassigned project or a new prefix silently pointed the
sensor, audit, deep verify and restore at other objects. The manifest is written once, in the same
conditional update that records DONE, and names exactly what was proven:

- per file: its inventory path, size and MD5 (which inventory entry it covers), the bucket and key, **S3's own
  ETag** (what S3 answered, never the inventory's precomputed value), the part size that ETag implies, the
  ``VersionId`` where the bucket keeps versions, and how it was proven (uploaded now, HEAD, listing, hashed);
- when, and by which attempt.

Readers call :func:`recorded_backup`: the manifest when there is one; for records made before it existed (by
alphakraken's own uploader, or by an older version of this provider) the objects are read, as alphakraken's
file remover reads them, from ``s3_upload_path`` and ``file_info[path][2]`` — never from ``project_id`` or
``created_at`` unless the record holds nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow_provider_kraken_s3.core.checksum import Checksum, Encryption
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.etag import (
    PrecomputedEtag,
    etag_part_count,
    etags_equal,
    normalize_etag,
    parse_precomputed_etag,
)
from airflow_provider_kraken_s3.core.inventory import backup_objects
from airflow_provider_kraken_s3.core.layout import backup_key, key_prefix, set_etag, upload_path

#: The RawFile field holding the manifest (a sub-document; its objects are a list, since paths contain dots).
MANIFEST_FIELD = "s3_manifest"

#: Version of the stored shape, so a later change can read older manifests.
MANIFEST_VERSION = 1

#: Deep-verify outcomes that are evidence *against* a backup: once recorded, no HEAD may prove it again.
DISTRUSTING_OUTCOMES = frozenset({"differs", "missing"})


class Proof(str, enum.Enum):
    """How an object was proven when the manifest was written."""

    UPLOADED = "uploaded"  # sent by this attempt: part ETags, object ETag and the inventory, all checked
    HEAD = "head"  # already there: HEAD's ETag and size equal the inventory's (the proof rule)
    LISTING = "listing"  # already there: the set's listing showed ETag and size equal the inventory's
    HASHED = "hashed"  # already there: the local file hashed at the object's part size gave S3's ETag
    DERIVED = "derived"  # no manifest: read from alphakraken's fields (``s3_upload_path``, ``file_info``)


class Source(str, enum.Enum):
    """Where a reader found the backup's objects."""

    MANIFEST = "manifest"
    UPLOAD_PATH = "s3_upload_path"  # alphakraken's field, with ``file_info[path][2]``
    LAYOUT = "layout"  # only ``s3_bucket``: the key layout re-derived (oldest records)


@dataclass(frozen=True)
class ManifestObject:
    """One object a record vouches for.

    ``etag`` is what S3 answered for the object (None only for a record without one: it cannot be verified);
    ``part_size`` the part size of that ETag (None for a plain MD5, a single PUT); ``size`` and ``md5`` the
    inventory entry the object was proven to hold.
    """

    path: str
    key: str
    size: int
    md5: str
    etag: str | None
    part_size: int | None = None
    version_id: str | None = None
    proof: Proof = Proof.DERIVED
    #: S3's checksum of the object, where the store keeps one: our full-object CRC64NVME (validated by S3
    #: against ours), or the CRC32/CRC32C (maybe composite) another tool's upload left, which a skip proved:
    #: the proof that survives SSE-KMS and SSE-C, and lets an audit prove the object without downloading it
    checksum: Checksum | None = None
    #: the encryption S3 declared for the object; under SSE-KMS/SSE-C its ETag proves nothing, so a reader
    #: must HEAD it for the checksum (a listing shows neither encryption nor checksum)
    encryption: Encryption = Encryption.NONE

    def as_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "path": self.path,
            "key": self.key,
            "size": self.size,
            "md5": self.md5,
            "etag": self.etag,
            "part_size": self.part_size,
            "proof": self.proof.value,
        }
        if self.version_id:
            document["version_id"] = self.version_id
        if self.checksum is not None:
            document["checksum_algorithm"] = self.checksum.algorithm
            document["checksum"] = self.checksum.value
            document["checksum_full_object"] = self.checksum.full_object
        if self.encryption is not Encryption.NONE:
            document["encryption"] = self.encryption.value
        return document

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> ManifestObject:
        try:
            return cls(
                path=str(document["path"]),
                key=str(document["key"]),
                size=int(document["size"]),
                md5=str(document["md5"]),
                etag=normalize_etag(str(document["etag"])) if document.get("etag") else None,
                part_size=int(document["part_size"]) if document.get("part_size") else None,
                version_id=str(document["version_id"]) if document.get("version_id") else None,
                proof=Proof(document.get("proof") or Proof.DERIVED.value),
                checksum=Checksum(
                    str(document["checksum_algorithm"]),
                    str(document["checksum"]),
                    full_object=bool(document.get("checksum_full_object", True)),
                )
                if document.get("checksum")
                else None,
                encryption=Encryption(document.get("encryption") or Encryption.NONE.value),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(f"manifest entry {dict(document)!r} cannot be read ({error})") from error


@dataclass(frozen=True)
class Manifest:
    """Everything a record vouches for: one bucket, the key prefix, and the objects (sorted by key)."""

    bucket: str
    prefix: str
    objects: tuple[ManifestObject, ...]
    proven_at: datetime | None = None
    attempt: str | None = None
    source: Source = Source.MANIFEST

    @property
    def upload_path(self) -> str:
        """alphakraken's ``s3_upload_path`` for these objects."""
        return upload_path(self.bucket, self.prefix)

    def backup_key(self, raw_file_id: str) -> str:
        """``s3_backup_key``: the object's key for a lone file, else the folder the set shares."""
        return backup_key(raw_file_id, {item.path: item.key for item in self.objects}, prefix=self.prefix)

    def s3_etag(self, raw_file_id: str) -> str:
        """``s3_etag``: the object's ETag for a lone file, else :func:`~.layout.set_etag` of the set."""
        if self.backup_key(raw_file_id).endswith("/"):
            return set_etag({item.key: item.etag or "" for item in self.objects})
        return self.objects[0].etag or ""

    def as_document(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "objects": [item.as_document() for item in self.objects],
            "proven_at": self.proven_at,
            "attempt": self.attempt,
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Manifest:
        if not isinstance(document, Mapping) or not document.get("bucket") or not document.get("objects"):
            raise InvalidInputError(f"the recorded manifest names no bucket or no objects: {document!r}")
        return cls(
            bucket=str(document["bucket"]),
            prefix=str(document.get("prefix") or ""),
            objects=tuple(
                sorted(
                    (ManifestObject.from_document(item) for item in document["objects"]),
                    key=lambda item: item.key,
                )
            ),
            proven_at=document.get("proven_at"),
            attempt=document.get("attempt"),
        )

    def by_path(self) -> dict[str, ManifestObject]:
        return {item.path: item for item in self.objects}

    def coverage_problems(self, file_info: Mapping[str, Sequence[Any]] | None) -> list[str]:
        """How the inventory now differs from what the manifest vouches for ([] when it covers it exactly).

        A file added after DONE is not backed up; an entry whose size or MD5 changed was re-inventoried;
        either way the record no longer vouches for the inventory, and deleting by it would lose data.
        """
        if self.source is not Source.MANIFEST:
            return []  # derived from file_info itself: covers it by construction
        current = file_info or {}
        vouched = self.by_path()
        problems = [
            f"{path} is in file_info but not in the backup" for path in sorted(set(current) - set(vouched))
        ]
        for path, item in sorted(vouched.items()):
            entry = current.get(path)
            if entry is None:
                problems.append(f"{path} is in the backup but no longer in file_info")
            elif len(entry) < 2 or entry[0] != item.size or str(entry[1]).strip().lower() != item.md5:
                problems.append(
                    f"file_info[{path!r}] is now {list(entry)!r}, the backup holds [{item.size}, {item.md5!r}]"
                )
        return problems


def distrusted(fields: Mapping[str, Any]) -> bool:
    """Whether the record holds evidence against its backup (a deep verify found it different or missing).

    Such a record may become DONE again only through a new verified upload or a deep verify that passes:
    a HEAD showing the expected ETag proves nothing about bytes that rotted behind an unchanged ETag.
    """
    return fields.get("s3_verify_outcome") in DISTRUSTING_OUTCOMES


def recorded_backup(raw_file_id: str, fields: Mapping[str, Any]) -> Manifest:
    """The objects a record vouches for, from its manifest or (older records) from alphakraken's fields.

    ``fields`` is the stored document (or a snapshot with the same names). Raises
    :class:`~.errors.InvalidInputError` saying why when the record names no backup at all.
    """
    stored = fields.get(MANIFEST_FIELD)
    if stored:
        return Manifest.from_document(stored)
    file_info = fields.get("file_info")
    if fields.get("s3_upload_path"):
        bucket, prefix = parse_upload_path(str(fields["s3_upload_path"]))
        return _derived(raw_file_id, bucket, prefix, file_info, Source.UPLOAD_PATH)
    if fields.get("s3_bucket"):
        prefix = key_prefix(
            raw_file_id,
            project_id=fields.get("project_id"),
            instrument_id=fields.get("instrument_id"),
            created_at=fields.get("created_at"),
        )
        return _derived(raw_file_id, str(fields["s3_bucket"]), prefix, file_info, Source.LAYOUT)
    raise InvalidInputError(
        f"raw file {raw_file_id!r} records no backup (no s3_manifest, s3_upload_path or s3_bucket): it was never "
        "backed up to S3"
    )


def parse_upload_path(value: str) -> tuple[str, str]:
    """``s3://bucket`` or ``s3://bucket/prefix/`` → (bucket, prefix), as alphakraken's remover reads it."""
    if not value.startswith("s3://") or not value[len("s3://") :].split("/", 1)[0]:
        raise InvalidInputError(f"s3_upload_path {value!r} is not of the form s3://bucket[/prefix/]")
    bucket, _, prefix = value[len("s3://") :].partition("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return bucket, prefix


def _derived(raw_file_id: str, bucket: str, prefix: str, file_info: Any, source: Source) -> Manifest:
    """A manifest read from ``file_info`` (its third elements are the ETags) under ``prefix`` in ``bucket``."""
    objects = []
    for item in backup_objects(raw_file_id, file_info, prefix=prefix):
        etag = item.precomputed.etag if item.precomputed else None
        part_size = item.precomputed.part_size if item.precomputed and etag_part_count(etag or "") else None
        objects.append(
            ManifestObject(
                path=item.path, key=item.key, size=item.size, md5=item.md5, etag=etag, part_size=part_size
            )
        )
    return Manifest(bucket=bucket, prefix=prefix, objects=tuple(objects), source=source)


def proven_part_size(etag: str, size: int, precomputed: PrecomputedEtag | None, part_size: int) -> int:
    """The part size that reproduces an object's ETag proven by HEAD or a listing: the inventory's, when the
    ETag is the inventory's precomputed one; else (a plain MD5 or a one-part ``…-1``) any size holding the
    whole file: the planned ``part_size``, raised to the file's size in whole MiB."""
    if precomputed is not None and etags_equal(etag, precomputed.etag):
        return precomputed.part_size
    mib = 1024 * 1024
    return max(part_size, -(-size // mib) * mib)


def etag_info(item: ManifestObject) -> str | None:
    """alphakraken's ``"<etag>__<MiB>"`` for an object (None without an ETag). A plain-MD5 ETag (one PUT)
    carries the smallest whole MiB at least the file's size, as their remover only compares the ETag part."""
    if item.etag is None:
        return None
    mib = 1024 * 1024
    part_size = item.part_size or max(mib, -(-item.size // mib) * mib)
    value = f"{item.etag}__{part_size // mib}"
    parse_precomputed_etag(value)  # refuse what alphakraken could not read back
    return value
