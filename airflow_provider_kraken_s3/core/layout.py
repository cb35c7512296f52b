"""Where a raw file's files go in S3, and one fingerprint for the whole set.

A raw file is one file (Thermo ``x.raw``), a folder (Bruker ``x.d/...``) or a set of siblings (Sciex
``x.wiff``, ``x.wiff2``, ``x.wiff.scan``). Its inventory ``file_info`` lists paths relative to
``backup_base_path``. This module turns those paths into object keys, refusing any path that could
address something outside the raw file (``..``, absolute paths) or that S3 and POSIX would read
differently (backslashes, control characters), because a wrong key is a silent backup of the wrong thing.

Pure module (stdlib only).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import datetime

from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.etag import normalize_etag

__all__ = [
    "FALLBACK_PROJECT_ID",
    "MAX_KEY_BYTES",
    "backup_key",
    "check_belongs",
    "check_etag",
    "check_raw_file_id",
    "check_relative_path",
    "key_prefix",
    "listing_folder",
    "local_path",
    "object_keys",
    "project_of",
    "set_etag",
    "upload_path",
]

MAX_KEY_BYTES = 1024  # S3's limit on the UTF-8 length of an object key.

_WINDOWS_DRIVE = re.compile(r"[A-Za-z]:")


def _control_characters(text: str) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in text if unicodedata.category(c) == "Cc"})


def _utf8_length(text: str, what: str) -> int:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{what} {text!r} is not valid Unicode text ({exc.reason} at index {exc.start}), so it has no "
            "S3 key; rename the file to a name that decodes as UTF-8"
        ) from None


def check_relative_path(path: str) -> str:
    """Return ``path`` unchanged if it is a safe relative POSIX path inside a raw file's folder.

    Refuses rather than repairs: a silently "fixed" path would make the S3 key disagree with the
    inventory that other tools read.
    """
    return _check_path(path, "path")


def check_raw_file_id(raw_file_id: str) -> str:
    """Return ``raw_file_id`` unchanged if it is one safe path segment (it names the key or key prefix)."""
    if isinstance(raw_file_id, str) and "/" in raw_file_id:
        raise InvalidInputError(
            f"raw_file_id {raw_file_id!r} contains '/'; a raw file id must be a single name such as "
            "'x.raw' or 'x.d'"
        )
    return _check_path(raw_file_id, "raw_file_id")


def _check_path(path: str, what: str) -> str:
    if not isinstance(path, str):
        raise InvalidInputError(
            f"{what} must be a string, got {type(path).__name__} {path!r}; pass it as text such as 'x.raw'"
        )
    if not path:
        raise InvalidInputError(f"{what} is empty; it must name a file or folder such as 'x.raw'")
    controls = _control_characters(path)
    if controls:
        raise InvalidInputError(
            f"{what} {path!r} contains control characters ({', '.join(controls)}); rename the file so its "
            "name has only printable characters"
        )
    if "\\" in path:
        raise InvalidInputError(
            f"{what} {path!r} contains a backslash; use POSIX separators ('/'), e.g. 'x.d/analysis.tdf', "
            "and rename files whose names contain a backslash"
        )
    if _WINDOWS_DRIVE.match(path):
        raise InvalidInputError(
            f"{what} {path!r} starts with a Windows drive ({path[:2]!r}); give it relative to the backup "
            "base path, with '/' separators"
        )
    if path.startswith("/"):
        raise InvalidInputError(
            f"{what} {path!r} is absolute; give it relative to the backup base path (drop the leading '/')"
        )
    for segment in path.split("/"):
        if not segment:
            raise InvalidInputError(
                f"{what} {path!r} has an empty segment ('//' or a trailing '/'); write it as 'dir/name' "
                "without doubled or trailing slashes"
            )
        if segment in (".", ".."):
            raise InvalidInputError(
                f"{what} {path!r} contains a {segment!r} segment; give the plain path inside the raw "
                "file's folder, without '.' or '..'"
            )
    length = _utf8_length(path, what)
    if length > MAX_KEY_BYTES:
        raise InvalidInputError(
            f"{what} {path[:40]!r}... is {length} bytes in UTF-8, but S3 keys may be at most "
            f"{MAX_KEY_BYTES}; shorten the file or folder names"
        )
    return path


#: alphakraken's project id of raw files that belong to no project (``FALLBACK_PROJECT_ID``).
FALLBACK_PROJECT_ID = "_FALLBACK"


def project_of(project_id: str | None) -> str:
    """The project a record belongs to: no project id (records older than alphakraken's 2026 migration hold
    ``null``) is the fallback project, as alphakraken's model default makes it."""
    return FALLBACK_PROJECT_ID if project_id is None else project_id


def key_prefix(
    raw_file_id: str, *, project_id: str | None, instrument_id: str | None, created_at: datetime | None
) -> str:
    """The prefix every key of a raw file starts with, exactly as alphakraken's uploader makes it.

    Raw files of the fallback project go under ``{instrument_id}/{created_at:%Y_%m}/`` (their bucket is
    shared by every instrument); a Sciex set (the id ends with ``.wiff``) goes under ``{raw_file_id}/`` so
    its siblings stay together. Both may apply, fallback first. ``.raw`` and ``.d`` get no prefix.
    """
    check_raw_file_id(raw_file_id)
    prefix = ""
    if project_of(project_id) == FALLBACK_PROJECT_ID:
        if not instrument_id or created_at is None:
            raise InvalidInputError(
                f"raw file {raw_file_id!r} belongs to the fallback project, whose keys start with "
                f"'{{instrument_id}}/{{created_at:%Y_%m}}/', but its instrument_id ({instrument_id!r}) or "
                f"created_at ({created_at!r}) is missing; fix the RawFile"
            )
        prefix = f"{check_relative_path(instrument_id)}/{created_at:%Y_%m}/"
    if raw_file_id.endswith(".wiff"):
        prefix += f"{raw_file_id}/"
    return prefix


def object_keys(raw_file_id: str, paths: Iterable[str], *, prefix: str = "") -> dict[str, str]:
    """Map each relative path to its S3 key (``prefix`` + path, alphakraken's layout), in sorted path order."""
    check_raw_file_id(raw_file_id)
    if isinstance(paths, str):
        raise InvalidInputError(
            f"paths must be a collection of paths, got the single string {paths!r}; pass e.g. [{paths!r}]"
        )
    unique = sorted({check_relative_path(p) for p in paths})
    for path in unique:
        check_belongs(raw_file_id, path)
    if not unique:
        raise InvalidInputError(
            f"file_info is empty for raw file {raw_file_id!r}, so there is nothing to back up; "
            "inventory the raw file's files (file_info) before the S3 backup"
        )
    _refuse_file_and_folder(unique)
    keys = {p: f"{prefix}{p}" for p in unique}
    for path, key in keys.items():
        length = _utf8_length(key, "key")
        if length > MAX_KEY_BYTES:
            raise InvalidInputError(
                f"S3 key for path {path[:40]!r}... would be {length} bytes in UTF-8, above S3's limit of "
                f"{MAX_KEY_BYTES}; shorten the file or folder names"
            )
    return keys


def check_belongs(raw_file_id: str, path: str) -> str:
    """Return ``path`` if it is one of the raw file's own files, refusing it otherwise.

    A raw file's files are the file itself (``x.raw``), the files inside its folder (``x.d/...``), or, for a
    Sciex set (``x.wiff``), its siblings of the same stem (``x.wiff2``, ``x.wiff.scan``, ``x.timeseries.data``).
    Anything else (``b.raw`` in the inventory of ``a.d``) would write over another raw file's object: an
    inventory naming it is wrong, and no retry can make it right.
    """
    if path == raw_file_id or path.startswith(f"{raw_file_id}/"):
        return path
    if (
        raw_file_id.endswith(".wiff")
        and "/" not in path
        and path.startswith(raw_file_id.removesuffix("wiff"))
    ):
        return path
    raise InvalidInputError(
        f"file_info of raw file {raw_file_id!r} lists {path!r}, which is not one of its files (the file itself, "
        f"a file inside {raw_file_id}/, or a sibling of a .wiff set): backing it up would overwrite another raw "
        "file's object. Fix the inventory."
    )


def listing_folder(keys: Iterable[str]) -> str:
    """The folder a set of two or more keys shares, to list them at once ("" when a listing cannot help).

    Character-wise common prefix, cut after its last ``/``: every key lies under it, so one listing of it
    answers for all of them (and a key outside it could never be mistaken for absent).
    """
    keys = list(keys)
    if len(keys) < 2:
        return ""
    common = os.path.commonprefix(keys)  # noqa: RUF071 - cut at the last "/" below
    return common[: common.rfind("/") + 1]


def upload_path(bucket: str, prefix: str) -> str:
    """alphakraken's ``s3_upload_path``: ``s3://bucket`` or ``s3://bucket/prefix/``; file_info paths are
    relative to it (their file remover HEADs ``prefix + path``)."""
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def _refuse_file_and_folder(sorted_paths: list[str]) -> None:
    """Refuse inventories listing ``a`` as a file and ``a/b`` below it: no filesystem has both."""
    listed = set(sorted_paths)
    for path in sorted_paths:
        segments = path.split("/")
        for depth in range(1, len(segments)):
            parent = "/".join(segments[:depth])
            if parent in listed:
                raise InvalidInputError(
                    f"file_info lists {parent!r} as a file and also {path!r} inside it; "
                    "re-inventory the raw file so each path is either a file or a folder"
                )


def backup_key(raw_file_id: str, keys: Mapping[str, str], *, prefix: str = "") -> str:
    """Return the ``s3_backup_key`` to record for a raw file whose files got ``keys`` (path -> key).

    A lone file named like the id (``x.raw``) is recorded by its object key; anything else, including a
    ``.d`` folder holding a single file, by the prefix its objects share (ending in ``{id}/``), so readers
    can tell sets from objects by the trailing slash.
    """
    check_raw_file_id(raw_file_id)
    if not keys:
        raise InvalidInputError(
            f"no object keys given for raw file {raw_file_id!r}; build them with object_keys() from a "
            "non-empty file_info"
        )
    if len(keys) == 1 and raw_file_id in keys and not prefix.endswith(f"{raw_file_id}/"):
        return keys[raw_file_id]
    return prefix if prefix.endswith(f"{raw_file_id}/") else f"{prefix}{raw_file_id}/"


def check_etag(etag: str) -> str:
    """Return ``etag`` normalised by the one normaliser (:func:`..etag.normalize_etag`), refusing values
    that cannot be an ETag S3 returned (a whole ``"<etag>__<MiB>"``, whitespace, quotes inside)."""
    if not isinstance(etag, str):
        raise InvalidInputError(f"ETag must be a string, got {type(etag).__name__} {etag!r}")
    value = normalize_etag(etag)
    if not value:
        raise InvalidInputError(f"ETag {etag!r} is empty; pass the ETag S3 returned for the object")
    if "__" in value:
        raise InvalidInputError(
            f"ETag {etag!r} contains '__'; it looks like an inventory value '<etag>__<part MiB>', "
            "pass only the part before '__'"
        )
    if any(c.isspace() or c == '"' or not c.isprintable() for c in value):
        raise InvalidInputError(
            f"ETag {etag!r} contains whitespace, quotes or unprintable characters; pass the ETag exactly "
            "as S3 returned it"
        )
    return value


def set_etag(etags_by_key: Mapping[str, str]) -> str:
    """Fingerprint a raw file's whole set of objects as one value for ``s3_etag``.

    Format: the hex MD5 of the UTF-8 text made of one line ``<key> <etag>\\n`` per object, lines sorted by
    key (code point order), where ``<etag>`` is the ETag without quotes and lower-cased. Example for two
    objects: ``md5(b"x.d/a 9e10...\\nx.d/b 3f1c...-2\\n").hexdigest()``. It changes when any key or ETag
    changes, does not depend on the mapping's order, and can be recomputed from a bucket listing. Keys may
    contain spaces (the ETag never does, so the last space on a line separates them) but no newlines.
    """
    if not etags_by_key:
        raise InvalidInputError(
            "no ETags given; pass {key: etag} for every object of the raw file to fingerprint the set"
        )
    lines = []
    for key, etag in etags_by_key.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(
                f"object key {key!r} must be a non-empty string; build keys with object_keys()"
            )
        if _control_characters(key):
            raise InvalidInputError(
                f"object key {key!r} contains control characters (e.g. a newline), which would make the "
                "set ETag text ambiguous; build keys with object_keys()"
            )
        _utf8_length(key, "object key")
        lines.append((key, f"{key} {check_etag(etag)}\n"))
    text = "".join(line for _, line in sorted(lines))
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def local_path(backup_base_path: str | os.PathLike[str], relative_path: str) -> pathlib.Path:
    """Join ``backup_base_path`` and an inventory path, refusing anything that could leave the base folder.

    The check is lexical (no filesystem access): after :func:`check_relative_path` no ``..``, absolute or
    drive path can remain. Symlinks inside the base folder are not resolved; that is the inventory's job.
    """
    base_text = os.fspath(backup_base_path) if isinstance(backup_base_path, os.PathLike) else backup_base_path
    if not isinstance(base_text, str) or not base_text:
        raise InvalidInputError(
            f"backup_base_path must be a non-empty path, got {backup_base_path!r}; pass the folder that "
            "holds the raw file's files"
        )
    check_relative_path(relative_path)
    base = pathlib.Path(base_text)
    joined = base / relative_path
    relative = pathlib.PurePosixPath(relative_path)
    if joined.parts[: len(base.parts)] != base.parts or relative.is_absolute() or ".." in relative.parts:
        raise InvalidInputError(  # pragma: no cover - unreachable after check_relative_path
            f"path {relative_path!r} would leave backup_base_path {base_text!r}; list it relative to that "
            "folder without '..'"
        )
    return joined
