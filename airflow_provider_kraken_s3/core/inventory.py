"""A raw file's inventory (``file_info``) read as the list of objects its backup consists of.

The operator uploads exactly these objects and the sensor verifies exactly these: one piece of code decides
the layout for both, so they can never disagree about what a complete backup is. Pure module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_kraken_s3.core.checksum import Checksum
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.etag import PrecomputedEtag, parse_precomputed_etag
from airflow_provider_kraken_s3.core.layout import object_keys

_MD5_HEX = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class BackupObject:
    """One file of a raw file and the S3 object it is backed up to."""

    path: str
    key: str
    size: int
    md5: str
    precomputed: PrecomputedEtag | None
    #: the version a record vouches for (read from its manifest), where the bucket keeps versions
    version_id: str | None = None
    #: the checksum a record vouches for (its manifest's: S3's answer at upload), where there is one
    checksum: Checksum | None = None


def backup_objects(
    raw_file_id: str, file_info: Mapping[str, Sequence[Any]] | None, *, prefix: str = ""
) -> list[BackupObject]:
    """Objects of a raw file's backup, sorted by key; refuses empty, unsafe or malformed inventories.

    ``prefix`` is :func:`~airflow_provider_kraken_s3.core.layout.key_prefix` of the raw file.
    """
    if not file_info:
        raise InvalidInputError(
            f"raw file {raw_file_id!r} has an empty file_info: nothing to back up. Run the checksum step "
            "(it inventories the files) before the upload."
        )
    keys = object_keys(raw_file_id, list(file_info), prefix=prefix)
    objects = [_parse_entry(raw_file_id, path, file_info[path], keys[path]) for path in file_info]
    return sorted(objects, key=lambda item: item.key)


def _parse_entry(raw_file_id: str, path: str, entry: Sequence[Any], key: str) -> BackupObject:
    where = f"file_info[{path!r}] of raw file {raw_file_id!r}"
    if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
        raise InvalidInputError(f"{where} is {entry!r}; expected [size, md5] or [size, md5, '<etag>__<MiB>']")
    size, md5 = entry[0], entry[1]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidInputError(f"{where} has size {size!r}; expected a non-negative number of bytes")
    if not isinstance(md5, str) or not _MD5_HEX.fullmatch(md5.strip().lower()):
        raise InvalidInputError(f"{where} has md5 {md5!r}; expected 32 hex digits")
    precomputed = None
    if len(entry) == 3 and entry[2]:
        try:
            precomputed = parse_precomputed_etag(entry[2])
        except InvalidInputError as error:
            raise InvalidInputError(f"{where}: {error}") from error
    return BackupObject(path=path, key=key, size=size, md5=md5.strip().lower(), precomputed=precomputed)
