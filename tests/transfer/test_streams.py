from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from airflow_provider_kraken_s3.core.errors import BackupInterrupted, LocalFileChangedError, LocalReadError
from airflow_provider_kraken_s3.core.parts import MIB, plan_parts
from airflow_provider_kraken_s3.transfer.streams import STREAM_BLOCK, PartBody, SequentialMd5, UploadStopped


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = random.Random(1).randbytes(3 * STREAM_BLOCK + 777)
    path = tmp_path / "x.raw"
    path.write_bytes(data)
    return path, data


def test_part_body_hashes_each_byte_once_even_when_reread(data_file) -> None:
    path, data = data_file
    part = next(plan_parts(len(data), 5 * MIB).parts())
    body = PartBody(path, part)
    assert len(body) == len(data)
    assert body.read(10) == data[:10]
    body.seek(0)  # a botocore retry rewinds the body
    assert body.read() == data
    body.seek(5)
    assert body.read(3) == data[5:8]
    assert body.tell() == 8
    body.close()
    assert body.read() == data[8:]  # reopens after close
    assert body.hexdigest() == hashlib.md5(data).hexdigest()


def test_part_body_refuses_digest_before_fully_read(data_file) -> None:
    path, data = data_file
    body = PartBody(path, next(plan_parts(len(data), 5 * MIB).parts()))
    body.read(100)
    with pytest.raises(RuntimeError, match="was read only"):
        body.hexdigest()


def test_part_body_notices_a_truncated_file(data_file) -> None:
    path, data = data_file
    body = PartBody(path, next(plan_parts(len(data), 5 * MIB).parts()))
    path.write_bytes(data[:100])
    with pytest.raises(LocalFileChangedError, match="became shorter"):
        body.read()


@pytest.mark.parametrize("max_buffer", [0, STREAM_BLOCK, 64 * MIB])
def test_sequential_md5_with_parts_read_in_any_order(tmp_path: Path, max_buffer: int) -> None:
    data = random.Random(2).randbytes(12 * MIB + 5)
    path = tmp_path / "f"
    path.write_bytes(data)
    plan = plan_parts(len(data), 5 * MIB)
    whole = SequentialMd5(path, plan, max_buffer=max_buffer)
    whole.start()
    bodies = [PartBody(path, part, on_new_bytes=whole.offer) for part in plan.parts()]
    for body in reversed(bodies):  # last part first: the worst order for a sequential digest
        body.drain()
    assert whole.hexdigest(timeout=30) == hashlib.md5(data).hexdigest()
    if max_buffer == 0:
        assert whole.reread_bytes > 0  # out-of-order blocks came back from the page cache
    assert whole.reread_bytes <= len(data)


def test_sequential_md5_stop_ends_the_follower(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * (11 * MIB))
    whole = SequentialMd5(path, plan_parts(11 * MIB, 5 * MIB))
    whole.start()
    whole.stop()
    with pytest.raises(RuntimeError, match="stopped at byte 0"):
        whole.hexdigest(timeout=5)


def test_a_block_rewritten_after_it_was_sent_is_not_hashed(tmp_path: Path) -> None:
    """Defect 3: the whole-file MD5 must never cover bytes other than those the parts read and sent.

    Part 2 is read first (as when it is sent in parallel) while the follower cannot keep it; then the file is
    "fixed" in place and its mtime restored, as ``cp -p`` or ``rsync -t --inplace`` would. The re-read bytes
    now have the inventory's MD5, but they are not what was sent: the digest must fail.
    """
    sent = bytearray(random.Random(3).randbytes(10 * MIB))
    sent[6 * MIB] ^= 0xFF  # the bad byte the instrument never wrote, inside part 2
    path = tmp_path / "f.raw"
    path.write_bytes(bytes(sent))
    stat = path.stat()
    plan = plan_parts(len(sent), 5 * MIB)
    whole = SequentialMd5(path, plan, max_buffer=0)
    whole.start()
    first, second = (PartBody(path, part, on_new_bytes=whole.offer) for part in plan.parts())
    second.drain()  # part 2 "sent" with the bad byte
    fixed = bytearray(sent)
    fixed[6 * MIB] ^= 0xFF
    with open(path, "r+b") as handle:  # fixed in place, mtime restored
        handle.write(bytes(fixed))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    first.drain()
    with pytest.raises(LocalFileChangedError, match=r"offset 6291456 .*differ from the bytes sent"):
        whole.hexdigest(timeout=30)


def test_an_io_error_reading_the_file_is_a_local_read_error(tmp_path: Path) -> None:
    """EIO or ESTALE from the file system is the local copy's trouble, named as such (not "network")."""
    folder = tmp_path / "d"
    folder.mkdir()
    part = next(plan_parts(10, 5 * MIB).parts())
    with pytest.raises(LocalReadError, match=r"reading .*/d failed \(EISDIR"):
        PartBody(folder, part).read()


def test_a_part_read_whole_stops_at_the_next_block_once_stopped(data_file) -> None:
    """Defect 6: botocore may read a whole part in one call (a checksum); a stop is heard per block."""
    path, data = data_file
    stop = threading.Event()
    loaded: list[int] = []

    def note(offset: int, block: bytes) -> None:
        loaded.append(len(block))
        stop.set()

    body = PartBody(
        path, next(plan_parts(len(data), 5 * MIB).parts()), on_new_bytes=note, should_stop=stop.is_set
    )
    with pytest.raises(UploadStopped, match="interrupted"):
        body.read()
    assert loaded == [STREAM_BLOCK]


def test_sequential_md5_stops_at_the_next_block_once_cancelled(data_file) -> None:
    """Defect 6: the whole-file MD5 catching up after the parts stops on the attempt's cancel."""
    path, data = data_file
    plan = plan_parts(len(data), 5 * MIB)
    cancel = threading.Event()
    cancel.set()
    whole = SequentialMd5(path, plan, max_buffer=0, cancel=cancel)
    PartBody(path, next(plan.parts()), on_new_bytes=whole.offer).drain()  # every block read, none kept
    whole.start()
    with pytest.raises(BackupInterrupted):
        whole.hexdigest(timeout=30)
