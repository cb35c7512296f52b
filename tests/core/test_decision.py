"""core/decision.py: the one place where "this object is proven in S3" is decided.

The rule under test (see the module docstring): an object is proven without reading the local file only when

* S3's ETag equals the inventory's precomputed ETag and its size the inventory's size, or
* it is a single-part object (ETag = MD5 of its bytes) whose ETag equals the inventory MD5 (same size).

Object metadata (``kraken-md5``, ``kraken-part-size``) is a hint for which part size to hash with, never proof.
These tests pin that rule for the operator (:func:`decide`), the post-hash step (:func:`after_hashing`) and
the sensor's per-object check (:func:`~airflow_provider_kraken_s3.core.verdict.judge_object`), and check with hypothesis that the three can never disagree.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import airflow_provider_kraken_s3.core.decision as decision_module
from airflow_provider_kraken_s3.core.decision import (
    META_MD5,
    META_PART_SIZE,
    Decision,
    Expectation,
    RemoteObject,
    UploadAction,
    after_hashing,
    cannot_compare,
    decide,
    metadata_notes,
    prove,
)
from airflow_provider_kraken_s3.core.etag import (
    etag_from_part_digests,
    etag_part_count,
    normalize_etag,
    one_part_etag,
)
from airflow_provider_kraken_s3.core.part_layouts import candidate_part_sizes
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.core.verdict import ObjectVerdict, judge_object

# ------------------------------------------------------------------ realistic digests

#: A small raw file: sent with a single PUT, so S3's ETag is its MD5.
SMALL_BYTES = b"acquisition 2024-05-01 sample A1, spectrum block 0001"
SMALL_SIZE = len(SMALL_BYTES)
SMALL_MD5 = hashlib.md5(SMALL_BYTES).hexdigest()
OTHER_MD5 = hashlib.md5(b"a different file of no interest").hexdigest()

#: A large raw file: a multipart upload at 5 MiB parts (3 parts), precomputed by alphakraken.
PART = 5 * MIB
BIG_SIZE = 12 * MIB + 7
BIG_MD5 = hashlib.md5(b"the whole big file, stands in for 12 MiB").hexdigest()


def _multipart_etag(tag: str, parts: int) -> str:
    """A real S3-style multipart ETag: MD5 of the concatenated part MD5s, ``-<parts>``."""
    digests = [hashlib.md5(f"{tag} part {n}".encode()).digest() for n in range(1, parts + 1)]
    return etag_from_part_digests(digests, multipart=True)


BIG_ETAG = _multipart_etag("big file at 5 MiB", 3)  # the inventory's precomputed ETag
BIG_ETAG_OTHER = _multipart_etag("someone else's bytes at 5 MiB", 3)  # same layout, other bytes
BIG_ETAG_8MIB = _multipart_etag("big file at 8 MiB", 2)  # same file, other part size: hashed at 8 MiB
BIG_ETAG_ODD = _multipart_etag("big file at an odd part size", 4)  # no common part size gives 4 parts

SMALL = Expectation(size=SMALL_SIZE, md5=SMALL_MD5)
BIG = Expectation(size=BIG_SIZE, md5=BIG_MD5, etag=BIG_ETAG, part_size=PART)
BIG_NO_ETAG = Expectation(size=BIG_SIZE, md5=BIG_MD5)

#: ETags that are not MD5-derived (SSE-KMS / SSE-C objects, odd stores): nothing can be proven with them.
NON_MD5_ETAGS = ["abc", "a" * 40, "0123456789abcdef0123456789abcdef01234567", "x-1", "", f"{SMALL_MD5}-0"]


def _other_action(versioned: bool) -> UploadAction:
    """What an unproven, differing object gets: replaced only where the bucket keeps the old version."""
    return UploadAction.REPLACE if versioned else UploadAction.REFUSE


versioned_or_not = pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])


# ------------------------------------------------------------------ purity


def _imported_top_level(path: Path) -> tuple[set[str], set[str]]:
    """(top-level module names, full provider module names) imported by the file at ``path``."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    provider: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
            if node.module.startswith("airflow_provider_kraken_s3"):
                provider.add(node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names.add(alias.name.split(".")[0])
                if alias.name.startswith("airflow_provider_kraken_s3"):
                    provider.add(alias.name)
    return names, provider


FORBIDDEN_IMPORTS = {"airflow", "boto3", "botocore", "mongoengine", "pymongo", "os", "pathlib", "socket"}


def test_module_is_pure() -> None:
    """The proof rule must be testable and reusable without Airflow, S3, Mongo or the file system."""
    names, _ = _imported_top_level(Path(decision_module.__file__))
    assert not names & FORBIDDEN_IMPORTS


def test_module_is_pure_transitively_within_the_provider() -> None:
    """Purity is only worth something if the provider modules it imports are pure as well."""
    package_root = Path(decision_module.__file__).resolve().parents[2]
    seen: set[str] = set()
    todo = ["airflow_provider_kraken_s3.core.decision"]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = package_root.joinpath(*module.split(".")).with_suffix(".py")
        names, provider = _imported_top_level(path)
        assert not names & FORBIDDEN_IMPORTS, f"{module} imports {names & FORBIDDEN_IMPORTS}"
        todo.extend(provider)
    assert "airflow_provider_kraken_s3.core.etag" in seen


# ------------------------------------------------------------------ prove


def test_prove_precomputed_etag_and_same_size() -> None:
    remote = RemoteObject(etag=f'"{BIG_ETAG}"', size=BIG_SIZE)
    assert prove(remote, BIG) == "S3's ETag and size equal the inventory's"


def test_prove_single_part_etag_is_the_inventory_md5() -> None:
    remote = RemoteObject(etag=f'"{SMALL_MD5}"', size=SMALL_SIZE)
    assert "single-part" in (prove(remote, SMALL) or "")


def test_prove_single_part_precomputed_etag() -> None:
    """A precomputed ETag of a small file has no ``-N``: it is its MD5, and proves like any other."""
    expected = Expectation(size=SMALL_SIZE, md5=SMALL_MD5, etag=SMALL_MD5, part_size=PART)
    assert prove(RemoteObject(etag=SMALL_MD5, size=SMALL_SIZE), expected) is not None


@pytest.mark.parametrize(
    "spelling",
    [
        lambda e: e,
        lambda e: f'"{e}"',
        lambda e: e.upper(),
        lambda e: f'"{e.upper()}"',
        lambda e: f'  "{e}" ',
        lambda e: f'W/"{e}"',
    ],
    ids=["bare", "quoted", "upper", "quoted-upper", "padded", "weak"],
)
def test_prove_ignores_quotes_and_case(spelling) -> None:
    """S3 quotes ETags and some stores upper-case them: neither is a difference in the bytes."""
    assert prove(RemoteObject(etag=spelling(BIG_ETAG), size=BIG_SIZE), BIG) is not None
    assert prove(RemoteObject(etag=spelling(SMALL_MD5), size=SMALL_SIZE), SMALL) is not None
    # ... on the inventory side too.
    upper_inventory = replace(BIG, etag=f'"{BIG_ETAG.upper()}"')
    assert prove(RemoteObject(etag=spelling(BIG_ETAG), size=BIG_SIZE), upper_inventory) is not None


@pytest.mark.parametrize("delta", [-1, 1, 5 * MIB])
def test_prove_needs_the_same_size(delta: int) -> None:
    """An equal ETag with another size is not the inventory's file (truncated, or a forged record)."""
    assert prove(RemoteObject(etag=BIG_ETAG, size=BIG_SIZE + delta), BIG) is None
    assert prove(RemoteObject(etag=SMALL_MD5, size=SMALL_SIZE + delta), SMALL) is None


def test_prove_one_part_multipart_etag_is_not_the_md5() -> None:
    """``<md5>-1`` is the MD5 of one part's MD5, not of the bytes: it never proves via the inventory MD5."""
    assert prove(RemoteObject(etag=f"{SMALL_MD5}-1", size=SMALL_SIZE), SMALL) is None


def test_prove_multipart_etag_never_compared_with_the_md5() -> None:
    """Without a precomputed ETag a multipart object cannot be proven from HEAD, whatever its metadata says."""
    remote = RemoteObject(
        etag=BIG_ETAG, size=BIG_SIZE, metadata={META_MD5: BIG_MD5, META_PART_SIZE: str(PART)}
    )
    assert prove(remote, BIG_NO_ETAG) is None


def test_prove_ignores_metadata_claiming_the_inventory_md5() -> None:
    """Metadata is written by whoever wrote the object: a claim, not a computation over the bytes."""
    single = RemoteObject(etag=OTHER_MD5, size=SMALL_SIZE, metadata={META_MD5: SMALL_MD5})
    multi = RemoteObject(etag=BIG_ETAG_OTHER, size=BIG_SIZE, metadata={META_MD5: BIG_MD5})
    assert prove(single, SMALL) is None
    assert prove(multi, BIG) is None


@pytest.mark.parametrize("etag", NON_MD5_ETAGS)
def test_prove_nothing_with_non_md5_etags(etag: str) -> None:
    """A non-MD5 ETag proves nothing, even when it equals what the inventory (wrongly) holds."""
    assert prove(RemoteObject(etag=etag, size=SMALL_SIZE), Expectation(SMALL_SIZE, etag, etag=etag)) is None


# ------------------------------------------------------------------ decide: upload / skip


@versioned_or_not
def test_decide_uploads_when_nothing_is_there(versioned: bool) -> None:
    for expected in (SMALL, BIG, Expectation(size=3, md5=None)):
        result = decide(None, expected, versioned=versioned, part_size_hint=PART)
        assert result.action is UploadAction.UPLOAD
        assert result.part_size is None and result.replaced_etag is None


@versioned_or_not
@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        (RemoteObject(etag=f'"{BIG_ETAG}"', size=BIG_SIZE), BIG),
        (RemoteObject(etag=BIG_ETAG.upper(), size=BIG_SIZE), BIG),
        (RemoteObject(etag=f'"{SMALL_MD5}"', size=SMALL_SIZE), SMALL),
        (RemoteObject(etag=SMALL_MD5.upper(), size=SMALL_SIZE), SMALL),
    ],
    ids=["precomputed", "precomputed-upper", "single-part", "single-part-upper"],
)
def test_decide_skips_only_what_is_proven(
    versioned: bool, remote: RemoteObject, expected: Expectation
) -> None:
    result = decide(remote, expected, versioned=versioned)
    assert result.action is UploadAction.SKIP
    assert result.reason.startswith("already in S3: ")
    assert result.reason.endswith(prove(remote, expected) or "<unproven>")


def test_decide_skip_still_reports_contradicting_metadata() -> None:
    """The proof wins, but a wrong kraken-md5 on a proven object is worth a warning."""
    remote = RemoteObject(etag=BIG_ETAG, size=BIG_SIZE, metadata={META_MD5: OTHER_MD5})
    result = decide(remote, BIG, versioned=True)
    assert result.action is UploadAction.SKIP
    assert len(result.notes) == 1 and OTHER_MD5 in result.notes[0]


@versioned_or_not
def test_decide_never_skips_on_metadata_single_part(versioned: bool) -> None:
    """Other ETag, same size, kraken-md5 = inventory MD5: the ETag shows other bytes, the claim is ignored."""
    remote = RemoteObject(etag=OTHER_MD5, size=SMALL_SIZE, metadata={META_MD5: SMALL_MD5})
    result = decide(remote, SMALL, versioned=versioned)
    assert result.action is _other_action(versioned)
    assert "inventory MD5" in result.reason


@versioned_or_not
def test_decide_never_skips_on_metadata_multipart_with_part_size_hint(versioned: bool) -> None:
    """Metadata only says which part size to hash at: the local bytes decide."""
    remote = RemoteObject(
        etag=BIG_ETAG_8MIB, size=BIG_SIZE, metadata={META_MD5: BIG_MD5, META_PART_SIZE: str(8 * MIB)}
    )
    for expected in (BIG, BIG_NO_ETAG):
        result = decide(remote, expected, versioned=versioned)
        assert result.action is UploadAction.HASH_FIRST
        assert result.part_size == 8 * MIB


@versioned_or_not
def test_decide_never_skips_on_metadata_multipart_without_hint(versioned: bool) -> None:
    remote = RemoteObject(etag=BIG_ETAG_ODD, size=BIG_SIZE, metadata={META_MD5: BIG_MD5})
    for expected in (BIG, BIG_NO_ETAG):
        result = decide(remote, expected, versioned=versioned)
        assert result.action is _other_action(versioned)
        assert "cannot be compared" in result.reason


@versioned_or_not
@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        (RemoteObject(etag=BIG_ETAG, size=BIG_SIZE - 1), BIG),
        (RemoteObject(etag=SMALL_MD5, size=SMALL_SIZE + 1), SMALL),
        (RemoteObject(etag=BIG_ETAG, size=0), BIG),
    ],
    ids=["precomputed", "single-part", "empty"],
)
def test_decide_equal_etag_other_size_is_not_proven(
    versioned: bool, remote: RemoteObject, expected: Expectation
) -> None:
    result = decide(remote, expected, versioned=versioned, part_size_hint=PART)
    assert result.action is _other_action(versioned)
    assert f"it has {remote.size} bytes, the inventory {expected.size}" in result.reason


# ------------------------------------------------------------------ decide: non-MD5 ETags


@versioned_or_not
@pytest.mark.parametrize("etag", NON_MD5_ETAGS)
def test_decide_refuses_non_md5_etags(versioned: bool, etag: str) -> None:
    """Such an object can neither be proven nor compared: replacing it blind is not allowed, even versioned."""
    for size, expected in ((SMALL_SIZE, SMALL), (BIG_SIZE, BIG), (SMALL_SIZE, Expectation(SMALL_SIZE, None))):
        remote = RemoteObject(
            etag=f'"{etag}"', size=size, metadata={META_MD5: SMALL_MD5, META_PART_SIZE: "1"}
        )
        result = decide(remote, expected, versioned=versioned, part_size_hint=PART)
        assert result.action is UploadAction.REFUSE
        assert "SSE-KMS" in result.reason
        assert "not MD5-based" in result.reason


# ------------------------------------------------------------------ decide: multipart, same size


@versioned_or_not
def test_decide_hashes_at_the_metadata_part_size(versioned: bool) -> None:
    remote = RemoteObject(etag=BIG_ETAG_8MIB, size=BIG_SIZE, metadata={"Kraken-Part-Size": f" {8 * MIB} "})
    result = decide(remote, BIG, versioned=versioned)
    assert result.action is UploadAction.HASH_FIRST
    assert result.part_size == 8 * MIB
    assert str(8 * MIB) in result.reason


@versioned_or_not
def test_decide_hashes_at_the_part_size_s3_reported(versioned: bool) -> None:
    """``part_size_hint`` (HEAD partNumber=1) is S3's own word and takes precedence over our metadata."""
    remote = RemoteObject(etag=BIG_ETAG_8MIB, size=BIG_SIZE)
    assert decide(remote, BIG, versioned=versioned, part_size_hint=8 * MIB).part_size == 8 * MIB
    with_metadata = replace(remote, metadata={META_PART_SIZE: str(6 * MIB)})
    result = decide(with_metadata, BIG_NO_ETAG, versioned=versioned, part_size_hint=8 * MIB)
    assert result.action is UploadAction.HASH_FIRST
    assert result.part_size == 8 * MIB


@versioned_or_not
@pytest.mark.parametrize("source", ["metadata", "s3"])
def test_decide_same_part_size_as_inventory_is_already_a_difference(versioned: bool, source: str) -> None:
    """At the inventory's part size the ETag *is* comparable: another ETag shows other bytes, no hashing."""
    metadata = {META_PART_SIZE: str(PART)} if source == "metadata" else {}
    remote = RemoteObject(etag=f'"{BIG_ETAG_OTHER}"', size=BIG_SIZE, metadata=metadata)
    result = decide(remote, BIG, versioned=versioned, part_size_hint=PART if source == "s3" else None)
    assert result.action is _other_action(versioned)
    assert result.part_size is None
    assert "at the same part size" in result.reason
    assert "cannot be compared" not in result.reason


@versioned_or_not
@pytest.mark.parametrize(
    "expected", [BIG, BIG_NO_ETAG, replace(BIG_NO_ETAG, md5=None)], ids=["etag", "md5", "none"]
)
def test_decide_multipart_without_hint_cannot_be_compared(versioned: bool, expected: Expectation) -> None:
    """Without a part size the local bytes cannot be hashed comparably: say so, never claim a difference."""
    remote = RemoteObject(etag=BIG_ETAG_ODD, size=BIG_SIZE)
    result = decide(remote, expected, versioned=versioned)
    assert result.action is _other_action(versioned)
    assert "cannot be compared" in result.reason
    assert "differs from the local" not in result.reason


@versioned_or_not
@pytest.mark.parametrize("value", ["", "abc", "0", "-5", "5.5", "5 MiB", "0x500000"])
def test_decide_ignores_unusable_part_size_metadata(versioned: bool, value: str) -> None:
    remote = RemoteObject(etag=BIG_ETAG_ODD, size=BIG_SIZE, metadata={META_PART_SIZE: value})
    assert remote.part_size_hint is None
    result = decide(remote, BIG, versioned=versioned)
    assert result.action is _other_action(versioned)
    assert "cannot be compared" in result.reason


def test_decide_ignores_unicode_digit_part_size_metadata() -> None:
    remote = RemoteObject(etag=BIG_ETAG_ODD, size=BIG_SIZE, metadata={META_PART_SIZE: "²"})
    assert decide(remote, BIG, versioned=True).action is UploadAction.REPLACE


@versioned_or_not
def test_decide_does_not_trust_a_part_size_hint_the_etag_contradicts(versioned: bool) -> None:
    # 12 MiB + 7 bytes at 5 MiB parts is 3 parts; this object's ETag says 2 parts (it was written at 8 MiB).
    remote = RemoteObject(etag=BIG_ETAG_8MIB, size=BIG_SIZE, metadata={META_PART_SIZE: str(PART)})
    result = decide(remote, BIG, versioned=versioned)
    assert "at the same part size" not in result.reason


@versioned_or_not
def test_decide_multipart_other_size_does_not_hash(versioned: bool) -> None:
    """A size difference is already shown: hashing the local file would prove nothing more."""
    remote = RemoteObject(etag=BIG_ETAG_8MIB, size=BIG_SIZE + MIB, metadata={META_PART_SIZE: str(8 * MIB)})
    result = decide(remote, BIG, versioned=versioned, part_size_hint=8 * MIB)
    assert result.action is _other_action(versioned)
    assert "bytes, the inventory" in result.reason


# ------------------------------------------------------------------ decide: single part, other ETag


@versioned_or_not
def test_decide_single_part_other_md5_differs(versioned: bool) -> None:
    """A single-part ETag is the MD5 of the bytes: another MD5 at the same size is a shown difference."""
    remote = RemoteObject(etag=f'"{OTHER_MD5}"', size=SMALL_SIZE)
    result = decide(remote, SMALL, versioned=versioned, part_size_hint=PART)
    assert result.action is _other_action(versioned)
    assert OTHER_MD5 in result.reason and SMALL_MD5 in result.reason
    assert "cannot be compared" not in result.reason


@pytest.mark.parametrize(
    "size", [0, 1, SMALL_SIZE, 5 * MIB - 1, 5 * MIB, 5 * MIB + 1, 7 * MIB, 100 * MIB + 3]
)
def test_decide_without_inventory_md5_hashes_the_whole_file(size: int) -> None:
    """A plain upload knows nothing of its file: one whole-file hash (a single part) settles a single-part
    object of the same size."""
    remote = RemoteObject(etag=OTHER_MD5, size=size)
    for versioned in (True, False):
        result = decide(remote, Expectation(size=size, md5=None), versioned=versioned)
        assert result.action is UploadAction.HASH_FIRST
        assert result.part_size is not None
        assert result.part_size >= size
        assert result.part_size % MIB == 0
        assert result.part_size >= 5 * MIB
        assert result.part_size < max(size, 5 * MIB) + MIB  # the smallest such part: no needless waste


@versioned_or_not
def test_decide_without_inventory_md5_other_size(versioned: bool) -> None:
    remote = RemoteObject(etag=OTHER_MD5, size=SMALL_SIZE + 1)
    result = decide(remote, Expectation(size=SMALL_SIZE, md5=None), versioned=versioned)
    assert result.action is _other_action(versioned)


# ------------------------------------------------------------------ decide: replace vs refuse


def test_replace_records_the_replaced_etag_normalised() -> None:
    remote = RemoteObject(etag=f'"{OTHER_MD5.upper()}"', size=SMALL_SIZE)
    result = decide(remote, SMALL, versioned=True)
    assert result.action is UploadAction.REPLACE
    assert result.replaced_etag == OTHER_MD5
    assert "keeps the old version" in result.reason


def test_refuse_on_unversioned_bucket_says_why_and_what_to_do() -> None:
    remote = RemoteObject(etag=OTHER_MD5, size=SMALL_SIZE)
    result = decide(remote, SMALL, versioned=False)
    assert result.action is UploadAction.REFUSE
    assert result.replaced_etag is None
    assert "does not keep old versions" in result.reason
    assert "versioning" in result.reason


# ------------------------------------------------------------------ after_hashing


@versioned_or_not
@pytest.mark.parametrize("remote_etag", [BIG_ETAG_8MIB, BIG_ETAG_OTHER])
def test_after_hashing_local_file_not_the_inventory_file(versioned: bool, remote_etag: str) -> None:
    """A local copy with another MD5 proves nothing and must never replace anything, even if the ETags match."""
    remote = RemoteObject(etag=remote_etag, size=BIG_SIZE)
    result = after_hashing(remote, BIG, local_etag=remote_etag, local_md5=OTHER_MD5, versioned=versioned)
    assert result.action is UploadAction.REFUSE
    assert "not the acquired file" in result.reason
    assert OTHER_MD5 in result.reason and BIG_MD5 in result.reason


@versioned_or_not
@pytest.mark.parametrize("expected", [BIG, replace(BIG, md5=None)], ids=["inventory", "plain"])
def test_after_hashing_equal_etags_skip(versioned: bool, expected: Expectation) -> None:
    remote = RemoteObject(etag=f'"{BIG_ETAG_8MIB.upper()}"', size=BIG_SIZE)
    result = after_hashing(remote, expected, local_etag=BIG_ETAG_8MIB, local_md5=BIG_MD5, versioned=versioned)
    assert result.action is UploadAction.SKIP
    assert result.reason.startswith("already in S3")


@versioned_or_not
@pytest.mark.parametrize("expected", [BIG, replace(BIG, md5=None)], ids=["inventory", "plain"])
def test_after_hashing_other_etag_differs(versioned: bool, expected: Expectation) -> None:
    remote = RemoteObject(etag=BIG_ETAG_OTHER, size=BIG_SIZE)
    result = after_hashing(remote, expected, local_etag=BIG_ETAG, local_md5=BIG_MD5, versioned=versioned)
    assert result.action is _other_action(versioned)
    assert BIG_ETAG in result.reason and BIG_ETAG_OTHER in result.reason
    if versioned:
        assert result.replaced_etag == BIG_ETAG_OTHER


@versioned_or_not
def test_after_hashing_plain_upload_skips_the_md5_check(versioned: bool) -> None:
    """Without an inventory there is no MD5 to hold the local file to: only the ETags are compared."""
    remote = RemoteObject(etag=OTHER_MD5, size=SMALL_SIZE)
    plain = Expectation(size=SMALL_SIZE, md5=None)
    skip = after_hashing(remote, plain, local_etag=OTHER_MD5, local_md5=OTHER_MD5, versioned=versioned)
    assert skip.action is UploadAction.SKIP
    differ = after_hashing(remote, plain, local_etag=SMALL_MD5, local_md5=SMALL_MD5, versioned=versioned)
    assert differ.action is _other_action(versioned)
    assert "not the acquired file" not in differ.reason


def test_hash_first_then_after_hashing_round_trip() -> None:
    """The two steps together: metadata hint -> hash at that part size -> the local ETag decides."""
    remote = RemoteObject(etag=BIG_ETAG_8MIB, size=BIG_SIZE, metadata={META_PART_SIZE: str(8 * MIB)})
    first = decide(remote, BIG, versioned=True)
    assert first.action is UploadAction.HASH_FIRST and first.part_size == 8 * MIB
    same = after_hashing(remote, BIG, local_etag=BIG_ETAG_8MIB, local_md5=BIG_MD5, versioned=True)
    assert same.action is UploadAction.SKIP
    other = after_hashing(remote, BIG, local_etag=_multipart_etag("x", 2), local_md5=BIG_MD5, versioned=False)
    assert other.action is UploadAction.REFUSE


# ------------------------------------------------------------------ judge_object (the sensor, core/verdict.py)


def test_judge_missing() -> None:
    assert judge_object(None, BIG) == (ObjectVerdict.MISSING, "object missing")


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        (RemoteObject(etag=f'"{BIG_ETAG.upper()}"', size=BIG_SIZE), BIG),
        (RemoteObject(etag=f'"{SMALL_MD5}"', size=SMALL_SIZE), SMALL),
    ],
)
def test_judge_proven_with_the_same_words_as_prove(remote: RemoteObject, expected: Expectation) -> None:
    assert judge_object(remote, expected) == (ObjectVerdict.PROVEN, prove(remote, expected))


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        (RemoteObject(etag=BIG_ETAG_OTHER, size=BIG_SIZE, metadata={META_MD5: BIG_MD5}), BIG),
        (RemoteObject(etag=BIG_ETAG, size=BIG_SIZE + 1), BIG),
        (RemoteObject(etag=OTHER_MD5, size=SMALL_SIZE, metadata={META_MD5: SMALL_MD5}), SMALL),
        (RemoteObject(etag=BIG_ETAG, size=BIG_SIZE, metadata={META_PART_SIZE: str(PART)}), BIG_NO_ETAG),
        (RemoteObject(etag="a" * 40, size=SMALL_SIZE), SMALL),
    ],
    ids=["metadata-md5", "other-size", "single-part-metadata", "multipart-no-precomputed", "kms"],
)
def test_judge_differs_and_says_what_was_expected_and_found(
    remote: RemoteObject, expected: Expectation
) -> None:
    verdict, detail = judge_object(remote, expected)
    assert verdict is ObjectVerdict.DIFFERS
    wanted = normalize_etag(expected.etag or expected.md5 or "")
    assert detail == (
        f"expected ETag {wanted}, {expected.size} bytes, found ETag {normalize_etag(remote.etag)}, {remote.size} bytes"
    )


def test_judge_without_etag_or_md5_differs_rather_than_crashes() -> None:
    remote = RemoteObject(etag=OTHER_MD5, size=SMALL_SIZE)
    assert judge_object(remote, Expectation(size=SMALL_SIZE, md5=None))[0] is ObjectVerdict.DIFFERS


# ------------------------------------------------------------------ metadata_notes


@pytest.mark.parametrize("key", [META_MD5, "Kraken-MD5", "KRAKEN-MD5", "kraken-Md5"])
def test_metadata_notes_flags_a_contradicting_md5(key: str) -> None:
    remote = RemoteObject(etag=BIG_ETAG, size=BIG_SIZE, metadata={key: OTHER_MD5.upper()})
    notes = metadata_notes(remote, BIG)
    assert len(notes) == 1
    assert OTHER_MD5 in notes[0] and BIG_MD5 in notes[0]
    assert "hint" in notes[0]


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, BIG),
        ({META_MD5: BIG_MD5}, BIG),
        ({"KRAKEN-MD5": f" {BIG_MD5.upper()} "}, BIG),
        ({META_MD5: OTHER_MD5}, replace(BIG, md5=None)),
        ({META_PART_SIZE: str(PART), "other": OTHER_MD5}, BIG),
    ],
    ids=["none", "equal", "equal-upper-padded", "no-inventory-md5", "other-keys"],
)
def test_metadata_notes_empty_otherwise(metadata: dict[str, str], expected: Expectation) -> None:
    assert metadata_notes(RemoteObject(etag=BIG_ETAG, size=BIG_SIZE, metadata=metadata), expected) == []


def test_decide_passes_metadata_notes_on_for_every_existing_object() -> None:
    remote = RemoteObject(etag=BIG_ETAG_OTHER, size=BIG_SIZE, metadata={META_MD5: OTHER_MD5})
    for part_size_hint in (None, PART, 8 * MIB):
        for versioned in (True, False):
            result = decide(remote, BIG, versioned=versioned, part_size_hint=part_size_hint)
            assert result.notes == tuple(metadata_notes(remote, BIG))
            assert result.notes


# ------------------------------------------------------------------ properties (hypothesis)

#: Small pools so that hypothesis often hits equal digests and sizes, i.e. the interesting cases.
MD5S = [SMALL_MD5, OTHER_MD5, BIG_MD5]
MULTIPART_ETAGS = [BIG_ETAG, BIG_ETAG_OTHER, BIG_ETAG_8MIB, f"{SMALL_MD5}-1"]
SIZES = [0, 1, SMALL_SIZE, 5 * MIB, BIG_SIZE]
PART_SIZES = [PART, 8 * MIB, 16 * MIB]


@st.composite
def etag_spellings(draw: st.DrawFn) -> str:
    """An ETag as a store may return it: MD5-based (quoted or upper-cased at will) or not MD5-based."""
    etag = draw(st.sampled_from(MD5S + MULTIPART_ETAGS + NON_MD5_ETAGS))
    if draw(st.booleans()):
        etag = etag.upper()
    if draw(st.booleans()):
        etag = f'"{etag}"'
    return etag


metadata_values = st.one_of(
    st.sampled_from(MD5S),
    st.sampled_from([str(p) for p in PART_SIZES]),
    st.sampled_from(["", "0", "abc", "-1"]),
)
metadata_keys = st.sampled_from([META_MD5, META_PART_SIZE, "Kraken-MD5", "KRAKEN-PART-SIZE", "x-other"])

remotes = st.builds(
    RemoteObject,
    etag=etag_spellings(),
    size=st.sampled_from(SIZES),
    metadata=st.dictionaries(metadata_keys, metadata_values, max_size=3),
)


@st.composite
def expectations(draw: st.DrawFn) -> Expectation:
    """Any inventory entry: with or without MD5, with or without a precomputed ETag and its part size."""
    md5 = draw(st.one_of(st.none(), st.sampled_from(MD5S)))
    etag = draw(st.one_of(st.none(), st.sampled_from(MD5S + MULTIPART_ETAGS)))
    part_size = draw(st.sampled_from(PART_SIZES)) if etag is not None else None
    return Expectation(size=draw(st.sampled_from(SIZES)), md5=md5, etag=etag, part_size=part_size)


hints = st.one_of(st.none(), st.sampled_from(PART_SIZES))
FAST = settings(max_examples=150, deadline=None)


@FAST
@given(remote=st.one_of(st.none(), remotes), expected=expectations(), hint=hints)
def test_unversioned_bucket_is_never_replaced(
    remote: RemoteObject | None, expected: Expectation, hint: int | None
) -> None:
    assert decide(remote, expected, versioned=False, part_size_hint=hint).action is not UploadAction.REPLACE


@FAST
@given(remote=remotes, expected=expectations(), hint=hints, versioned=st.booleans())
def test_skip_if_and_only_if_proven(
    remote: RemoteObject, expected: Expectation, hint: int | None, versioned: bool
) -> None:
    """The operator skips exactly what :func:`prove` proves, whatever the bucket or the hints."""
    result = decide(remote, expected, versioned=versioned, part_size_hint=hint)
    assert (result.action is UploadAction.SKIP) == (prove(remote, expected) is not None)
    if result.action is UploadAction.SKIP:
        assert remote.size == expected.size
        assert remote.etag_is_md5_based


@FAST
@given(remote=remotes, expected=expectations())
def test_metadata_never_changes_the_proof(remote: RemoteObject, expected: Expectation) -> None:
    """Stripping all metadata changes nothing about what is proven."""
    assert prove(remote, expected) == prove(replace(remote, metadata={}), expected)


@FAST
@given(remote=remotes, expected=expectations(), hint=hints, versioned=st.booleans())
def test_decision_is_well_formed(
    remote: RemoteObject, expected: Expectation, hint: int | None, versioned: bool
) -> None:
    result = decide(remote, expected, versioned=versioned, part_size_hint=hint)
    assert isinstance(result, Decision) and result.reason
    assert result.action is not UploadAction.UPLOAD  # something is there
    assert result.notes == tuple(metadata_notes(remote, expected))
    if result.action is UploadAction.HASH_FIRST:
        assert result.part_sizes and all(size > 0 for size in result.part_sizes)
        assert remote.size == expected.size  # a size difference needs no hashing
    else:
        assert result.part_sizes == ()
    if result.action is UploadAction.REPLACE:
        assert versioned
        assert result.replaced_etag == normalize_etag(remote.etag)
    else:
        assert result.replaced_etag is None
    if not remote.etag_is_md5_based and remote.size == expected.size:  # nothing compares: never blind
        assert result.action is UploadAction.REFUSE and "SSE-KMS" in result.reason
    elif not remote.etag_is_md5_based:  # another size is a shown difference: the usual policy
        assert result.action is _other_action(versioned)


@FAST
@given(remote=remotes, expected=expectations(), hint=hints, versioned=st.booleans())
def test_multipart_without_any_hint_is_never_claimed_different(
    remote: RemoteObject, expected: Expectation, hint: int | None, versioned: bool
) -> None:
    """Same size, multipart, no part size known and not proven: the words say "cannot be compared"."""
    bare = replace(remote, metadata={k: v for k, v in remote.metadata.items() if "part" not in k.lower()})
    if not (bare.is_multipart and bare.etag_is_md5_based and bare.size == expected.size):
        return
    if prove(bare, expected) is not None:
        return
    result = decide(bare, expected, versioned=versioned)
    if result.action is UploadAction.HASH_FIRST:  # guesses tried in one pass, or a one-part object (exact)
        assert result.part_sizes and result.part_size_known == (etag_part_count(bare.etag) == 1)
        return
    assert result.action is _other_action(versioned)
    assert "cannot be compared" in result.reason


@FAST
@given(remote=remotes, expected=expectations())
def test_judge_agrees_with_decide(remote: RemoteObject, expected: Expectation) -> None:
    """The sensor and the operator share the proof: PROVEN exactly when the upload would be skipped."""
    if expected.etag is None and expected.md5 is None:
        return  # see test_judge_without_etag_or_md5_differs_rather_than_crashes
    verdict, _ = judge_object(remote, expected)
    skipped = decide(remote, expected, versioned=True).action is UploadAction.SKIP
    assert (verdict is ObjectVerdict.PROVEN) == skipped
    assert verdict is not ObjectVerdict.MISSING


@FAST
@given(
    remote=remotes,
    expected=expectations(),
    local_etag=etag_spellings(),
    local_md5=st.sampled_from(MD5S),
    versioned=st.booleans(),
)
def test_after_hashing_properties(
    remote: RemoteObject, expected: Expectation, local_etag: str, local_md5: str, versioned: bool
) -> None:
    result = after_hashing(remote, expected, local_etag=local_etag, local_md5=local_md5, versioned=versioned)
    assert result.action in {UploadAction.SKIP, UploadAction.REPLACE, UploadAction.REFUSE}
    if not versioned:
        assert result.action is not UploadAction.REPLACE
    if expected.md5 is not None and local_md5 != expected.md5:
        assert result.action is UploadAction.REFUSE and "not the acquired file" in result.reason
    elif not remote.etag_is_md5_based:  # an ETag that proves nothing is never compared, even when equal
        assert (
            result.action is UploadAction.REFUSE and "neither be proven equal nor compared" in result.reason
        )
    elif normalize_etag(local_etag) == normalize_etag(remote.etag):
        assert result.action is UploadAction.SKIP
    else:
        assert result.action is _other_action(versioned)


@versioned_or_not
def test_an_unknown_part_size_is_tried_among_the_common_ones(versioned: bool) -> None:
    """Ceph RGW ignores HEAD partNumber and boto3 writes no hint: the common sizes that give the object's
    part count are hashed in one pass; a mismatch there is a guess that failed, not a shown difference."""
    result = decide(RemoteObject(etag=BIG_ETAG_8MIB, size=BIG_SIZE), BIG_NO_ETAG, versioned=versioned)
    assert result.action is UploadAction.HASH_FIRST and result.part_sizes == (8 * MIB,)
    assert not result.part_size_known and result.part_size == 8 * MIB
    assert candidate_part_sizes(BIG_SIZE, 3) == (5 * MIB,) and candidate_part_sizes(BIG_SIZE, 4) == ()
    # The inventory's own part size was already compared (its ETag differs): not tried again.
    other = decide(RemoteObject(etag=BIG_ETAG_OTHER, size=BIG_SIZE), BIG, versioned=versioned)
    assert other.action is not UploadAction.HASH_FIRST


def test_a_one_part_multipart_object_is_compared_through_the_md5() -> None:
    """alphakraken's uploader makes ``…-1`` objects for files exactly its threshold in size."""
    md5 = hashlib.md5(b"x" * 10).hexdigest()
    assert one_part_etag(md5) == f"{hashlib.md5(bytes.fromhex(md5)).hexdigest()}-1"
    result = decide(
        RemoteObject(etag=one_part_etag(md5), size=10), Expectation(size=10, md5=md5), versioned=False
    )
    assert (
        result.action is UploadAction.HASH_FIRST
        and result.part_size_known
        and result.part_sizes == (5 * MIB,)
    )


@versioned_or_not
def test_when_no_guessed_part_size_matches_the_object_is_never_overwritten_unversioned(
    versioned: bool,
) -> None:
    """After the common part sizes were tried in vain, the engine must not decide to hash again (and then
    upload): nothing is proven and nothing shown to differ, so an unversioned bucket refuses."""
    remote = RemoteObject(etag=BIG_ETAG_8MIB, size=BIG_SIZE)
    result = cannot_compare(remote, BIG_NO_ETAG, versioned=versioned)
    assert result.action is _other_action(versioned) and "cannot be compared" in result.reason
