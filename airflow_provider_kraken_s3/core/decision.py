"""What to do about one file, given what S3 holds: the one place where proof is decided.

The invariant, in the words the code follows:

    **Proof** is what S3 computed from the bytes it received, equal to what we computed from the bytes we
    read and sent, and those bytes match the inventory (its MD5, or its precomputed ``"<etag>__<MiB>"``, which
    alphakraken computes in the same instrument read as the MD5).

What S3 computed is one of two things (:func:`compare` weighs both):

- **its ETag**, where that is MD5-derived: without encryption and under SSE-S3, as S3's own response headers
  say (:attr:`RemoteObject.encryption`), never judged by the ETag's shape alone;
- **its checksum**, which S3 validated against the uploader's and which survives every encryption mode: our
  full-object CRC64NVME (:mod:`.checksum`), or another tool's CRC32/CRC32C, computed at the object's part
  layout (:mod:`.part_layouts`). Under SSE-KMS and SSE-C the ETag is opaque and ignored: only the checksum
  can prove. An object S3 keeps no checksum for (Ceph RGW 16, objects written without one) is proven by its
  ETag as before, and an encrypted one without a checksum cannot be proven at all.

Either link proves; a link that was *shown* to differ (another size, a single-part ETag that is not the MD5,
another checksum of the same algorithm and kind) forbids the proof whatever the other says — evidence is
never outweighed.

Object metadata (``kraken-md5``, ``kraken-part-size``), an mtime or a record we wrote are *hints*: a hint may
say which part size to hash with, never that the bytes are right. So an object is proven without reading
the local file only when

- its MD5-derived ETag equals the inventory's precomputed ETag and its size the inventory's size, or
- it is a single-part object (its ETag *is* the MD5 of its bytes) whose ETag equals the inventory MD5, or
- its checksum equals one computed from bytes proven to be the inventory's (the expectation's ``checksum``:
  the upload's own read, or the manifest's record of it for the sensor; :func:`~.proof.checksums_agree`).

Otherwise the local file has to be hashed (at the object's part size, from a hint, and with the checksum
where S3 holds one) and the digests compared, or the object is uploaded. The operator (:func:`decide`), the
post-hash step (:func:`after_hashing`), the sensor's per-object check (:func:`~.verdict.judge_object`) and the upload's own final check share
:func:`compare`, so they can never disagree about the same object.

Pure module: no Airflow, no boto3, no I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from airflow_provider_kraken_s3.core.checksum import ALGORITHM, Checksum, Encryption
from airflow_provider_kraken_s3.core.etag import etag_part_count, normalize_etag
from airflow_provider_kraken_s3.core.part_layouts import (
    CrcLayout,
    CrcLayouts,
    candidate_part_sizes,
    crc_layouts,
)
from airflow_provider_kraken_s3.core.proof import checksums_agree

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
    """What the inventory says one file is: its size, its MD5 and, if precomputed, its ETag and part size.

    ``checksum`` is the file's full-object checksum where one is known *for the inventory's bytes*: computed
    in the read that proved them against the inventory (the upload, the hash-first step), or recorded in the
    manifest by the attempt that did. alphakraken's inventory has none of its own.
    """

    size: int
    md5: str | None  # None only for a plain upload without an inventory (the hook used directly)
    etag: str | None = None
    part_size: int | None = None
    checksum: Checksum | None = None


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
    #: the part sizes S3 lists (``GetObjectAttributes``), where it was asked (a stored CRC32/CRC32C's layout)
    parts: tuple[int, ...] = ()

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

    @property
    def crc_layouts(self) -> CrcLayouts | None:
        """Where the local file's CRC compares with S3's stored CRC32/CRC32C (None: S3 stores none)."""
        return crc_layouts(self.checksum, self.size, listed=self.parts, etag_parts=etag_part_count(self.etag))

    def could_have_part_size(self, part_size: int) -> bool:
        """Whether the ETag's part count fits ``part_size``: a hint that does not fit is ignored."""
        count = etag_part_count(self.etag)
        return count is not None and part_size > 0 and count == -(-self.size // part_size)


def comparable(stored: Checksum | None, ours: Checksum | None) -> bool:
    """Whether S3's checksum and ours can be compared (:func:`~.proof.checksums_agree`: same algorithm, kind)."""
    return ours is not None and checksums_agree(ours, stored) is not None


def computable(stored: Checksum | None) -> bool:
    """Whether one local read can compute what S3 holds: a full-object checksum of our algorithm."""
    return stored is not None and stored.full_object and stored.algorithm == ALGORITHM


def describe_encryption(encryption: Encryption) -> str:
    """The encryption in a person's words, for the reasons this module gives."""
    return {
        Encryption.SSE_KMS: "SSE-KMS",
        Encryption.SSE_KMS_DSSE: "DSSE-KMS",
        Encryption.SSE_C: "SSE-C (a customer-provided key)",
    }.get(encryption, encryption.value)


@dataclass(frozen=True)
class Evidence:
    """What S3's answer shows about one object against what we know of the file.

    ``proven``: why the object holds the file's bytes (a link that matched), or None. ``differs``: what was
    shown to differ (it forbids the proof), or None. Neither: nothing S3 holds can be compared with what is
    known; ``unprovable`` then says why, where that is not just "hash the local file".
    """

    proven: str | None = None
    differs: str | None = None
    unprovable: str | None = None
    #: the link that proved it: "etag" or "checksum"
    by: str | None = None


def compare(remote: RemoteObject, expected: Expectation) -> Evidence:
    """Weigh every link between ``remote`` and ``expected``: the size, the MD5-derived ETag (only where S3's
    headers say it is one), and the full-object checksum. See the module docstring for the rule."""
    if remote.size != expected.size:
        return Evidence(differs=f"it has {remote.size} bytes, the inventory {expected.size}")
    proofs: list[tuple[str, str]] = []
    differences: list[str] = []
    if remote.etag_is_md5_based:
        etag = normalize_etag(remote.etag)
        if expected.etag is not None and etag == normalize_etag(expected.etag):
            proofs.append(("etag", "S3's ETag and size equal the inventory's"))
        elif not remote.is_multipart and expected.md5 is not None:
            if etag == expected.md5:
                proofs.append(
                    (
                        "etag",
                        "S3's ETag of this single-part object (the MD5 of its bytes) equals the inventory MD5",
                    )
                )
            else:
                differences.append(
                    f"its ETag {remote.etag} (the MD5 of its bytes) differs from the inventory MD5 {expected.md5}"
                )
    stored, ours = remote.checksum, expected.checksum
    agree = None if ours is None else checksums_agree(ours, stored)
    if agree is not None:
        assert stored is not None and ours is not None  # checksums_agree() compared them
        kind = "full-object" if stored.full_object else "composite"
        if agree:
            proofs.append(
                (
                    "checksum",
                    f"S3's {kind} {stored.algorithm} (validated by S3 against the one declared) and size "
                    "equal those of the inventory's bytes",
                )
            )
        else:
            differences.append(
                f"its {kind} {stored.algorithm} {stored.value} differs from the file's {ours.value}"
            )
    if differences:
        return Evidence(differs="; ".join(differences))
    if proofs:
        by, why = proofs[0]
        return Evidence(proven=why, by=by)
    return Evidence(unprovable=_unprovable(remote, expected))


def prove_stored(remote: RemoteObject, *, size: int, etag: str, checksum: Checksum | None) -> Evidence:
    """The upload's own check of what S3 says it stored (a part, or the object once completed) against what
    was read and sent: ``size`` bytes whose ETag is ``etag`` (their MD5, or the ETag of the part MD5s) and,
    where it was declared, whose full-object ``checksum`` S3 validated.

    Unlike :func:`compare` the part layout is ours, so an MD5-derived ETag that is not ``etag`` is a shown
    difference (corruption in transit, or a concurrent writer). Under SSE-KMS/SSE-C the ETag is ignored and
    only the checksum proves; without one the evidence says the object cannot be proven, and why.
    """
    if remote.size != size:
        return Evidence(differs=f"S3 reports {remote.size} bytes, {size} were sent")
    sent = Expectation(size=size, md5=None, etag=etag, checksum=checksum)
    if remote.etag_is_md5_based and normalize_etag(remote.etag) != normalize_etag(etag):
        return Evidence(
            differs=f"S3 reports ETag {normalize_etag(remote.etag)}, the bytes sent give {normalize_etag(etag)}"
        )
    evidence = compare(remote, sent)
    if evidence.by == "etag":
        return Evidence(proven="S3's ETag equals the ETag of the bytes sent", by="etag")
    if evidence.by == "checksum":
        return Evidence(proven=f"S3's {ALGORITHM} equals the {ALGORITHM} of the bytes sent", by="checksum")
    if evidence.differs is not None:
        return evidence
    if not remote.etag_is_md5_based:
        stored = "no checksum" if remote.checksum is None else f"only {remote.checksum}"
        why = _unprovable(remote, sent) or (
            f"{_etag_words(remote)}, and S3 returned {stored} to compare with the {ALGORITHM} of the bytes sent"
        )
        return Evidence(unprovable=why)
    return evidence


def _unprovable(remote: RemoteObject, expected: Expectation) -> str | None:
    """Why an object whose ETag proves nothing cannot be compared either (None: its ETag may still be compared
    after hashing the local file, or its checksum after computing ours)."""
    if remote.etag_is_md5_based:
        return None
    if remote.encryption.etag_is_md5:
        why = f"its ETag {remote.etag} is not MD5-based (SSE-KMS or a store with other ETags)"
    else:
        why = (
            f"it is encrypted with {describe_encryption(remote.encryption)}, under which S3's ETag "
            f"({normalize_etag(remote.etag)}) is not an MD5 of the bytes"
        )
    if remote.checksum is None:
        return (
            f"{why}, and S3 returned no checksum for it (the store keeps none, or the object was written without "
            "one), so it can neither be proven equal nor compared with the local file"
        )
    if computable(remote.checksum):
        return None  # one local read computes the checksum it holds
    crc = remote.crc_layouts
    if crc is not None:  # another tool's CRC32/CRC32C: one local read computes it where its layout is known
        return crc.unknown or None
    return (
        f"{why}, and its checksum ({remote.checksum}) is not a full-object {ALGORITHM}, which is the one the "
        "local file can be compared with, so it can neither be proven equal nor compared"
    )


def stored_checksum(remote: RemoteObject, known: Checksum | None = None) -> Checksum | None:
    """The checksum a manifest records for a proven object: S3's (full-object, or another tool's composite),
    what later readers compare with; or the one already recorded when S3's answer showed none (a listing)."""
    return remote.checksum if remote.checksum is not None else known


def validated_checksum(remote: RemoteObject, ours: Checksum | None) -> Checksum | None:
    """S3's full-object checksum where it equals ours (what a manifest records after an upload), else None."""
    if comparable(remote.checksum, ours) and remote.checksum == ours:
        return remote.checksum
    return None


def prove(remote: RemoteObject, expected: Expectation) -> str | None:
    """Why ``remote`` is proven to hold the inventory's bytes without reading them, or None if it is not."""
    return compare(remote, expected).proven


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
    #: HASH_FIRST: also compute the file's full-object checksum in the same read; S3 holds one to compare
    #: (under SSE-KMS/SSE-C the only thing that can be compared).
    checksum: bool = False
    #: HASH_FIRST: the layouts to compute another tool's CRC32/CRC32C at in the same read (ETag opaque).
    layouts: tuple[CrcLayout, ...] = ()

    @property
    def part_size(self) -> int | None:
        """The one part size to hash with, when there is exactly one (a hint, or a skip's proven size)."""
        return self.part_sizes[0] if len(self.part_sizes) == 1 else None


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
    evidence = compare(remote, expected)
    if evidence.proven is not None:
        return Decision(UploadAction.SKIP, f"already in S3: {evidence.proven}", notes=notes)
    whole_file = max(-(-expected.size // _MIB), _MIN_PART_MIB) * _MIB
    by_checksum = computable(remote.checksum) and expected.checksum is None
    if not remote.etag_is_md5_based:
        if evidence.differs is not None:  # another size, or another checksum we already know
            return _replace_or_refuse(remote, expected, versioned, notes, evidence.differs)
        crc = None if by_checksum else remote.crc_layouts  # else another tool's CRC32/CRC32C, if any
        if by_checksum or (crc is not None and crc.layouts):  # only the checksum can be compared: one read
            return Decision(
                UploadAction.HASH_FIRST,
                f"an object of the same size exists whose ETag proves nothing ({_etag_words(remote)}); hashing "
                "the local file to compare "
                + (crc.plan if crc is not None else f"S3's full-object {ALGORITHM} with the file's"),
                part_sizes=(whole_file,),
                notes=notes,
                checksum=True,
                layouts=crc.layouts if crc is not None else (),
            )
        if crc is not None:  # a composite whose layout is unknown: nothing to compare, nothing shown
            return _replace_or_refuse(remote, expected, versioned, notes, crc.unknown)
        return Decision(
            UploadAction.REFUSE,
            f"an object exists where this file belongs and {evidence.unprovable}. It is not replaced blind. "
            + _refusal_advice(remote),
            notes=notes,
        )
    if evidence.differs is not None and remote.size == expected.size and expected.checksum is not None:
        # The checksum of the inventory's bytes is known and S3's differs: shown, nothing to hash.
        return _replace_or_refuse(remote, expected, versioned, notes, evidence.differs)
    if remote.size == expected.size and by_checksum and (remote.is_multipart or expected.md5 is None):
        # S3 holds a full-object checksum: one read of the file (MD5 and checksum) decides, whatever the
        # part size; the part-size hint, if any, is hashed too, for the manifest's part size.
        hint = _usable_hint(remote, part_size_hint)
        count = etag_part_count(remote.etag)
        if hint is not None:
            sizes: tuple[int, ...] = (hint,)
        elif count is None or count == 1:
            sizes = (whole_file,)
        else:  # the ETag too, at the common part sizes that give its part count: it names the part size
            sizes = candidate_part_sizes(remote.size, count) or (whole_file,)
        return Decision(
            UploadAction.HASH_FIRST,
            f"an object of the same size exists with ETag {remote.etag}; hashing the local file to compare S3's "
            f"full-object {ALGORITHM} with the file's",
            part_sizes=sizes,
            notes=notes,
            part_size_known=hint is not None or count is None or count == 1,
            checksum=True,
        )
    if remote.size == expected.size and not remote.is_multipart and expected.md5 is None:
        # Nothing known about the local file: its MD5 (one read) is what the object's ETag must equal.
        return Decision(
            UploadAction.HASH_FIRST,
            f"an object of the same size exists with ETag {remote.etag}; hashing the local file to compare",
            part_sizes=(whole_file,),
            notes=notes,
        )
    if remote.size == expected.size and remote.is_multipart:
        hint = _usable_hint(remote, part_size_hint)
        if hint is not None and hint == expected.part_size:
            # Same part size as the inventory's ETag, other ETag: the difference is already shown.
            difference = (
                f"its ETag {remote.etag} differs from the inventory's {expected.etag} at the same part size"
            )
            return _replace_or_refuse(remote, expected, versioned, notes, difference)
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
    return _replace_or_refuse(
        remote, expected, versioned, notes, _difference(remote, expected, part_size_hint)
    )


def _usable_hint(remote: RemoteObject, part_size_hint: int | None) -> int | None:
    """The object's part size from S3's answer or our metadata, where its ETag's part count allows it."""
    return next(
        (
            h
            for h in (part_size_hint, remote.part_size_hint)
            if h is not None and remote.could_have_part_size(h)
        ),
        None,
    )


def _etag_words(remote: RemoteObject) -> str:
    if remote.encryption.etag_is_md5:
        return f"ETag {remote.etag}, not MD5-based"
    return f"{describe_encryption(remote.encryption)}"


def _refusal_advice(remote: RemoteObject) -> str:
    if remote.encryption.etag_is_md5:
        return (
            "Check the object and the bucket's encryption (use SSE-S3, or a store that keeps full-object "
            f"{ALGORITHM} checksums), then move it away and re-run."
        )
    return (
        f"Objects this provider uploads under {describe_encryption(remote.encryption)} carry a full-object "
        f"{ALGORITHM} that proves them; this one does not. Check it (or its store: it must keep additional "
        "checksums, or the bucket must use SSE-S3), then move it away and re-run."
    )


def after_hashing(
    remote: RemoteObject,
    expected: Expectation,
    *,
    local_etag: str,
    local_md5: str,
    versioned: bool,
    local_checksum: Checksum | None = None,
    at_layouts: Sequence[tuple[CrcLayout, Checksum]] = (),
) -> Decision:
    """The decision once the local file was hashed at the object's part size (after ``HASH_FIRST``), and its
    checksums computed where the decision asked: full-object, and the CRC32/CRC32C at each of its layouts.

    The local MD5 must be the inventory's first: otherwise the local copy is not the acquired file and
    proves nothing (and must never replace anything). Then a comparable checksum decides (whatever the part
    size, and the only thing that can under SSE-KMS/SSE-C); else the ETags at the object's part size.
    """
    if expected.md5 is not None and local_md5 != expected.md5:
        return Decision(
            UploadAction.REFUSE,
            f"the local file has MD5 {local_md5}, the inventory says {expected.md5}: the local copy is not the "
            "acquired file. Nothing was uploaded; restore it from the instrument.",
        )
    crc = remote.crc_layouts
    if crc is not None and at_layouts:  # another tool's CRC32/CRC32C decides, at the layouts tried
        proof, difference = crc.judge(at_layouts)
        if proof is not None:
            return Decision(UploadAction.SKIP, f"already in S3: {proof}, which have the inventory MD5")
        return _replace_or_refuse(remote, expected, versioned, (), difference)
    if comparable(remote.checksum, local_checksum):
        local = Expectation(size=expected.size, md5=local_md5, checksum=local_checksum)
        evidence = compare(remote, local)
        if evidence.proven is not None:
            if remote.etag_is_md5_based and normalize_etag(local_etag) == normalize_etag(remote.etag):
                reason = (
                    "already in S3: S3's ETag equals the ETag of the local bytes at the object's part size, and "
                    f"its full-object {ALGORITHM} theirs; those bytes have the inventory MD5"
                )
            else:
                reason = (
                    f"already in S3: {evidence.proven} (the file's, computed in the read that proved its MD5)"
                )
            return Decision(UploadAction.SKIP, reason, checksum=True)
        if evidence.differs is not None:
            return _replace_or_refuse(
                remote, expected, versioned, (), evidence.differs.replace("file's", "local file's")
            )
    if not remote.etag_is_md5_based:
        unprovable = _unprovable(remote, expected) or "nothing it holds can be compared with the local file"
        return Decision(UploadAction.REFUSE, f"an object exists where this file belongs and {unprovable}.")
    if normalize_etag(local_etag) == normalize_etag(remote.etag):
        return Decision(
            UploadAction.SKIP,
            "already in S3: S3's ETag equals the ETag of the local bytes at the object's part size, and those "
            "bytes have the inventory MD5",
        )
    difference = f"its ETag {remote.etag} differs from the local file's {local_etag} at the same part size"
    return _replace_or_refuse(remote, expected, versioned, (), difference)


def cannot_compare(remote: RemoteObject, expected: Expectation, *, versioned: bool) -> Decision:
    """The decision when hashing at every candidate part size found no match: nothing was shown to differ,
    nothing is proven, so the object is replaced only where the bucket keeps it, and refused otherwise."""
    return _replace_or_refuse(remote, expected, versioned, (), _difference(remote, expected, None))


def _difference(remote: RemoteObject, expected: Expectation, part_size_hint: int | None) -> str:
    """Words for what was *shown* to differ; "cannot be compared" when nothing was."""
    if remote.size != expected.size:
        return f"it has {remote.size} bytes, the inventory {expected.size}"
    evidence = compare(remote, expected)
    if evidence.differs is not None:
        return evidence.differs
    if not remote.etag_is_md5_based:
        return evidence.unprovable or f"it cannot be compared with the local file ({_etag_words(remote)})"
    if not remote.is_multipart:
        return f"its ETag {remote.etag} (the MD5 of its bytes) differs from the inventory MD5 {expected.md5}"
    if expected.etag is not None and part_size_hint is None and remote.part_size_hint is None:
        return (
            f"its ETag {remote.etag} differs from the inventory's {expected.etag}, and its part size is unknown, "
            "so it cannot be compared with the local file"
        )
    return f"it cannot be compared with the local file (ETag {remote.etag}, part size unknown)"


def _replace_or_refuse(
    remote: RemoteObject, expected: Expectation, versioned: bool, notes: tuple[str, ...], difference: str
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


def explain_unproven(remote: RemoteObject, expected: Expectation) -> str:
    """Words for a recorded object that :func:`compare` does not prove: what differs, or why nothing could be
    compared (the sensor's and the audit's detail)."""
    evidence = compare(remote, expected)
    if not remote.encryption.etag_is_md5 or comparable(remote.checksum, expected.checksum):
        # The ETag is not what decides here: say what the checksum showed, or why nothing could be compared.
        if evidence.differs is not None:
            return f"{evidence.differs} ({remote.size} bytes, {_etag_words(remote)})"
        recorded = (
            "no checksum was recorded for it"
            if expected.checksum is None
            else f"the recorded {expected.checksum} cannot be compared with S3's {remote.checksum or 'none'}"
        )
        why = evidence.unprovable or f"its ETag proves nothing ({_etag_words(remote)}) and {recorded}"
        return f"cannot be proven: {why}"
    found = f"ETag {normalize_etag(remote.etag)}, {remote.size} bytes"
    wanted = f"ETag {normalize_etag(expected.etag or expected.md5 or 'unknown')}, {expected.size} bytes"
    return f"expected {wanted}, found {found}"
