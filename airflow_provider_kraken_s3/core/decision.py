"""What to do about one file, given what S3 holds: the one place where proof is decided.

The invariant, in the words the code follows:

    **Proof** is what S3 computed from the bytes it received (the object's ETag), equal to what we computed
    from the bytes we read and sent, and those bytes match the inventory (its MD5, or its precomputed
    ``"<etag>__<MiB>"``, which alphakraken computes in the same instrument read as the MD5).

Object metadata (``kraken-md5``, ``kraken-part-size``), an mtime or a record we wrote are *hints*: a hint may
say which part size to hash with, never that the bytes are right. So an object is proven without reading
the local file only when

- its ETag equals the inventory's precomputed ETag and its size the inventory's size, or
- it is a single-part object (its ETag *is* the MD5 of its bytes) whose ETag equals the inventory MD5.

Otherwise the local file has to be hashed (at the object's part size, from a hint) and both digests compared,
or the object is uploaded. The operator (:func:`decide`), the post-hash step (:func:`after_hashing`) and the
sensor's per-object check (:func:`~.verdict.judge_object`) share :func:`prove`, so they can never disagree
about the same object.

Pure module: no Airflow, no boto3, no I/O.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from airflow_provider_kraken_s3.core.checksum import Checksum, Encryption
from airflow_provider_kraken_s3.core.etag import etag_part_count, normalize_etag

#: User metadata we write on multipart objects whose whole-file MD5 was verified before completion.
META_PART_SIZE = "kraken-part-size"
META_MD5 = "kraken-md5"
#: rclone's name for the same whole-file MD5 (base64), so ``rclone check`` verifies without downloading.
META_RCLONE_MD5 = "md5chksum"

_MIB = 1024**2
_MIN_PART_MIB = 5
_MD5_ETAG = re.compile(r"[0-9a-f]{32}(-[1-9][0-9]{0,4})?")


@dataclass(frozen=True)
class Expectation:
    """What the inventory says one file is: its size, its MD5 and, if precomputed, its ETag and part size."""

    size: int
    md5: str | None  # None only for a plain upload without an inventory (the hook used directly)
    etag: str | None = None
    part_size: int | None = None


@dataclass(frozen=True)
class RemoteObject:
    """What HEAD returned for an existing object. ``metadata`` is user metadata: hints only."""

    etag: str
    size: int
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: the version HEAD described, where the bucket keeps versions (listings do not say)
    version_id: str | None = None
    #: S3's additional checksum (HEAD with ``ChecksumMode=ENABLED``); None where the store keeps none
    checksum: Checksum | None = None
    #: the encryption S3's response declared; under SSE-KMS/SSE-C the ETag proves nothing
    encryption: Encryption = Encryption.NONE

    @property
    def is_multipart(self) -> bool:
        return etag_part_count(self.etag) is not None

    @property
    def etag_is_md5_based(self) -> bool:
        """False where the ETag is not MD5-derived: SSE-KMS or SSE-C (as S3's headers say, whatever the ETag's
        shape), or an ETag of another shape (some stores). Such an ETag proves nothing."""
        return self.encryption.etag_is_md5 and bool(_MD5_ETAG.fullmatch(normalize_etag(self.etag)))

    def meta(self, name: str) -> str | None:
        for key, value in self.metadata.items():
            if key.lower() == name:
                return str(value).strip().lower()
        return None

    @property
    def part_size_hint(self) -> int | None:
        """The part size our metadata claims: a hint of which part size to hash the local file with."""
        value = self.meta(META_PART_SIZE) or ""
        return int(value) if value.isascii() and value.isdigit() and int(value) > 0 else None

    def could_have_part_size(self, part_size: int) -> bool:
        """Whether the ETag's part count fits ``part_size``: a hint that does not fit is ignored."""
        count = etag_part_count(self.etag)
        return count is not None and part_size > 0 and count == -(-self.size // part_size)


def prove(remote: RemoteObject, expected: Expectation) -> str | None:
    """Why ``remote`` is proven to hold the inventory's bytes without reading them, or None if it is not."""
    if remote.size != expected.size or not remote.etag_is_md5_based:
        return None
    etag = normalize_etag(remote.etag)
    if expected.etag is not None and etag == normalize_etag(expected.etag):
        return "S3's ETag and size equal the inventory's"
    if not remote.is_multipart and etag == expected.md5:
        return "S3's ETag of this single-part object (the MD5 of its bytes) equals the inventory MD5"
    return None


def metadata_notes(remote: RemoteObject, expected: Expectation) -> list[str]:
    """Hints that contradict the inventory: worth a warning, never a verdict."""
    claimed = remote.meta(META_MD5)
    if claimed is not None and expected.md5 is not None and claimed != expected.md5:
        return [
            f"metadata {META_MD5}={claimed} contradicts the inventory MD5 {expected.md5}; ignored (metadata is "
            "a hint, the ETag is the proof)"
        ]
    return []


class UploadAction(str, enum.Enum):
    """What the engine does with one file."""

    SKIP = "skip"  # proven in S3 already: nothing is read or sent
    UPLOAD = "upload"  # nothing there: upload and prove
    HASH_FIRST = "hash_first"  # something there that only the local bytes can prove or disprove
    REPLACE = "replace"  # something else there: upload a verified copy over it (a versioned bucket keeps it)
    REFUSE = "refuse"  # neither proven nor safe to replace: a person decides


@dataclass(frozen=True)
class Decision:
    action: UploadAction
    reason: str
    #: HASH_FIRST: the part sizes to hash the local file with (one read pass for all of them).
    part_sizes: tuple[int, ...] = ()
    #: REPLACE: the ETag being replaced.
    replaced_etag: str | None = None
    notes: tuple[str, ...] = ()
    #: HASH_FIRST: False when the part sizes are guesses (common sizes), so a mismatch shows no difference.
    part_size_known: bool = True

    @property
    def part_size(self) -> int | None:
        """The one part size to hash with, when there is exactly one (a hint, or a skip's proven size)."""
        return self.part_sizes[0] if len(self.part_sizes) == 1 else None


#: Part sizes uploaders commonly use (MiB): boto3/s3transfer's 8, the AWS CLI's 8 and 16, rclone's 5 and 64,
#: alphakraken's 100, ours 500. Tried when an object's part size is unknown (no hint, and a store such as Ceph
#: RGW 16 that ignores HEAD ``partNumber``).
COMMON_PART_SIZES_MIB = (5, 8, 15, 16, 50, 64, 100, 500)


def candidate_part_sizes(size: int, part_count: int) -> tuple[int, ...]:
    """Common part sizes (bytes, ascending) that cut ``size`` bytes into exactly ``part_count`` parts.

    None for a one-part object: every part size at least the file's gives it, and its ETag follows from the
    file's MD5 alone (:func:`one_part_etag`).
    """
    if size <= 0 or part_count < 2:
        return ()
    return tuple(
        sorted(mib * _MIB for mib in COMMON_PART_SIZES_MIB if -(-size // (mib * _MIB)) == part_count)
    )


def one_part_etag(md5: str) -> str:
    """The ETag of a multipart upload of one part (``…-1``), from the file's MD5: s3transfer makes these for a
    file exactly as large as its threshold (alphakraken's uploader at 100 MiB)."""
    return f"{hashlib.md5(bytes.fromhex(md5)).hexdigest()}-1"


def decide(
    remote: RemoteObject | None,
    expected: Expectation,
    *,
    versioned: bool,
    part_size_hint: int | None = None,
) -> Decision:
    """The upload decision for one file, from HEAD alone.

    :param versioned: whether the bucket keeps old versions; without it, replacing would destroy whatever is
        there, so a differing object is refused rather than overwritten.
    :param part_size_hint: the object's part size when S3 told us (HEAD ``partNumber=1``); our metadata's
        ``kraken-part-size`` is used when this is None. Only used to choose how to hash the local file.
    """
    if remote is None:
        return Decision(UploadAction.UPLOAD, "not in S3 yet")
    notes = tuple(metadata_notes(remote, expected))
    proof = prove(remote, expected)
    if proof is not None:
        return Decision(UploadAction.SKIP, f"already in S3: {proof}", notes=notes)
    if not remote.etag_is_md5_based:
        return Decision(
            UploadAction.REFUSE,
            f"an object with ETag {remote.etag} exists; that ETag is not MD5-based (SSE-KMS or a store with "
            "other ETags), so it can neither be proven equal nor safely replaced. Check the object and the "
            "bucket's encryption (use SSE-S3), then move it away and re-run.",
            notes=notes,
        )
    if remote.size == expected.size and not remote.is_multipart and expected.md5 is None:
        # Nothing known about the local file: its MD5 (one read) is what the object's ETag must equal.
        whole_file = max(-(-expected.size // _MIB), _MIN_PART_MIB) * _MIB
        return Decision(
            UploadAction.HASH_FIRST,
            f"an object of the same size exists with ETag {remote.etag}; hashing the local file to compare",
            part_sizes=(whole_file,),
            notes=notes,
        )
    if remote.size == expected.size and remote.is_multipart:
        hint = next(
            (
                h
                for h in (part_size_hint, remote.part_size_hint)
                if h is not None and remote.could_have_part_size(h)
            ),
            None,
        )
        if hint is not None and hint == expected.part_size:
            # Same part size as the inventory's ETag, other ETag: the difference is already shown.
            difference = (
                f"its ETag {remote.etag} differs from the inventory's {expected.etag} at the same part size"
            )
            return _replace_or_refuse(remote, versioned, notes, difference)
        if hint is not None:
            return Decision(
                UploadAction.HASH_FIRST,
                f"an object of the same size exists with ETag {remote.etag}; hashing the local file at its "
                f"part size ({hint} bytes) to compare",
                part_sizes=(hint,),
                notes=notes,
            )
        if etag_part_count(remote.etag) == 1:
            return Decision(
                UploadAction.HASH_FIRST,
                f"a one-part multipart object of the same size exists with ETag {remote.etag}; hashing the local "
                "file to compare",
                part_sizes=(max(-(-expected.size // _MIB), _MIN_PART_MIB) * _MIB,),
                notes=notes,
            )
        shown = expected.part_size if expected.etag is not None else None  # already shown to differ
        candidates = tuple(
            size
            for size in candidate_part_sizes(remote.size, etag_part_count(remote.etag) or 0)
            if size != shown
        )
        if candidates:
            return Decision(
                UploadAction.HASH_FIRST,
                f"an object of the same size exists with ETag {remote.etag} and an unknown part size; hashing "
                f"the local file at the common part sizes that give its part count ({', '.join(f'{c // _MIB} MiB' for c in candidates)}) "
                "in one read pass to compare",
                part_sizes=candidates,
                notes=notes,
                part_size_known=False,
            )
    return _replace_or_refuse(remote, versioned, notes, _difference(remote, expected, part_size_hint))


def after_hashing(
    remote: RemoteObject,
    expected: Expectation,
    *,
    local_etag: str,
    local_md5: str,
    versioned: bool,
) -> Decision:
    """The decision once the local file was hashed at the object's part size (after ``HASH_FIRST``).

    The local MD5 must be the inventory's first: otherwise the local copy is not the acquired file and
    proves nothing (and must never replace anything).
    """
    if expected.md5 is not None and local_md5 != expected.md5:
        return Decision(
            UploadAction.REFUSE,
            f"the local file has MD5 {local_md5}, the inventory says {expected.md5}: the local copy is not the "
            "acquired file. Nothing was uploaded; restore it from the instrument.",
        )
    if normalize_etag(local_etag) == normalize_etag(remote.etag):
        return Decision(
            UploadAction.SKIP,
            "already in S3: S3's ETag equals the ETag of the local bytes at the object's part size, and those "
            "bytes have the inventory MD5",
        )
    difference = f"its ETag {remote.etag} differs from the local file's {local_etag} at the same part size"
    return _replace_or_refuse(remote, versioned, (), difference)


def cannot_compare(remote: RemoteObject, expected: Expectation, *, versioned: bool) -> Decision:
    """The decision when hashing at every candidate part size found no match: nothing was shown to differ,
    nothing is proven, so the object is replaced only where the bucket keeps it, and refused otherwise."""
    return _replace_or_refuse(remote, versioned, (), _difference(remote, expected, None))


def _difference(remote: RemoteObject, expected: Expectation, part_size_hint: int | None) -> str:
    """Words for what was *shown* to differ; "cannot be compared" when nothing was."""
    if remote.size != expected.size:
        return f"it has {remote.size} bytes, the inventory {expected.size}"
    if not remote.is_multipart:
        return f"its ETag {remote.etag} (the MD5 of its bytes) differs from the inventory MD5 {expected.md5}"
    if expected.etag is not None and part_size_hint is None and remote.part_size_hint is None:
        return (
            f"its ETag {remote.etag} differs from the inventory's {expected.etag}, and its part size is unknown, "
            "so it cannot be compared with the local file"
        )
    return f"it cannot be compared with the local file (ETag {remote.etag}, part size unknown)"


def _replace_or_refuse(
    remote: RemoteObject, versioned: bool, notes: tuple[str, ...], difference: str
) -> Decision:
    if not versioned:
        return Decision(
            UploadAction.REFUSE,
            f"an object exists where this file belongs and {difference}; the bucket does not keep old versions, "
            "so replacing it would destroy it. Enable versioning on the bucket (or move the object away), then "
            "re-run.",
            notes=notes,
        )
    return Decision(
        UploadAction.REPLACE,
        f"an object exists and {difference}; it is replaced only by a verified upload (the bucket keeps the old "
        "version)",
        replaced_etag=normalize_etag(remote.etag),
        notes=notes,
    )
