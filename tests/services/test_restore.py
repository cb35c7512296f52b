"""services/restore.py: real moto_server (through the FaultProxy), real mongomock, real files."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from airflow_provider_kraken_s3.core.errors import BackupInterrupted, IntegrityError, InvalidInputError
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.records.models import BackupStatus
from airflow_provider_kraken_s3.services.restore import RestoreOutcome, restore_raw_file
from airflow_provider_kraken_s3.transfer import hashing
from airflow_provider_kraken_s3.transfer.placement import partial_path
from tests.conftest import random_bytes
from tests.faults import flip_response_byte

RANGE = MIB


def restore(access, raw_file_id: str, dest: Path, **kwargs):
    return restore_raw_file(
        access, raw_file_id, dest, **{"range_size": RANGE, "max_concurrency": 3, **kwargs}
    )


def etag_of(entry: list) -> str:
    """S3's ETag from a file_info entry ``[size, md5, "<etag>__<MiB>"]``."""
    return entry[2].split("__")[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.kraken-restore"))


def start(get) -> int:
    return int(get.headers["range"].split("=")[1].split("-")[0])


def test_a_d_set_is_restored_byte_identical(access, s3_backup, tmp_path) -> None:
    files = {
        "x.d/analysis.tdf": random_bytes(7 * MIB + 3, seed=1),
        "x.d/analysis.tdf_bin": random_bytes(12_345, seed=2),
        "x.d/sub/deeper/meta.xml": b"<xml/>",
        "x.d/empty": b"",
    }
    s3_backup("x.d", files)
    dest = tmp_path / "restored"
    report = restore(access, "x.d", dest)
    assert report.ok and {f.outcome for f in report.files} == {RestoreOutcome.RESTORED}
    for path, data in files.items():
        assert (dest / path).read_bytes() == data
    assert leftovers(dest) == []
    assert report.bytes == sum(map(len, files.values()))
    report.check()


def test_an_interrupted_restore_resumes_from_its_partial_file(access, proxy, s3_backup, tmp_path) -> None:
    data = random_bytes(6 * MIB + 5, seed=3)
    etag = etag_of(s3_backup("big.raw", {"big.raw": data})["big.raw"])
    dest = tmp_path / "restored"
    cancel = threading.Event()
    consumed = []

    def stop_after_two(count: int) -> None:
        consumed.append(count)
        if len(consumed) == 2:
            cancel.set()

    with pytest.raises(BackupInterrupted):
        restore(access, "big.raw", dest, cancel=cancel, progress=stop_after_two, max_concurrency=1)
    partial = partial_path(dest / "big.raw", etag)
    assert not (dest / "big.raw").exists() and partial.stat().st_size == 2 * MIB
    first_run = len(proxy.records("GetObject"))

    report = restore(access, "big.raw", dest)
    (item,) = report.files
    assert item.outcome is RestoreOutcome.RESTORED and item.resumed_from == 2 * MIB
    assert item.bytes == len(data) - 2 * MIB
    assert (dest / "big.raw").read_bytes() == data and not partial.exists()
    second_run = proxy.records("GetObject")[first_run:]
    assert min(start(g) for g in second_run) == 2 * MIB  # it asked only for what was missing


def test_a_cancel_while_re_hashing_a_partial_file_stops_at_the_next_block(
    access, proxy, s3_backup, tmp_path, monkeypatch
) -> None:
    """Defect 6: a restore resuming a large partial file re-hashes it first; a cancel stops that too."""
    data = random_bytes(4 * hashing.READ_BLOCK + 5, seed=5)
    etag = etag_of(s3_backup("re.raw", {"re.raw": data})["re.raw"])
    dest = tmp_path / "restored"
    partial = partial_path(dest / "re.raw", etag)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[: 3 * hashing.READ_BLOCK])  # left by an earlier, interrupted restore
    gets = len(proxy.records("GetObject"))
    cancel = threading.Event()
    fed: list[int] = []
    real_update = hashing.Digests.update

    def cancel_after_the_first_block(self, block) -> None:
        real_update(self, block)
        fed.append(len(block))
        cancel.set()

    monkeypatch.setattr(hashing.Digests, "update", cancel_after_the_first_block)
    with pytest.raises(BackupInterrupted):
        restore(access, "re.raw", dest, cancel=cancel)
    assert sum(fed) == hashing.READ_BLOCK  # not the whole partial file
    assert len(proxy.records("GetObject")) == gets and partial.stat().st_size == 3 * hashing.READ_BLOCK


def test_a_partial_file_with_altered_bytes_is_caught_and_not_put_in_place(
    access, s3_backup, tmp_path
) -> None:
    data = random_bytes(3 * MIB, seed=4)
    etag = etag_of(s3_backup("p.raw", {"p.raw": data})["p.raw"])
    dest = tmp_path / "restored"
    dest.mkdir()
    partial = partial_path(dest / "p.raw", etag)
    damaged = bytearray(data[: MIB + 100])
    damaged[500] ^= 0xFF  # an earlier run's partial whose bytes changed on disk
    partial.write_bytes(bytes(damaged))
    report = restore(access, "p.raw", dest)
    (item,) = report.files
    assert item.outcome is RestoreOutcome.FAILED and item.resumed_from == MIB + 100
    assert "NOT put in place" in item.detail and "partial file of 1048676 bytes" in item.detail
    assert not (dest / "p.raw").exists() and not partial.exists()
    with pytest.raises(IntegrityError, match="NOT put in place"):
        report.check()
    assert restore(access, "p.raw", dest).ok and (dest / "p.raw").read_bytes() == data  # from scratch


def test_corrupted_object_bytes_are_never_put_in_place(access, proxy, s3_backup, tmp_path) -> None:
    s3_backup("rot.raw", {"rot.raw": random_bytes(2 * MIB, seed=5)})
    proxy.add(flip_response_byte("GetObject", offset=MIB + 1, times=None))
    report = restore(access, "rot.raw", tmp_path)
    assert report.files[0].outcome is RestoreOutcome.FAILED and not (tmp_path / "rot.raw").exists()
    assert leftovers(tmp_path) == []


def test_an_existing_destination_is_not_overwritten_unless_asked(access, proxy, s3_backup, tmp_path) -> None:
    data = random_bytes(2 * MIB, seed=6)
    s3_backup("e.raw", {"e.raw": data})
    (tmp_path / "e.raw").write_bytes(b"someone else's file")
    report = restore(access, "e.raw", tmp_path)
    assert report.files[0].outcome is RestoreOutcome.EXISTS and not report.ok
    assert "was not overwritten" in report.files[0].detail
    assert (tmp_path / "e.raw").read_bytes() == b"someone else's file"
    assert proxy.records("GetObject") == []

    replaced = restore(access, "e.raw", tmp_path, overwrite=True)
    assert replaced.files[0].outcome is RestoreOutcome.RESTORED and (tmp_path / "e.raw").read_bytes() == data

    again = restore(access, "e.raw", tmp_path)
    assert again.files[0].outcome is RestoreOutcome.ALREADY_PRESENT and again.ok
    assert len(proxy.records("GetObject")) == 2  # the present file was hashed locally, not downloaded


def test_archived_files_need_restore_and_the_others_are_restored(access, s3_backup, tmp_path) -> None:
    files = {"c.d/a": b"warm bytes", "c.d/b": b"cold bytes"}
    s3_backup("c.d", files, storage={"c.d/b": "DEEP_ARCHIVE"})
    report = restore(access, "c.d", tmp_path)
    outcomes = {f.path: f.outcome for f in report.files}
    assert outcomes == {"c.d/a": RestoreOutcome.RESTORED, "c.d/b": RestoreOutcome.NEEDS_RESTORE}
    assert (tmp_path / "c.d/a").read_bytes() == b"warm bytes" and not (tmp_path / "c.d/b").exists()


def test_a_path_escaping_the_folder_is_refused(access, s3_backup, bucket, make_raw_file, tmp_path) -> None:
    make_raw_file(
        "evil.d",
        backup_status=BackupStatus.DONE,
        s3_bucket=bucket,
        file_info={"evil.d/../../outside": [1, "0" * 32]},
    )
    with pytest.raises(InvalidInputError, match=r"'\.\.' segment"):
        restore(access, "evil.d", tmp_path / "dest")
    assert not (tmp_path / "outside").exists()


def test_a_symlink_leading_out_of_the_folder_is_refused(access, proxy, s3_backup, tmp_path) -> None:
    s3_backup("s.d", {"s.d/a": b"aaa", "s.d/b": b"bbb"})
    dest, elsewhere = tmp_path / "dest", tmp_path / "elsewhere"
    dest.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, dest / "s.d")
    with pytest.raises(InvalidInputError, match="outside the destination"):
        restore(access, "s.d", dest)
    assert list(elsewhere.iterdir()) == [] and proxy.records("GetObject") == []


def test_a_fallback_sciex_set_is_read_from_its_prefixed_keys(access, proxy, s3_backup, tmp_path) -> None:
    """Keys are ``{instrument}/{yyyy_mm}/{id}/{path}`` here, while files go to ``dest/{path}``."""
    files = {
        "s.wiff": random_bytes(2000, seed=7),
        "s.wiff2": random_bytes(3000, seed=8),
        "s.wiff.scan": b"scan",
    }
    s3_backup("s.wiff", files, project_id="_FALLBACK")
    stale = partial_path(tmp_path / "s.wiff", "0" * 32)  # left by a restore of an older version of the object
    stale.write_bytes(b"old")
    report = restore(access, "s.wiff", tmp_path)
    assert report.ok and {f.key for f in report.files} == {f"astral1/2024_01/s.wiff/{p}" for p in files}
    assert {g.key for g in proxy.records("GetObject")} == {f"astral1/2024_01/s.wiff/{p}" for p in files}
    for path, data in files.items():
        assert (tmp_path / path).read_bytes() == data
    assert leftovers(tmp_path) == []  # the stale one removed; s.wiff's never touched s.wiff.scan's
