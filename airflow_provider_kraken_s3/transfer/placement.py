"""Putting a file in place durably and never over another: what a restore does with bytes it verified.

A file is written under a temporary name beside its target (:func:`partial_path`), by one writer at a time
(:func:`open_locked`); once the caller has verified and fsynced it, :func:`put_in_place` gives it its name and
fsyncs the directory. A crash leaves the temporary file (the next run continues it) or the whole verified file,
never a torn file under the real name. Files only: no S3, no Airflow.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from airflow_provider_kraken_s3.core.errors import TransientBackupError

#: Suffix of the temporary file a restore writes beside its target (hidden: its name starts with a dot).
PARTIAL_SUFFIX = ".kraken-restore"

_MD5_ETAG = re.compile(r"[0-9a-f]{32}(-[0-9]+)?")


def partial_path(target: Path, etag: str) -> Path:
    """The temporary file beside ``target`` for the object with ``etag``: a later run with the same object
    continues it; another version of the object never continues it. (An ETag that is not an MD5 ETag, which
    could hold any character, is replaced by its MD5.)"""
    tag = etag if _MD5_ETAG.fullmatch(etag) else hashlib.md5(etag.encode()).hexdigest()
    return target.with_name(f".{target.name}.{tag}{PARTIAL_SUFFIX}")


@contextlib.contextmanager
def open_locked(partial: Path) -> Iterator[BinaryIO]:
    """``partial`` for reading and writing (created if missing, its bytes kept if not), locked for this writer.

    One writer per temporary file: a second restore at the same time would interleave its writes.
    """
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    with open(fd, "r+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TransientBackupError(
                f"{partial} is being written by another restore right now; wait for it to finish, then run again"
            ) from None
        yield handle


def put_in_place(partial: Path, target: Path, *, overwrite: bool) -> None:
    """Rename the verified file to its name; without ``overwrite``, never over a file that appeared meanwhile
    (a hard link fails if the name exists; file systems without hard links fall back to check-then-rename).

    :raises FileExistsError: ``target`` appeared (``partial`` is removed then).
    """
    if overwrite:
        os.replace(partial, target)
    else:
        try:
            os.link(partial, target)
        except FileExistsError:
            partial.unlink()
            raise
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
            if os.path.lexists(target):
                partial.unlink()
                raise FileExistsError(errno.EEXIST, "appeared meanwhile", str(target)) from None
            os.rename(partial, target)
        else:
            partial.unlink()
    fsync_dir(target.parent)


def forget_other_partials(target: Path, *, keep: Path) -> None:
    """Temporary files of other versions of the object (it was replaced between two runs) are useless now.

    Matched exactly (name, then an ETag): ``.x.wiff.*`` would also match ``.x.wiff.scan.…``, a sibling's.
    """
    prefix, suffix = f".{target.name}.", PARTIAL_SUFFIX
    for other in target.parent.iterdir():
        name = other.name
        ours = name.startswith(prefix) and name.endswith(suffix)
        if ours and _MD5_ETAG.fullmatch(name[len(prefix) : -len(suffix)]) and other != keep:
            other.unlink(missing_ok=True)


def make_dirs(folder: Path, base: Path) -> None:
    """Create ``folder`` (inside ``base``) and fsync each parent that got a new entry."""
    missing = []
    while not folder.exists() and folder != base:
        missing.append(folder)
        folder = folder.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_dir(directory.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new entry in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
