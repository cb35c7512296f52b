"""core/part_layouts.py and the upload decision for objects other tools wrote with CRC32/CRC32C checksums
(issue 17): under SSE-KMS/SSE-C only their checksum can prove them, and one local read computes it at the
object's part layout — the one S3 lists (a mismatch there shows a difference), or the common part sizes that
give its part count (a mismatch there shows nothing: the object cannot be compared).

The CRCs here are computed with zlib from real bytes, independently of the provider's own CRC code.
"""

from __future__ import annotations

import base64
import hashlib
import random
import zlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_kraken_s3.core.checksum import Checksum, Encryption
from airflow_provider_kraken_s3.core.decision import (
    Expectation,
    RemoteObject,
    UploadAction,
    after_hashing,
    decide,
    stored_checksum,
)
from airflow_provider_kraken_s3.core.part_layouts import (
    CrcLayout,
    candidate_part_sizes,
    crc_layouts,
    needs_listed_parts,
)
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.core.proof import checksums_agree

DATA = random.Random(17).randbytes(2 * 5 * MIB + 999)  # three parts at 5 MiB, two at 8 MiB
OTHER = DATA[:-1] + bytes([DATA[-1] ^ 1])
SIZE = len(DATA)
MD5 = hashlib.md5(DATA).hexdigest()
KMS_ETAG = "0f1e2d3c4b5a69788796a5b4c3d2e1f0-3"  # opaque, its part count kept (as S3 does)

versioned_or_not = pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])


def b64(value: int) -> str:
    return base64.b64encode(value.to_bytes(4, "big")).decode()


def composite(data: bytes, part_size: int, *, shown: bool = True) -> Checksum:
    """S3's composite CRC32 of ``data`` uploaded in ``part_size`` parts (moto's answers omit the ``-N``)."""
    parts = [zlib.crc32(data[i : i + part_size]) for i in range(0, len(data), part_size)]
    value = b64(zlib.crc32(b"".join(p.to_bytes(4, "big") for p in parts)))
    return Checksum("CRC32", f"{value}-{len(parts)}" if shown else value, full_object=False)


def kms(checksum: Checksum, *, etag: str = KMS_ETAG, parts: tuple[int, ...] = ()) -> RemoteObject:
    return RemoteObject(etag, SIZE, checksum=checksum, encryption=Encryption.SSE_KMS, parts=parts)


def computed(layouts: tuple[CrcLayout, ...], data: bytes = DATA) -> list[tuple[CrcLayout, Checksum]]:
    """The local file's CRC at each layout, as the hash-first read computes it."""
    out = []
    for layout in layouts:
        if not layout.composite:
            out.append((layout, Checksum(layout.algorithm, b64(zlib.crc32(data)))))
        else:
            out.append((layout, composite(data, layout.parts[0])))
    return out


INVENTORY = Expectation(size=SIZE, md5=MD5)


def hashed_then_decided(
    remote: RemoteObject,
    layouts: tuple[CrcLayout, ...],
    *,
    versioned: bool,
    data: bytes = DATA,
    md5: str = MD5,
):
    """:func:`after_hashing` once the hash-first read of a local file holding ``data`` (MD5 ``md5``) computed
    its CRC at ``layouts``."""
    return after_hashing(
        remote,
        INVENTORY,
        local_etag="",
        local_md5=md5,
        versioned=versioned,
        at_layouts=computed(layouts, data),
    )


# ------------------------------------------------------------------ which layouts


def test_a_full_object_crc_needs_no_layout() -> None:
    crc = crc_layouts(Checksum("CRC32C", "AAAAAA=="), SIZE)
    assert crc is not None and crc.known and crc.layouts == (CrcLayout.whole("CRC32C", SIZE),)
    assert crc_layouts(Checksum("CRC64NVME", "AAAAAAAAAAA="), SIZE) is None  # ours: not a 32-bit CRC
    assert crc_layouts(None, SIZE) is None


def test_the_parts_s3_lists_are_the_layout() -> None:
    listed = (4 * MIB, 4 * MIB, SIZE - 8 * MIB)  # not a common part size: S3 says so
    crc = crc_layouts(composite(DATA, 4 * MIB), SIZE, listed=listed)
    assert crc is not None and crc.known and crc.layouts == (CrcLayout("CRC32", listed),)
    assert crc.at(crc.layouts[0]) == "at the 3 part sizes S3 lists"
    # A listing that does not add up to the object (or to its part count) is not believed.
    wrong = crc_layouts(composite(DATA, 4 * MIB), SIZE, listed=(4 * MIB, 4 * MIB))
    assert wrong is not None and not wrong.known


@pytest.mark.parametrize("shown", [True, False], ids=["count in the checksum", "count from the ETag"])
def test_unknown_parts_are_guessed_at_the_common_sizes_giving_the_part_count(shown: bool) -> None:
    stored = composite(DATA, 5 * MIB, shown=shown)
    crc = crc_layouts(stored, SIZE, etag_parts=3)
    assert crc is not None and not crc.known
    assert crc.layouts == tuple(CrcLayout.uniform("CRC32", SIZE, p) for p in candidate_part_sizes(SIZE, 3))
    assert crc.layouts == (CrcLayout.uniform("CRC32", SIZE, 5 * MIB),)
    assert crc.at(crc.layouts[0]) == "at 3 parts of 5 MiB"


def test_a_composite_of_one_part_is_known() -> None:
    crc = crc_layouts(Checksum("CRC32", "AAAAAA==-1", full_object=False), SIZE)
    assert crc is not None and crc.known and crc.layouts == (CrcLayout("CRC32", (SIZE,)),)
    assert crc.at(crc.layouts[0]) == "as one part"


def test_a_composite_whose_layout_cannot_be_found_says_why() -> None:
    uncommon = crc_layouts(composite(DATA, 3 * MIB), SIZE)  # 4 parts: no common size gives 4 of 10 MiB
    assert uncommon is not None and uncommon.layouts == ()
    assert (
        "S3 does not list" in uncommon.unknown and "cuts 10486759 bytes into its 4 parts" in uncommon.unknown
    )
    uncounted = crc_layouts(composite(DATA, 5 * MIB, shown=False), SIZE)
    assert uncounted is not None and "its part count is unknown" in uncounted.unknown


def test_attributes_are_asked_for_only_where_head_cannot_tell() -> None:
    assert needs_listed_parts(Checksum("CRC32", "x"), multipart=True)  # HEAD may hide that it is composite
    assert needs_listed_parts(Checksum("CRC32C", "x-3", full_object=False), multipart=False)
    assert not needs_listed_parts(Checksum("CRC32", "x"), multipart=False)  # a single PUT's: whole object
    assert not needs_listed_parts(Checksum("CRC64NVME", "x"), multipart=True)  # ours: full object always
    assert not needs_listed_parts(None, multipart=True)


# ------------------------------------------------------------------ decide, then decide again after one read


@pytest.mark.parametrize(
    "stored",
    [
        composite(DATA, 5 * MIB),
        composite(DATA, 5 * MIB, shown=False),
        Checksum("CRC32", b64(zlib.crc32(DATA))),
    ],
    ids=["composite", "composite without -N", "full object"],
)
@versioned_or_not
def test_an_encrypted_object_of_another_tool_is_hashed_then_skipped(
    stored: Checksum, versioned: bool
) -> None:
    remote = kms(stored)
    first = decide(remote, INVENTORY, versioned=versioned)
    assert first.action is UploadAction.HASH_FIRST and first.checksum and first.layouts
    assert first.part_sizes == (11 * MIB,)  # one whole-file read: the opaque ETag plays no part
    assert f"S3's {'full-object' if stored.full_object else 'composite'} CRC32" in first.reason
    after = hashed_then_decided(remote, first.layouts, versioned=versioned)
    assert after.action is UploadAction.SKIP
    assert after.reason.startswith("already in S3: S3's ") and "which have the inventory MD5" in after.reason
    where = "over the whole file" if stored.full_object else "at 3 parts of 5 MiB"
    assert f"equal those of the local bytes {where}" in after.reason
    assert stored_checksum(remote) == stored  # what the manifest records, composite too


@versioned_or_not
def test_one_byte_other_at_a_guessed_layout_cannot_be_compared(versioned: bool) -> None:
    remote = kms(composite(DATA, 5 * MIB))
    layouts = decide(remote, INVENTORY, versioned=versioned).layouts
    after = hashed_then_decided(remote, layouts, versioned=versioned, data=OTHER)
    assert after.action is (UploadAction.REPLACE if versioned else UploadAction.REFUSE)
    assert "equals the local file's at none of the common part sizes" in after.reason
    assert "nothing is shown to differ: it cannot be compared with the local file" in after.reason


@versioned_or_not
def test_one_byte_other_at_the_listed_layout_is_a_shown_difference(versioned: bool) -> None:
    parts = (5 * MIB, 5 * MIB, SIZE - 10 * MIB)
    remote = kms(composite(DATA, 5 * MIB), parts=parts)
    layouts = decide(remote, INVENTORY, versioned=versioned).layouts
    assert layouts == (CrcLayout("CRC32", parts),)
    after = hashed_then_decided(remote, layouts, versioned=versioned, data=OTHER)
    assert after.action is (UploadAction.REPLACE if versioned else UploadAction.REFUSE)
    assert (
        f"its composite CRC32 {composite(DATA, 5 * MIB).value} differs from the local file's" in after.reason
    )
    assert "at the 3 part sizes S3 lists" in after.reason


def test_the_inventory_md5_comes_first() -> None:
    remote = kms(composite(DATA, 5 * MIB))
    layouts = decide(remote, INVENTORY, versioned=True).layouts
    after = hashed_then_decided(remote, layouts, versioned=True, md5=hashlib.md5(OTHER).hexdigest())
    assert after.action is UploadAction.REFUSE and "not the acquired file" in after.reason


@versioned_or_not
def test_a_composite_of_unknown_layout_follows_the_policy_without_a_read(versioned: bool) -> None:
    remote = kms(composite(DATA, 3 * MIB), etag="0f1e2d3c4b5a69788796a5b4c3d2e1f0-4")
    result = decide(remote, INVENTORY, versioned=versioned)
    assert result.action is (UploadAction.REPLACE if versioned else UploadAction.REFUSE)
    assert "its composite CRC32" in result.reason and "S3 does not list" in result.reason
    if not versioned:
        assert "Enable versioning on the bucket" in result.reason


def test_a_recorded_composite_needs_no_read() -> None:
    """A re-run after the skip: the manifest's composite proves the object by HEAD alone."""
    recorded = replace(INVENTORY, checksum=composite(DATA, 5 * MIB, shown=False))
    result = decide(kms(composite(DATA, 5 * MIB)), recorded, versioned=False)
    assert result.action is UploadAction.SKIP and "S3's composite CRC32" in result.reason


# ------------------------------------------------------------------ property: no skip without a CRC that agrees

STORED = [composite(DATA, 5 * MIB), composite(DATA, 8 * MIB), composite(OTHER, 5 * MIB, shown=False)]
LAYOUTS = [CrcLayout.uniform("CRC32", SIZE, 5 * MIB), CrcLayout.uniform("CRC32", SIZE, 8 * MIB)]
LOCAL = [(layout, checksum) for data in (DATA, OTHER) for layout, checksum in computed(tuple(LAYOUTS), data)]


@settings(max_examples=200, deadline=None)
@given(
    stored=st.sampled_from(STORED),
    listed=st.booleans(),
    local=st.lists(st.sampled_from(LOCAL), max_size=3),
    local_md5=st.sampled_from([MD5, hashlib.md5(OTHER).hexdigest()]),
    versioned=st.booleans(),
)
def test_after_hashing_skips_only_on_a_crc_that_agrees(
    stored: Checksum, listed: bool, local: list, local_md5: str, versioned: bool
) -> None:
    parts = (5 * MIB, 5 * MIB, SIZE - 10 * MIB) if listed else ()
    remote = kms(stored, parts=parts)
    result = after_hashing(
        remote, INVENTORY, local_etag="", local_md5=local_md5, versioned=versioned, at_layouts=local
    )
    if not versioned:
        assert result.action is not UploadAction.REPLACE
    if result.action is UploadAction.SKIP:
        assert local_md5 == MD5 and any(checksums_agree(c, stored) for _, c in local)
