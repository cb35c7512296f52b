"""Deep verification (fixity): are the bytes S3 serves today the instrument's bytes? Verdict and sampling.

A deep verification downloads an object and hashes what arrives; nothing S3 *says* about the object (its
ETag, its metadata) is taken on trust. The verdict here compares three things that were computed
independently:

1. the inventory (``file_info[path] = [size, md5]`` or ``[size, md5, "<etag>__<MiB>"]``, computed by
   alphakraken from the instrument's file);
2. what we computed from the bytes we downloaded (their size, MD5 and multipart ETag at one or more part
   sizes);
3. the ETag S3 reports, which S3 computed from the bytes it *received*;
4. the additional checksums: the one the record vouches for (the manifest's, S3's answer at upload) and the
   one S3 stores today, against the CRC64NVME of the bytes (or a CRC32/CRC32C at the object's part layout,
   for a composite checksum another tool stored).

The bytes are right when (2) equals (1), and the record's checksum where it names one. S3's ETag and its
stored checksum must also describe the bytes it serves, because the sensor, the audit and alphakraken's file
remover judge the backup by them alone: an object whose ETag still matches while its bytes rotted is exactly
what a HEAD can never see. Under SSE-KMS and SSE-C (as S3's headers say) the ETag is no digest of the bytes:
it is skipped, and the checksum and the MD5 decide. Each verdict names the proofs it used.

Objects in an archive tier (``GLACIER``, ``DEEP_ARCHIVE``, the archive tiers of ``INTELLIGENT_TIERING``)
cannot be read until they are restored; they "need restore", which is neither a failure nor a difference.

Sampling (:func:`select_sample`) spreads periodic checks over the whole archive: raw files never verified
come first, then the ones verified longest ago, up to a fraction of them or a byte budget per run.

Pure module: no Airflow, boto3, MongoDB or I/O.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from airflow_provider_kraken_s3.core.checksum import Checksum, Encryption
from airflow_provider_kraken_s3.core.errors import InvalidInputError
from airflow_provider_kraken_s3.core.etag import etag_part_count, normalize_etag, one_part_etag
from airflow_provider_kraken_s3.core.inventory import BackupObject
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.core.proof import describes_bytes, encryption_name

#: Storage classes whose objects must be restored before a GET returns their bytes.
ARCHIVE_STORAGE_CLASSES = frozenset({"GLACIER", "DEEP_ARCHIVE"})
#: ``INTELLIGENT_TIERING`` objects moved to an (opt-in) archive tier: HEAD's ``ArchiveStatus``.
ARCHIVE_ACCESS_TIERS = frozenset({"ARCHIVE_ACCESS", "DEEP_ARCHIVE_ACCESS"})
#: What HEAD's ``Restore`` field holds once a restored copy is readable.
RESTORED_MARK = 'ongoing-request="false"'


class DeepVerifyOutcome(str, enum.Enum):
    """What a deep verification found for one object (or, the worst of them, for one raw file)."""

    OK = "ok"  # the bytes S3 serves are the inventory's, and S3's ETag describes them
    DIFFERS = "differs"  # proven different: size, MD5 or ETag of the bytes disagree
    MISSING = "missing"  # no object where the record says one is
    UNVERIFIED = "unverified"  # could not be checked this time (replaced mid-download, S3 unreachable)
    NEEDS_RESTORE = "needs_restore"  # in an archive tier: restore it first, then verify

    @property
    def proves_record_wrong(self) -> bool:
        """Whether a record saying ``upload_done`` is now known to be false."""
        return self in (DeepVerifyOutcome.DIFFERS, DeepVerifyOutcome.MISSING)


#: Worst first: the outcome of a raw file is the worst outcome of its objects.
_SEVERITY = (
    DeepVerifyOutcome.DIFFERS,
    DeepVerifyOutcome.MISSING,
    DeepVerifyOutcome.UNVERIFIED,
    DeepVerifyOutcome.NEEDS_RESTORE,
    DeepVerifyOutcome.OK,
)


def worst(outcomes: Iterable[DeepVerifyOutcome]) -> DeepVerifyOutcome:
    """The raw file's outcome: any difference beats anything missing, which beats anything unverified..."""
    found = set(outcomes)
    return next((outcome for outcome in _SEVERITY if outcome in found), DeepVerifyOutcome.OK)


@dataclass(frozen=True)
class Downloaded:
    """What was computed from the bytes of one object as they arrived.

    :param etags: part size (bytes) → the ETag these bytes have when uploaded with that part size (a plain
        MD5 when they fit in one part).
    :param s3_etag: the ETag S3 reported when the download started (the one every ranged GET was
        conditional on), so it belongs to exactly these bytes.
    :param object_part_size: the object's part size when it is known rather than guessed (S3 told it, or
        the inventory's part size gives S3's part count); an ETag differing there is shown to differ.
    """

    size: int
    md5: str
    etags: Mapping[int, str]
    s3_etag: str
    object_part_size: int | None = None
    #: the CRC64NVME of the bytes (None when it was not computed)
    crc64nvme: Checksum | None = None
    #: the CRC32/CRC32C of the bytes at the object's part layout, for a 32-bit checksum S3 stores
    at_layout: Checksum | None = None
    #: the checksum S3 stores for the object (None where it keeps none)
    stored_checksum: Checksum | None = None
    #: the encryption S3's HEAD declared: under SSE-KMS and SSE-C its ETag proves nothing
    encryption: Encryption = Encryption.NONE


@dataclass(frozen=True)
class DeepVerifyFinding:
    """The verdict on one object, with words a data steward can act on, and the proofs it rests on
    (``md5``, ``checksum``, ``etag``: what was compared with the bytes read and agreed)."""

    outcome: DeepVerifyOutcome
    reason: str
    proofs: tuple[str, ...] = ()


def needs_restore(storage_class: str | None, restore: str | None, archive_status: str | None = None) -> bool:
    """Whether HEAD describes an archived object without a readable restored copy."""
    archived = (storage_class or "").upper() in ARCHIVE_STORAGE_CLASSES or (
        archive_status or ""
    ).upper() in ARCHIVE_ACCESS_TIERS
    return archived and RESTORED_MARK not in (restore or "")


def archived_finding(
    bucket: str, key: str, storage_class: str | None, restore: str | None = None
) -> DeepVerifyFinding:
    """An archived object: not a failure, not a difference; it needs a restore before it can be read."""
    where = f"s3://{bucket}/{key}"
    if restore and 'ongoing-request="true"' in restore:
        return DeepVerifyFinding(
            DeepVerifyOutcome.NEEDS_RESTORE,
            f"{where} is in storage class {storage_class or 'archive'} and its restore is still running; "
            "verify it again once the restore has finished",
        )
    return DeepVerifyFinding(
        DeepVerifyOutcome.NEEDS_RESTORE,
        f"{where} is in storage class {storage_class or 'archive'}: its bytes cannot be read until it is "
        f"restored (S3 RestoreObject, e.g. aws s3api restore-object --bucket {bucket} --key '{key}' "
        "--restore-request Days=7); verify it again once the restore has finished. Nothing is wrong with it.",
    )


def missing_finding(bucket: str, key: str) -> DeepVerifyFinding:
    return DeepVerifyFinding(
        DeepVerifyOutcome.MISSING,
        f"s3://{bucket}/{key} does not exist although the record says it was backed up: the backup of this "
        "file is lost. Keep the instrument's copy, and run the backup again to upload it.",
    )


def judge_download(bucket: str, item: BackupObject, got: Downloaded) -> DeepVerifyFinding:
    """Compare what was downloaded with the inventory entry and with S3's ETag (deep verification).

    In order: the size and the MD5 of the bytes against the inventory's (are these the acquired bytes?),
    the inventory's precomputed ETag against the ETag of the bytes at its part size, and S3's ETag against
    the ETag of the bytes (does the ETag that every HEAD-based check trusts still describe them?).
    """
    where = f"s3://{bucket}/{item.key}"
    wrong = _against_inventory(where, item, got) or _against_checksums(where, item, got)
    if wrong is not None:
        return wrong
    proofs, words = _checksum_proofs(item, got)
    if not got.encryption.etag_is_md5:
        words.append(
            f"S3's ETag was not compared: the object is encrypted with {encryption_name(got.encryption)}, so "
            "its ETag is not an MD5 of its bytes"
        )
        return _ok(where, got, ("md5", *proofs), words)
    s3_etag = normalize_etag(got.s3_etag)
    described, at_part_size = _describes(s3_etag, got)
    if described is False:
        return DeepVerifyFinding(
            DeepVerifyOutcome.DIFFERS,
            f"the bytes of {where} are right (MD5 {got.md5} as inventoried), but S3 reports ETag {s3_etag}, "
            f"while these bytes have ETag {got.etags.get(at_part_size or 0, '?')} at the same part size: the "
            "ETag that the sensor and alphakraken's file remover check no longer describes the object. Run "
            "the backup again to replace it with a verified copy (in a versioned bucket).",
            proofs=("md5", *proofs),
        )
    if described is None:
        only = "only the MD5 proves the bytes" if not proofs else "the MD5 and the checksum prove the bytes"
        words.append(
            f"S3's ETag {s3_etag} could not be recomputed (its part size is unknown or it is not MD5-based), so "
            f"{only}"
        )
        return _ok(where, got, ("md5", *proofs), words)
    words.append(f"S3's ETag {s3_etag} is the ETag of those bytes{_at(at_part_size)}")
    return _ok(where, got, ("md5", *proofs, "etag"), words)


def _ok(where: str, got: Downloaded, proofs: tuple[str, ...], words: list[str]) -> DeepVerifyFinding:
    return DeepVerifyFinding(
        DeepVerifyOutcome.OK,
        f"{where}: {got.size} bytes with the inventory MD5 {got.md5}; " + "; ".join(words) + f" (proof: "
        f"{'+'.join(proofs)})",
        proofs=proofs,
    )


def _against_checksums(where: str, item: BackupObject, got: Downloaded) -> DeepVerifyFinding | None:
    """A DIFFERS finding when the bytes (whose MD5 is right) are not what the record's checksum or S3's stored
    checksum says; None when they agree or cannot be compared."""
    recorded = item.checksum
    if describes_bytes(recorded, got.crc64nvme, got.at_layout) is False:
        assert recorded is not None
        return DeepVerifyFinding(
            DeepVerifyOutcome.DIFFERS,
            f"the bytes of {where} have the inventory MD5 {got.md5}, but not the {recorded.algorithm} the record "
            f"vouches for ({recorded.value}; these bytes have {_computed(recorded, got)}): the record's checksum "
            "is wrong, so audits by checksum cannot pass. Run the backup again to record the right one.",
            proofs=("md5",),
        )
    stored = got.stored_checksum
    if describes_bytes(stored, got.crc64nvme, got.at_layout) is False:
        assert stored is not None
        return DeepVerifyFinding(
            DeepVerifyOutcome.DIFFERS,
            f"the bytes of {where} are right (MD5 {got.md5} as inventoried), but S3 stores {stored} while these "
            f"bytes have {_computed(stored, got)}: the checksum that audits trust no longer describes the "
            "object. Run the backup again to replace it with a verified copy (in a versioned bucket).",
            proofs=("md5",),
        )
    return None


def _computed(checksum: Checksum, got: Downloaded) -> str:
    """The checksum of the bytes comparable with ``checksum`` (the CRC64NVME, or the one at the layout)."""
    for computed in (got.crc64nvme, got.at_layout):
        if computed is not None and computed.algorithm == checksum.algorithm:
            return computed.value
    return "?"


def _checksum_proofs(item: BackupObject, got: Downloaded) -> tuple[tuple[str, ...], list[str]]:
    """``("checksum",)`` when a checksum (the record's, S3's) was shown to be the bytes', with the words."""
    words = []
    proven = False
    if describes_bytes(item.checksum, got.crc64nvme, got.at_layout):
        assert item.checksum is not None
        words.append(f"the {item.checksum.algorithm} the record vouches for is theirs")
        proven = True
    stored = got.stored_checksum
    if describes_bytes(stored, got.crc64nvme, got.at_layout):
        assert stored is not None
        kind = "full object" if stored.full_object else "composite, recomputed at the object's part layout"
        words.append(f"S3's stored {stored.algorithm} ({kind}) is theirs")
        proven = True
    elif stored is not None:
        why = (
            "its part layout is unknown"
            if stored.algorithm in ("CRC32", "CRC32C")
            else "deep verify computes CRC64NVME, CRC32 and CRC32C only"
        )
        words.append(f"S3's stored {stored} could not be recomputed ({why}): unproven by checksum")
    return (("checksum",) if proven else ()), words


def judge_restored(path: str, item: BackupObject, got: Downloaded) -> DeepVerifyFinding:
    """Whether a restored file may be put in place: its size, MD5 and (when recorded) ETag at the recorded
    part size equal the inventory's. S3's own ETag is deep verification's concern, not the local file's."""
    wrong = _against_inventory(path, item, got)
    if wrong is not None:
        return wrong
    recorded = item.checksum
    agree = describes_bytes(recorded, got.crc64nvme, got.at_layout)
    if agree is False:
        assert recorded is not None
        return DeepVerifyFinding(
            DeepVerifyOutcome.DIFFERS,
            f"{path} has the inventory MD5 {got.md5}, but not the {recorded.algorithm} the record vouches for "
            f"({recorded.value}; these bytes have {_computed(recorded, got)}): the record's checksum is wrong. "
            "Deep-verify the raw file, and run the backup again to record the right one.",
            proofs=("md5",),
        )
    proofs = ("md5", "checksum") if agree else ("md5",)
    also = f" and the record's {recorded.algorithm}" if agree and recorded is not None else ""
    return DeepVerifyFinding(
        DeepVerifyOutcome.OK,
        f"{path}: {got.size} bytes with the inventory MD5{_and_etag(item)}{also}",
        proofs=proofs,
    )


def _and_etag(item: BackupObject) -> str:
    if item.precomputed is None:
        return ""
    return f" and ETag {item.precomputed.etag} at {item.precomputed.part_size_mib} MiB parts"


def _against_inventory(where: str, item: BackupObject, got: Downloaded) -> DeepVerifyFinding | None:
    """A DIFFERS finding when the bytes are not the inventory's (size, MD5, recorded ETag); None if they are."""
    if got.size != item.size:
        return DeepVerifyFinding(
            DeepVerifyOutcome.DIFFERS,
            f"{where} holds {got.size} bytes, the inventory says {item.size}: it is not the acquired file "
            f"{item.path}. {_keep_the_source}",
        )
    if got.md5 != item.md5:
        return DeepVerifyFinding(
            DeepVerifyOutcome.DIFFERS,
            f"the bytes of {where} have MD5 {got.md5}, the inventory says {item.md5}: this copy of {item.path} "
            f"is damaged or was replaced. {_keep_the_source}",
        )
    if item.precomputed is None:
        return None
    recorded = normalize_etag(item.precomputed.etag)
    ours = _etag_at(item.precomputed.part_size, got)
    if etag_part_count(recorded) == 1:  # a one-part multipart upload (…-1) follows from the MD5 alone
        ours = one_part_etag(got.md5)
    if ours is not None and recorded != ours:
        return DeepVerifyFinding(
            DeepVerifyOutcome.DIFFERS,
            f"the bytes of {where} have the inventory MD5 {got.md5}, but the inventory records ETag {recorded} "
            f"at {item.precomputed.part_size_mib} MiB parts while these bytes have {ours}: the record's ETag "
            "is wrong, so HEAD-based checks of it cannot pass. Run the backup again to record the right one.",
        )
    return None


_keep_the_source = (
    "Keep the instrument's copy; restore from another copy or run the backup again from a local copy that "
    "matches the inventory (a versioned bucket keeps the damaged version for inspection)."
)


def _at(part_size: int | None) -> str:
    return f" at {part_size / MIB:g} MiB parts" if part_size else ""


def _etag_at(part_size: int, got: Downloaded) -> str | None:
    """The ETag of the bytes at ``part_size``, if that part size was hashed (or the bytes fit one part)."""
    if got.size <= part_size:
        return got.md5
    etag = got.etags.get(part_size)
    return normalize_etag(etag) if etag else None


def _describes(s3_etag: str, got: Downloaded) -> tuple[bool | None, int | None]:
    """Whether S3's ETag is the ETag of the downloaded bytes: True, False (shown not to be), or None when it
    cannot be recomputed (not MD5-based, or a part size that was not hashed). Also the part size it fits."""
    count = etag_part_count(s3_etag)
    if not _is_md5_etag(s3_etag):
        return None, None
    if count is None:
        return s3_etag == got.md5, None
    if count == 1:
        return s3_etag == one_part_etag(got.md5), None
    for part_size, etag in sorted(got.etags.items()):
        if normalize_etag(etag) == s3_etag:
            return True, part_size
    known = got.object_part_size
    if known is not None and known in got.etags and -(-got.size // known) == count:
        return False, known  # hashed at the object's own part size, and still another ETag
    return None, None


def _is_md5_etag(etag: str) -> bool:
    head, _, count = etag.partition("-")
    return len(head) == 32 and all(c in "0123456789abcdef" for c in head) and (not count or count.isdigit())


# --------------------------------------------------------------------------- sampling


@dataclass(frozen=True)
class SampleCandidate:
    """A raw file that may be deep-verified: its id, its bytes (all files) and when it was last verified."""

    raw_file_id: str
    size: int
    verified_at: datetime | None = None  # UTC; None: never deep-verified


def select_sample(
    candidates: Iterable[SampleCandidate],
    *,
    fraction: float | None = None,
    byte_budget: int | None = None,
) -> list[SampleCandidate]:
    """The raw files to deep-verify in this run: never-verified first, then the longest-unverified.

    :param fraction: verify this share of the candidates (rounded up, so a small archive still gets one).
    :param byte_budget: stop before the total size exceeds this many bytes. The first raw file is always
        taken, even when it alone exceeds the budget: otherwise a raw file larger than the budget would never
        be verified. The order is kept strictly (a smaller, recently verified raw file never jumps ahead of an
        older one), so every raw file comes round in turn.

    With both, whichever limit is reached first ends the sample.
    """
    if fraction is None and byte_budget is None:
        raise InvalidInputError("give a fraction (e.g. 0.05) or a byte budget per run, or both")
    if fraction is not None and not 0 < fraction <= 1:
        raise InvalidInputError(f"fraction must be above 0 and at most 1, got {fraction!r}")
    if byte_budget is not None and (isinstance(byte_budget, bool) or byte_budget <= 0):
        raise InvalidInputError(f"byte_budget must be a positive number of bytes, got {byte_budget!r}")
    ordered = sorted(candidates, key=_oldest_verified_first)
    limit = math.ceil(fraction * len(ordered)) if fraction is not None else len(ordered)
    chosen: list[SampleCandidate] = []
    total = 0
    for candidate in ordered[:limit]:
        if chosen and byte_budget is not None and total + candidate.size > byte_budget:
            break
        chosen.append(candidate)
        total += candidate.size
    return chosen


_NEVER = datetime.min.replace(tzinfo=timezone.utc)


def _oldest_verified_first(candidate: SampleCandidate) -> tuple[bool, datetime, str]:
    moment = candidate.verified_at
    if moment is not None and moment.tzinfo is None:  # pymongo returns naive UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment is not None, moment or _NEVER, candidate.raw_file_id
