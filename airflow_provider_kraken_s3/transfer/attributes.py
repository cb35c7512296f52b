"""``GetObjectAttributes``: an object's stored checksum, size, ETag and part layout in one request.

What a listing cannot say (a listing carries no checksum values) and HEAD says only in part (HEAD gives no part
sizes or part checksums): the audit of a set reads each object's stored checksum here, and deep verify and
restore read the part layout of a ``COMPOSITE`` CRC32/CRC32C object written by another tool, and so does an
upload deciding whether such an object already holds the file. Needs ``s3:GetObjectAttributes`` (and
``s3:GetObject``). Stores that lack the call (Ceph RGW 16) keep no checksums either: callers ask only when
there is a checksum to read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from airflow_provider_kraken_s3.core.checksum import Checksum, checksum_of
from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.errors import S3ErrorKind
from airflow_provider_kraken_s3.core.etag import normalize_etag
from airflow_provider_kraken_s3.core.proof import checksums_agree
from airflow_provider_kraken_s3.transfer import remote
from airflow_provider_kraken_s3.transfer.access import S3Access

#: What is asked for: everything a proof by checksum needs.
ATTRIBUTES = ["ETag", "Checksum", "ObjectParts", "ObjectSize"]

#: Parts per page (S3's maximum).
MAX_PARTS = 1000


@dataclass(frozen=True)
class ObjectAttributes:
    """An object's attributes; ``part_sizes``/``part_checksums`` are empty where the store does not list
    its parts (moto 5.2 never does; S3 lists them for objects uploaded with checksums)."""

    etag: str
    size: int
    checksum: Checksum | None
    parts_count: int | None = None
    part_sizes: tuple[int, ...] = ()
    part_checksums: tuple[str, ...] = ()
    version_id: str | None = None


def object_attributes(
    access: S3Access, bucket: str, key: str, version_id: str | None = None
) -> ObjectAttributes | None:
    """The attributes of ``s3://bucket/key`` (that version of it), or None when there is no such object."""
    where = f"s3://{bucket}/{key}" + (f" (version {version_id})" if version_id else "")
    params: dict[str, object] = {"Bucket": bucket, "Key": key, "ObjectAttributes": ATTRIBUTES}
    if version_id:
        params["VersionId"] = version_id
    sizes: list[int] = []
    crcs: list[str] = []
    first: dict[str, object] | None = None
    while True:
        response = access.call(
            "get_object_attributes",
            f"reading the attributes of {where}",
            none_on={S3ErrorKind.NOT_FOUND},
            MaxParts=MAX_PARTS,
            **params,
        )
        if response is None:
            return None
        first = first or response
        parts = response.get("ObjectParts") or {}
        for part in parts.get("Parts") or []:
            sizes.append(int(part.get("Size") or 0))
            value = next((str(v) for k, v in part.items() if k.startswith("Checksum") and v), None)
            if value is not None:
                crcs.append(value)
        if not parts.get("IsTruncated") or not parts.get("NextPartNumberMarker"):
            break
        params["PartNumberMarker"] = parts["NextPartNumberMarker"]
    object_parts = first.get("ObjectParts") or {}
    assert isinstance(object_parts, dict)
    count = object_parts.get("TotalPartsCount") or object_parts.get("PartsCount")
    stored = first.get("Checksum")
    version = first.get("VersionId")
    return ObjectAttributes(
        etag=normalize_etag(str(first.get("ETag") or "")),
        size=int(str(first.get("ObjectSize") or 0)),
        checksum=checksum_of(stored) if isinstance(stored, dict) else None,
        parts_count=int(str(count)) if count else None,
        part_sizes=tuple(sizes),
        part_checksums=tuple(crcs) if len(crcs) == len(sizes) else (),
        version_id=str(version) if version and version != "null" else None,
    )


def head_as_recorded(
    access: S3Access, bucket: str, key: str, recorded: Checksum | None
) -> RemoteObject | None:
    """HEAD (``ChecksumMode=ENABLED``), to compare with a record naming ``recorded``: where HEAD's checksum is
    of the same algorithm but cannot be compared with it (HEAD may not say a checksum is composite: moto
    drops its type and ``-N``), the checksum ``GetObjectAttributes`` names instead, beside HEAD's encryption.
    What the sensor, the audit and the re-run of a DONE record compare a record with."""
    found = remote.head(access, bucket, key)
    stored = found.checksum if found is not None else None
    if found is None or recorded is None or stored is None or stored.algorithm != recorded.algorithm:
        return found
    if checksums_agree(recorded, stored) is not None:
        return found
    attributes = object_attributes(access, bucket, key, found.version_id)
    if attributes is None or attributes.checksum is None:
        return found
    return replace(found, checksum=attributes.checksum)
