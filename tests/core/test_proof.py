"""core/proof.py and the checksum parts of the readers' verdicts (core/audit.py, core/fixity.py). Pure."""

from __future__ import annotations

import hashlib

import pytest

from airflow_provider_kraken_s3.core.audit import (
    AuditFindingKind,
    AuditTarget,
    compare,
    needs_a_closer_look,
    stored_proof,
)
from airflow_provider_kraken_s3.core.checksum import Checksum, Encryption
from airflow_provider_kraken_s3.core.decision import RemoteObject
from airflow_provider_kraken_s3.core.deep_verify import (
    DeepVerifyOutcome,
    Downloaded,
    judge_download,
    judge_restored,
)
from airflow_provider_kraken_s3.core.inventory import BackupObject
from airflow_provider_kraken_s3.core.proof import (
    ProofKind,
    by_checksum,
    cannot_prove,
    checksums_agree,
    describes_bytes,
)
from airflow_provider_kraken_s3.core.verdict import ExpectedObject

DATA = b"instrument bytes" * 1000
MD5 = hashlib.md5(DATA).hexdigest()
CRC = Checksum("CRC64NVME", "AAAAAAAAAAE=")
OTHER = Checksum("CRC64NVME", "AAAAAAAAAAI=")
OPAQUE = "0123456789abcdef0123456789abcdef"


def test_checksums_agree_only_when_comparable() -> None:
    assert checksums_agree(CRC, CRC) is True
    assert checksums_agree(CRC, OTHER) is False
    assert checksums_agree(CRC, None) is None
    assert checksums_agree(CRC, Checksum("CRC32", "AAAAAQ==")) is None
    composite = Checksum("CRC32", "AAAAAQ==-3", full_object=False)
    assert checksums_agree(composite, Checksum("CRC32", "AAAAAQ==", full_object=False)) is True  # "-N" hidden
    assert checksums_agree(composite, Checksum("CRC32", "AAAAAQ==-4", full_object=False)) is False
    assert checksums_agree(composite, Checksum("CRC32", "AAAAAQ==", full_object=True)) is None


def test_by_checksum_decides_whatever_the_etag_and_falls_back_without_one() -> None:
    proven = by_checksum(len(DATA), CRC, CRC, len(DATA))
    assert proven is not None and proven.proven and proven.proof is ProofKind.CHECKSUM
    different = by_checksum(len(DATA), CRC, OTHER, len(DATA))
    assert different is not None and different.proven is False and "other bytes" in different.reason
    shorter = by_checksum(len(DATA), CRC, CRC, len(DATA) - 1)
    assert shorter is not None and shorter.proven is False and "size expected" in shorter.reason
    assert by_checksum(len(DATA), None, CRC, len(DATA)) is None
    assert by_checksum(len(DATA), CRC, None, len(DATA)) is None


@pytest.mark.parametrize("encryption", [Encryption.SSE_KMS, Encryption.SSE_C, Encryption.SSE_KMS_DSSE])
def test_an_opaque_etag_without_a_checksum_cannot_be_proven(encryption: Encryption) -> None:
    item = ExpectedObject(key="x.raw", etag=OPAQUE, size=len(DATA), md5=MD5, path="x.raw")
    remote = RemoteObject(OPAQUE, len(DATA), encryption=encryption)
    verdict = stored_proof(item, remote)
    assert verdict is not None and verdict.proven is None and verdict.proof is None
    assert verdict.reason.startswith("cannot prove without download") and "--deep" in verdict.reason
    with_checksum = stored_proof(
        ExpectedObject("x.raw", OPAQUE, len(DATA), MD5, "x.raw", checksum=CRC), remote
    )
    assert with_checksum is not None and with_checksum.proven is None  # the store keeps none
    assert "the store keeps no checksum for it" in with_checksum.reason
    assert "SSE-C" in cannot_prove(Encryption.SSE_C, None, None).reason


def test_the_etag_rule_decides_where_no_checksum_does_and_the_etag_is_a_digest() -> None:
    item = ExpectedObject(key="x.raw", etag=MD5, size=len(DATA), md5=MD5, path="x.raw")
    for encryption in (Encryption.NONE, Encryption.SSE_S3):
        assert stored_proof(item, RemoteObject(MD5, len(DATA), encryption=encryption)) is None
    target = AuditTarget("x.raw", "b", "", (item,))
    audit = compare(target, {"x.raw": RemoteObject(MD5, len(DATA), encryption=Encryption.SSE_S3)})
    assert [(f.kind, f.proof) for f in audit.findings] == [(AuditFindingKind.OK, "etag")]
    kms = compare(target, {"x.raw": RemoteObject(MD5, len(DATA), encryption=Encryption.SSE_KMS)})
    assert [(f.kind, f.proof) for f in kms.findings] == [(AuditFindingKind.UNCHECKED, None)]
    missing = compare(target, {})
    assert [(f.kind, f.proof) for f in missing.findings] == [(AuditFindingKind.MISSING, None)]


def test_a_listing_entry_needs_a_closer_look_for_a_checksum_or_an_etag_that_does_not_prove() -> None:
    plain = ExpectedObject(key="x.d/a", etag=MD5, size=len(DATA), md5=MD5, path="x.d/a")
    assert not needs_a_closer_look(plain, RemoteObject(MD5, len(DATA)))
    assert needs_a_closer_look(plain, RemoteObject(OPAQUE, len(DATA)))
    assert needs_a_closer_look(
        ExpectedObject("x.d/a", MD5, len(DATA), MD5, "x.d/a", checksum=CRC), RemoteObject(MD5, len(DATA))
    )
    assert not needs_a_closer_look(plain, None)


# ------------------------------------------------------------------ bytes read


def item(checksum: Checksum | None = CRC) -> BackupObject:
    return BackupObject(
        path="x.raw", key="x.raw", size=len(DATA), md5=MD5, precomputed=None, checksum=checksum
    )


def got(**fields) -> Downloaded:
    values = {"size": len(DATA), "md5": MD5, "etags": {}, "s3_etag": MD5, "crc64nvme": CRC}
    return Downloaded(**{**values, **fields})


def test_describes_bytes_by_crc64nvme_or_at_the_layout() -> None:
    composite = Checksum("CRC32", "AAAAAQ==-2", full_object=False)
    assert describes_bytes(CRC, CRC, None) is True
    assert describes_bytes(OTHER, CRC, None) is False
    assert describes_bytes(composite, CRC, composite) is True
    assert describes_bytes(composite, CRC, None) is None
    assert describes_bytes(None, CRC, None) is None


def test_deep_verify_names_its_proofs() -> None:
    assert judge_download("b", item(), got(stored_checksum=CRC)).proofs == ("md5", "checksum", "etag")
    kms = judge_download("b", item(), got(s3_etag=OPAQUE, stored_checksum=CRC, encryption=Encryption.SSE_KMS))
    assert kms.outcome is DeepVerifyOutcome.OK and kms.proofs == ("md5", "checksum")
    assert "S3's ETag was not compared: the object is encrypted with SSE-KMS" in kms.reason
    plain = judge_download("b", item(None), got(crc64nvme=None))
    assert plain.proofs == ("md5", "etag") and "(proof: md5+etag)" in plain.reason


def test_deep_verify_finds_a_wrong_recorded_or_stored_checksum() -> None:
    recorded = judge_download("b", item(OTHER), got())
    assert (
        recorded.outcome is DeepVerifyOutcome.DIFFERS and "the record's checksum is wrong" in recorded.reason
    )
    stored = judge_download("b", item(), got(stored_checksum=OTHER))
    assert stored.outcome is DeepVerifyOutcome.DIFFERS and "no longer describes the object" in stored.reason
    rotten = judge_download("b", item(), got(md5="0" * 32))
    assert rotten.outcome is DeepVerifyOutcome.DIFFERS and "have MD5" in rotten.reason


def test_restore_judges_the_local_bytes_by_the_record_checksum() -> None:
    assert judge_restored("/r/x.raw", item(), got()).proofs == ("md5", "checksum")
    assert judge_restored("/r/x.raw", item(None), got()).proofs == ("md5",)
    wrong = judge_restored("/r/x.raw", item(OTHER), got())
    assert wrong.outcome is DeepVerifyOutcome.DIFFERS and "the record's checksum is wrong" in wrong.reason
