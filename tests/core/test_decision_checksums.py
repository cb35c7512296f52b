"""core/decision.py with S3's full-object checksums and the encryption S3 declares (issue 17).

The rule under test: an object is proven by its MD5-derived ETag (only where S3's headers say it is one: no
encryption or SSE-S3) **or** by a full-object CRC64NVME equal to one computed from the inventory's bytes; a
link shown to differ forbids the proof; under SSE-KMS/SSE-C the ETag is ignored whatever its shape, and an
encrypted object without a comparable checksum is refused in words that say so. (Another tool's CRC32/CRC32C
at its part layout: tests/core/test_part_layouts.py.)
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_kraken_s3.core.checksum import ALGORITHM, Checksum, Encryption, encode_crc64
from airflow_provider_kraken_s3.core.decision import (
    Expectation,
    RemoteObject,
    UploadAction,
    after_hashing,
    compare,
    decide,
    prove,
    prove_stored,
)
from airflow_provider_kraken_s3.core.etag import etag_from_part_digests, etag_part_count, normalize_etag
from airflow_provider_kraken_s3.core.manifest import ManifestObject, Proof
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.core.verdict import (
    ExpectedObject,
    ObjectVerdict,
    ProblemKind,
    judge_object,
    verify_objects,
)

SIZE = 12 * MIB + 7
MD5 = hashlib.md5(b"the file").hexdigest()
OTHER_MD5 = hashlib.md5(b"other bytes").hexdigest()
ETAG = etag_from_part_digests([hashlib.md5(f"p{n}".encode()).digest() for n in range(3)], multipart=True)
OTHER_ETAG = etag_from_part_digests(
    [hashlib.md5(f"q{n}".encode()).digest() for n in range(3)], multipart=True
)
#: what S3 answers under SSE-KMS: opaque, though shaped like an MD5 (single PUT) or a multipart ETag
KMS_ETAG = "7d1b8a2c9e4f60312ab5c7d8e9f00112"
KMS_MULTIPART_ETAG = "0f1e2d3c4b5a69788796a5b4c3d2e1f0-3"

CRC = Checksum(ALGORITHM, encode_crc64(0x1234_5678_9ABC_DEF0))
OTHER_CRC = Checksum(ALGORITHM, encode_crc64(0x0FED_CBA9_8765_4321))
COMPOSITE_CRC32 = Checksum("CRC32", "AAAAAA==-3", full_object=False)
FULL_CRC32 = Checksum("CRC32", "AAAAAA==")

INVENTORY = Expectation(size=SIZE, md5=MD5, etag=ETAG, part_size=5 * MIB)
KNOWN = replace(INVENTORY, checksum=CRC)  # the upload's own read, or the manifest's record of it
ENCRYPTED = [Encryption.SSE_KMS, Encryption.SSE_KMS_DSSE, Encryption.SSE_C]

versioned_or_not = pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
encrypted = pytest.mark.parametrize("encryption", ENCRYPTED, ids=[e.name for e in ENCRYPTED])


def _kms(
    etag: str = KMS_MULTIPART_ETAG, *, checksum: Checksum | None = CRC, size: int = SIZE, **kw
) -> RemoteObject:
    return RemoteObject(etag=etag, size=size, checksum=checksum, encryption=Encryption.SSE_KMS, **kw)


# ------------------------------------------------------------------ prove / compare


@encrypted
def test_an_encrypted_object_is_proven_by_its_checksum(encryption: Encryption) -> None:
    remote = replace(_kms(), encryption=encryption)
    evidence = compare(remote, KNOWN)
    assert evidence.by == "checksum" and evidence.differs is None
    assert "full-object CRC64NVME" in (prove(remote, KNOWN) or "")


@encrypted
@pytest.mark.parametrize("etag", [ETAG, MD5, KMS_ETAG], ids=["inventory-etag", "inventory-md5", "opaque"])
def test_the_etag_of_an_encrypted_object_proves_nothing_whatever_its_shape(
    encryption: Encryption, etag: str
) -> None:
    """Even an ETag equal to the inventory's (a coincidence, or a forged listing) is ignored under SSE-KMS."""
    remote = RemoteObject(etag=etag, size=SIZE, encryption=encryption)
    assert prove(remote, INVENTORY) is None
    assert prove(replace(remote, checksum=CRC), INVENTORY) is None  # no checksum of ours to compare with
    assert prove(replace(remote, checksum=CRC), KNOWN) is not None


def test_either_link_proves_on_sse_s3() -> None:
    by_etag = RemoteObject(etag=ETAG, size=SIZE, encryption=Encryption.SSE_S3)
    assert compare(by_etag, INVENTORY).by == "etag"
    by_checksum = RemoteObject(etag=OTHER_ETAG, size=SIZE, checksum=CRC, encryption=Encryption.SSE_S3)
    assert compare(by_checksum, KNOWN).by == "checksum"  # another part size: the checksum still proves


def test_a_link_shown_to_differ_forbids_the_proof() -> None:
    """Evidence is never outweighed: an equal ETag next to another CRC (or an equal CRC next to a single-part
    ETag that is not the MD5) proves nothing."""
    crc_differs = RemoteObject(etag=ETAG, size=SIZE, checksum=OTHER_CRC)
    assert prove(crc_differs, KNOWN) is None
    assert "differs from the file's" in (compare(crc_differs, KNOWN).differs or "")
    md5_differs = RemoteObject(etag=OTHER_MD5, size=SIZE, checksum=CRC)
    assert prove(md5_differs, replace(KNOWN, etag=None)) is None
    assert compare(md5_differs, replace(KNOWN, etag=None)).differs


@pytest.mark.parametrize("stored", [COMPOSITE_CRC32, FULL_CRC32], ids=["composite", "full-object"])
def test_checksums_compare_only_same_algorithm_and_kind(stored: Checksum) -> None:
    """A CRC32 is not compared with our CRC64NVME; one local read computes it (at the object's layout)."""
    remote = _kms(checksum=stored)
    assert prove(remote, KNOWN) is None
    assert compare(remote, KNOWN).differs is None  # nothing shown either
    assert compare(remote, KNOWN).unprovable is None  # the local file can be compared: hash it
    sha = _kms(checksum=Checksum("SHA256", "c2hh"))
    assert "not a full-object CRC64NVME" in (compare(sha, KNOWN).unprovable or "")


def test_a_recorded_composite_is_compared_with_the_stored_one_shown_with_or_without_its_part_count() -> None:
    """The manifest of a skipped object records S3's composite CRC32 (GetObjectAttributes drops the -N)."""
    recorded = replace(INVENTORY, checksum=Checksum("CRC32", "AAAAAA==", full_object=False))
    assert compare(_kms(checksum=COMPOSITE_CRC32), recorded).by == "checksum"
    assert "S3's composite CRC32" in (prove(_kms(checksum=COMPOSITE_CRC32), recorded) or "")
    other = compare(_kms(checksum=Checksum("CRC32", "AAAAAQ==-3", full_object=False)), recorded)
    assert other.differs == "its composite CRC32 AAAAAQ==-3 differs from the file's AAAAAA=="
    assert compare(_kms(checksum=FULL_CRC32), recorded).proven is None  # another kind: not compared


def test_size_differs_before_anything_else() -> None:
    assert compare(_kms(size=SIZE + 1), KNOWN).differs == f"it has {SIZE + 1} bytes, the inventory {SIZE}"


# ------------------------------------------------------------------ decide


@versioned_or_not
def test_decide_skips_an_encrypted_object_whose_checksum_is_the_files(versioned: bool) -> None:
    result = decide(_kms(), KNOWN, versioned=versioned)
    assert result.action is UploadAction.SKIP and "CRC64NVME" in result.reason


@versioned_or_not
@encrypted
def test_decide_refuses_an_encrypted_object_on_a_store_without_checksums(
    versioned: bool, encryption: Encryption
) -> None:
    """Ceph-like: no checksum kept, and an opaque ETag: nothing can prove it or show it differs."""
    remote = replace(_kms(checksum=None), encryption=encryption)
    for expected in (INVENTORY, KNOWN, Expectation(SIZE, None)):
        result = decide(remote, expected, versioned=versioned, part_size_hint=5 * MIB)
        assert result.action is UploadAction.REFUSE
        assert "S3 returned no checksum for it" in result.reason
        assert "is not an MD5 of the bytes" in result.reason
        assert ("SSE-KMS" if encryption is not Encryption.SSE_C else "SSE-C") in result.reason


@versioned_or_not
def test_decide_refuses_an_encrypted_object_with_a_checksum_it_cannot_compute(versioned: bool) -> None:
    result = decide(_kms(checksum=Checksum("SHA256", "c2hh")), INVENTORY, versioned=versioned)
    assert result.action is UploadAction.REFUSE and "not a full-object CRC64NVME" in result.reason


@versioned_or_not
def test_decide_hashes_first_to_compare_the_checksum_of_an_encrypted_object(versioned: bool) -> None:
    """Skip-if-present under KMS with an inventory that has no checksum: one local read computes it."""
    result = decide(_kms(), INVENTORY, versioned=versioned)
    assert result.action is UploadAction.HASH_FIRST and result.checksum
    assert result.part_sizes == (13 * MIB,)  # one whole-file read: the ETag plays no part
    assert "CRC64NVME" in result.reason


@versioned_or_not
def test_an_encrypted_object_whose_checksum_differs_follows_the_usual_policy(versioned: bool) -> None:
    result = decide(_kms(checksum=OTHER_CRC), KNOWN, versioned=versioned)
    assert result.action is (UploadAction.REPLACE if versioned else UploadAction.REFUSE)
    assert "full-object CRC64NVME" in result.reason and "differs" in result.reason
    sized = decide(_kms(size=SIZE - 1), INVENTORY, versioned=versioned)  # another size is shown too
    assert sized.action is (UploadAction.REPLACE if versioned else UploadAction.REFUSE)


@versioned_or_not
def test_a_plain_multipart_object_with_a_checksum_is_compared_in_one_read(versioned: bool) -> None:
    """SSE-S3, part size unknown (no hint, Ceph-like HEAD): the checksum decides whatever the part size; the
    common part sizes are hashed in the same read only to name the ETag's part size."""
    remote = RemoteObject(etag=OTHER_ETAG, size=SIZE, checksum=CRC, encryption=Encryption.SSE_S3)
    result = decide(remote, replace(INVENTORY, etag=None, part_size=None), versioned=versioned)
    assert result.action is UploadAction.HASH_FIRST and result.checksum
    assert result.part_sizes == (5 * MIB,) and not result.part_size_known


@versioned_or_not
def test_a_plain_object_whose_checksum_contradicts_ours_is_a_shown_difference(versioned: bool) -> None:
    remote = RemoteObject(etag=OTHER_ETAG, size=SIZE, checksum=OTHER_CRC)
    result = decide(remote, KNOWN, versioned=versioned)
    assert result.action is (UploadAction.REPLACE if versioned else UploadAction.REFUSE)
    assert "CRC64NVME" in result.reason


# ------------------------------------------------------------------ after hashing


@versioned_or_not
def test_after_hashing_the_files_checksum_decides(versioned: bool) -> None:
    same = after_hashing(
        _kms(), INVENTORY, local_etag=ETAG, local_md5=MD5, versioned=versioned, local_checksum=CRC
    )
    assert same.action is UploadAction.SKIP and "computed in the read that proved its MD5" in same.reason
    other = after_hashing(
        _kms(checksum=OTHER_CRC),
        INVENTORY,
        local_etag=ETAG,
        local_md5=MD5,
        versioned=versioned,
        local_checksum=CRC,
    )
    assert other.action is (UploadAction.REPLACE if versioned else UploadAction.REFUSE)
    assert "differs from the local file's" in other.reason


def test_after_hashing_checks_the_inventory_md5_before_the_checksum() -> None:
    """A local copy that is not the acquired file proves nothing, even with S3's CRC equal to its own."""
    result = after_hashing(
        _kms(), INVENTORY, local_etag=ETAG, local_md5=OTHER_MD5, versioned=True, local_checksum=CRC
    )
    assert result.action is UploadAction.REFUSE and "not the acquired file" in result.reason


def test_after_hashing_an_encrypted_object_without_our_checksum_is_refused() -> None:
    result = after_hashing(_kms(), INVENTORY, local_etag=KMS_MULTIPART_ETAG, local_md5=MD5, versioned=True)
    assert result.action is UploadAction.REFUSE


def test_after_hashing_a_plain_object_by_checksum_whatever_the_part_size() -> None:
    remote = RemoteObject(etag=OTHER_ETAG, size=SIZE, checksum=CRC)
    result = after_hashing(
        remote, INVENTORY, local_etag=ETAG, local_md5=MD5, versioned=False, local_checksum=CRC
    )
    assert result.action is UploadAction.SKIP


# ------------------------------------------------------------------ judge and the sensor's verdict


def test_judge_by_the_recorded_checksum() -> None:
    assert judge_object(_kms(), KNOWN) == (ObjectVerdict.PROVEN, prove(_kms(), KNOWN))
    verdict, detail = judge_object(_kms(checksum=OTHER_CRC), KNOWN)
    assert verdict is ObjectVerdict.DIFFERS and "CRC64NVME" in detail and "SSE-KMS" in detail
    verdict, detail = judge_object(_kms(), INVENTORY)  # a record without a checksum
    assert verdict is ObjectVerdict.DIFFERS and detail.startswith("cannot be proven:")
    assert "no checksum was recorded" in detail
    verdict, detail = judge_object(_kms(checksum=None), KNOWN)
    assert verdict is ObjectVerdict.DIFFERS and "S3 returned no checksum" in detail


def test_the_sensor_verifies_an_encrypted_object_by_the_manifests_checksum() -> None:
    item = ManifestObject(
        path="x.raw",
        key="x.raw",
        size=SIZE,
        md5=MD5,
        etag=KMS_MULTIPART_ETAG,
        part_size=5 * MIB,
        proof=Proof.UPLOADED,
        checksum=CRC,
        encryption=Encryption.SSE_KMS,
    )
    assert ManifestObject.from_document(item.as_document()) == item
    assert item.as_document()["encryption"] == "aws:kms"
    expected = ExpectedObject(
        key=item.key,
        etag=item.etag,
        size=item.size,
        md5=item.md5,
        checksum=item.checksum,
        encryption=item.encryption,
    )
    assert not expected.listing_can_prove
    ok = verify_objects([expected], {item.key: _kms()})
    assert ok.ok and ok.verified[0].checksum == CRC
    bad = verify_objects([expected], {item.key: _kms(checksum=OTHER_CRC)})
    assert [p.kind for p in bad.problems] == [ProblemKind.CHECKSUM]
    assert "CRC64NVME" in str(bad.problems[0]) and str(bad.problems[0]).startswith("x.raw: ")
    # The same ETag in a listing (no encryption, no checksum shown) would pass by ETag: never use one.
    plain = ExpectedObject(key="y", etag=ETAG, size=SIZE)
    assert plain.listing_can_prove


def test_manifest_entries_without_encryption_stay_as_they_were() -> None:
    item = ManifestObject(path="a", key="a", size=1, md5=MD5, etag=MD5)
    assert "encryption" not in item.as_document()
    assert ManifestObject.from_document(item.as_document()).encryption is Encryption.NONE


# ------------------------------------------------------------------ the upload's own check (parts and objects)


def test_prove_stored_by_etag_or_checksum() -> None:
    plain = RemoteObject(etag=ETAG, size=SIZE, encryption=Encryption.SSE_S3)
    assert prove_stored(plain, size=SIZE, etag=ETAG, checksum=None).by == "etag"
    both = replace(plain, checksum=CRC)
    assert prove_stored(both, size=SIZE, etag=ETAG, checksum=CRC).proven
    assert prove_stored(_kms(), size=SIZE, etag=ETAG, checksum=CRC).by == "checksum"


def test_prove_stored_shows_every_difference() -> None:
    """Our part layout: another MD5-derived ETag is corruption, and so is another checksum or size."""
    plain = RemoteObject(etag=OTHER_ETAG, size=SIZE, checksum=CRC)
    assert "the bytes sent give" in (prove_stored(plain, size=SIZE, etag=ETAG, checksum=CRC).differs or "")
    assert prove_stored(_kms(checksum=OTHER_CRC), size=SIZE, etag=ETAG, checksum=CRC).differs
    assert prove_stored(_kms(size=SIZE + 1), size=SIZE, etag=ETAG, checksum=CRC).differs


@encrypted
def test_prove_stored_under_encryption_needs_the_checksum(encryption: Encryption) -> None:
    """A store that keeps no checksum (or a request that could not declare one) under SSE-KMS/SSE-C: the
    upload cannot be proven, and the words say so rather than blaming corruption."""
    stored = replace(_kms(checksum=None), encryption=encryption)
    for ours in (CRC, None):
        evidence = prove_stored(stored, size=SIZE, etag=ETAG, checksum=ours)
        assert evidence.proven is None and evidence.differs is None
        assert "S3 returned no checksum" in (evidence.unprovable or "")
    undeclared = prove_stored(replace(_kms(), encryption=encryption), size=SIZE, etag=ETAG, checksum=None)
    assert undeclared.proven is None and undeclared.unprovable


# ------------------------------------------------------------------ properties, with checksums and encryption

MD5S = [MD5, OTHER_MD5]
ETAGS = [ETAG, OTHER_ETAG, MD5, OTHER_MD5, KMS_ETAG, KMS_MULTIPART_ETAG, "abc"]
SIZES = [0, 7, SIZE]
#: moto's GetObjectAttributes: a composite without its "-N" (then only the ETag's part count names its parts)
UNCOUNTED_CRC32 = Checksum("CRC32", "AAAAAA==", full_object=False)
CHECKSUMS = [CRC, OTHER_CRC, COMPOSITE_CRC32, FULL_CRC32, UNCOUNTED_CRC32]

remotes = st.builds(
    RemoteObject,
    etag=st.sampled_from(ETAGS),
    size=st.sampled_from(SIZES),
    checksum=st.one_of(st.none(), st.sampled_from(CHECKSUMS)),
    encryption=st.sampled_from(list(Encryption)),
)


@st.composite
def expectations(draw: st.DrawFn) -> Expectation:
    etag = draw(st.one_of(st.none(), st.sampled_from([ETAG, OTHER_ETAG, MD5])))
    return Expectation(
        size=draw(st.sampled_from(SIZES)),
        md5=draw(st.one_of(st.none(), st.sampled_from(MD5S))),
        etag=etag,
        part_size=5 * MIB if etag else None,
        checksum=draw(st.one_of(st.none(), st.sampled_from([CRC, OTHER_CRC]))),
    )


FAST = settings(max_examples=300, deadline=None)
hints = st.one_of(st.none(), st.sampled_from([5 * MIB, 8 * MIB]))


@FAST
@given(remote=remotes, expected=expectations(), hint=hints, versioned=st.booleans())
def test_skip_if_and_only_if_proven_and_never_blind(
    remote: RemoteObject, expected: Expectation, hint: int | None, versioned: bool
) -> None:
    result = decide(remote, expected, versioned=versioned, part_size_hint=hint)
    evidence = compare(remote, expected)
    assert (result.action is UploadAction.SKIP) == (evidence.proven is not None)
    assert not (evidence.proven and evidence.differs)
    if not versioned:
        assert result.action is not UploadAction.REPLACE
    if result.action is UploadAction.HASH_FIRST:
        assert remote.size == expected.size and result.part_sizes
    if result.action is UploadAction.SKIP and not remote.encryption.etag_is_md5:
        assert evidence.by == "checksum"
    if result.action is UploadAction.REPLACE:
        # only what was shown to differ, or could not be compared where a verified replacement can be proven
        # (plain ETags; another tool's CRC32/CRC32C: the store keeps checksums)
        assert remote.encryption.etag_is_md5 or evidence.differs or remote.crc_layouts is not None


@FAST
@given(remote=remotes, expected=expectations(), other=st.sampled_from(ETAGS), versioned=st.booleans())
def test_under_sse_kms_and_sse_c_the_etag_never_matters(
    remote: RemoteObject, expected: Expectation, other: str, versioned: bool
) -> None:
    if remote.encryption.etag_is_md5:
        return
    if remote.checksum == UNCOUNTED_CRC32 and etag_part_count(other) != etag_part_count(remote.etag):
        return  # its part count, S3's structure not a digest, names the parts of a composite that shows none
    first = decide(remote, expected, versioned=versioned)
    second = decide(replace(remote, etag=other), expected, versioned=versioned)
    assert (first.action, first.checksum) == (second.action, second.checksum)
    assert judge_object(remote, expected)[0] is judge_object(replace(remote, etag=other), expected)[0]


@FAST
@given(remote=remotes, expected=expectations())
def test_judge_agrees_with_decide(remote: RemoteObject, expected: Expectation) -> None:
    if expected.etag is None and expected.md5 is None and expected.checksum is None:
        return
    skipped = decide(remote, expected, versioned=True).action is UploadAction.SKIP
    assert (judge_object(remote, expected)[0] is ObjectVerdict.PROVEN) == skipped


@FAST
@given(
    remote=remotes,
    expected=expectations(),
    local_etag=st.sampled_from(ETAGS),
    local_md5=st.sampled_from(MD5S),
    local_checksum=st.one_of(st.none(), st.sampled_from([CRC, OTHER_CRC])),
    versioned=st.booleans(),
)
def test_after_hashing_never_skips_without_a_link(
    remote: RemoteObject,
    expected: Expectation,
    local_etag: str,
    local_md5: str,
    local_checksum: Checksum | None,
    versioned: bool,
) -> None:
    result = after_hashing(
        remote,
        expected,
        local_etag=local_etag,
        local_md5=local_md5,
        versioned=versioned,
        local_checksum=local_checksum,
    )
    if not versioned:
        assert result.action is not UploadAction.REPLACE
    if result.action is UploadAction.SKIP:
        assert expected.md5 in (None, local_md5)
        by_checksum = local_checksum is not None and remote.checksum == local_checksum
        by_etag = remote.etag_is_md5_based and normalize_etag(local_etag) == normalize_etag(remote.etag)
        assert by_checksum or by_etag
        if not remote.encryption.etag_is_md5:
            assert by_checksum
