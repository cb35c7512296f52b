"""transfer/download.py against a real moto_server (through the FaultProxy where the wire matters)."""

from __future__ import annotations

import hashlib
import io
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_provider_kraken_s3.core.errors import (
    BackupInterrupted,
    InvalidInputError,
    ObjectReplacedError,
    S3TransientError,
)
from airflow_provider_kraken_s3.core.etag import etag_from_part_digests
from airflow_provider_kraken_s3.core.parts import MIB
from airflow_provider_kraken_s3.transfer.download import (
    ObjectDownload,
    download_object,
    head_object,
    run_per_object,
)
from airflow_provider_kraken_s3.transfer.hashing import Digests
from tests.conftest import put_object, random_bytes
from tests.faults import hold, respond

PART = 5 * MIB
RANGE = MIB


def etag_at(data: bytes, part_size: int) -> str:
    if len(data) <= part_size:
        return hashlib.md5(data).hexdigest()
    digests = [hashlib.md5(data[i : i + part_size]).digest() for i in range(0, len(data), part_size)]
    return etag_from_part_digests(digests, multipart=True)


# ------------------------------------------------------------------ digests


@pytest.mark.parametrize("threads", [0, 4], ids=["one thread", "a digest per thread"])
def test_digests_in_one_pass_at_several_part_sizes_whatever_the_blocks(threads: int) -> None:
    data = random_bytes(12 * MIB + 17)
    with ThreadPoolExecutor(max_workers=threads or 1) as pool:
        digests = Digests(len(data), [PART, 8 * MIB, 100 * MIB], pool=pool if threads else None)
        position, rng = 0, random.Random(1)
        while position < len(data):
            step = rng.choice([1, 1000, MIB - 1, 3 * MIB])
            digests.update(memoryview(data)[position : position + step])
            position += step
    assert digests.md5 == hashlib.md5(data).hexdigest()
    assert digests.etags() == {PART: etag_at(data, PART), 8 * MIB: etag_at(data, 8 * MIB)}
    assert digests.part_sizes == (PART, 8 * MIB)  # 100 MiB: one part, its ETag is the MD5


def test_digests_refuse_too_many_bytes_and_early_answers() -> None:
    digests = Digests(4, [PART])
    digests.update(b"abc")
    with pytest.raises(InvalidInputError, match="after 3 of 4 bytes"):
        _ = digests.md5
    with pytest.raises(InvalidInputError, match="5 bytes fed"):
        digests.update(b"de")


# ------------------------------------------------------------------ downloading


def test_parallel_ranged_gets_deliver_every_byte_in_order(access, proxy, s3_client, bucket) -> None:
    data = random_bytes(12 * MIB + 5)
    etag = put_object(s3_client, bucket, "x.raw", data)
    head = head_object(access, bucket, "x.raw")
    sink = io.BytesIO()
    result = download_object(
        access, bucket, head, part_sizes=[PART, 8 * MIB], sink=sink, range_size=RANGE, max_concurrency=3
    )
    assert sink.getvalue() == data
    assert result.md5 == hashlib.md5(data).hexdigest() and not result.needs_restore
    assert result.etags == {PART: etag, 8 * MIB: etag_at(data, 8 * MIB)}
    assert result.bytes_fetched == len(data)
    gets = proxy.records("GetObject")
    assert len(gets) == 13  # 12 MiB + 5 bytes in 1 MiB ranges
    assert {g.headers["if-match"] for g in gets} == {head.quoted_etag}
    starts = sorted(int(g.headers["range"].split("=")[1].split("-")[0]) for g in gets)
    assert starts == list(range(0, len(data), RANGE))


def test_a_download_continues_at_an_offset_with_digests_of_the_whole(
    access, proxy, s3_client, bucket
) -> None:
    data = random_bytes(3 * MIB + 100, seed=2)
    put_object(s3_client, bucket, "y.raw", data)
    head = head_object(access, bucket, "y.raw")
    digests = Digests(len(data), [PART])
    digests.update(data[: 2 * MIB + 7])  # what a partial file already holds, re-hashed
    sink = io.BytesIO()
    result = ObjectDownload(
        access, bucket, head, digests, sink=sink, start=2 * MIB + 7, range_size=RANGE
    ).run()
    assert sink.getvalue() == data[2 * MIB + 7 :]
    assert result.md5 == hashlib.md5(data).hexdigest() and result.bytes_fetched == len(data) - 2 * MIB - 7
    assert (
        min(int(g.headers["range"].split("=")[1].split("-")[0]) for g in proxy.records("GetObject"))
        == 2 * MIB + 7
    )


def test_an_empty_object_needs_no_get(access, proxy, s3_client, bucket) -> None:
    put_object(s3_client, bucket, "empty.raw", b"")
    result = download_object(access, bucket, head_object(access, bucket, "empty.raw"))
    assert result.md5 == hashlib.md5(b"").hexdigest() and proxy.records("GetObject") == []


def test_an_object_replaced_mid_download_is_detected_not_blended(access, proxy, s3_client, bucket) -> None:
    data = random_bytes(4 * MIB, seed=3)
    put_object(s3_client, bucket, "z.raw", data)
    head = head_object(access, bucket, "z.raw")
    release = threading.Event()
    proxy.add(hold("GetObject", event=release))
    sink = io.BytesIO()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            download_object(access, bucket, head, sink=sink, range_size=RANGE, max_concurrency=2)
        except BaseException as error:
            errors.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    proxy.wait_for("GetObject")
    s3_client.put_object(Bucket=bucket, Key="z.raw", Body=random_bytes(4 * MIB, seed=4))  # behind its back
    release.set()
    worker.join(60)
    assert len(errors) == 1 and isinstance(errors[0], ObjectReplacedError)
    assert f"ETag {head.etag} when the download started" in str(errors[0])
    assert 412 in [g.status for g in proxy.records("GetObject")]


def test_an_archived_object_needs_restore_without_a_get(access, proxy, s3_client, bucket) -> None:
    put_object(s3_client, bucket, "cold.raw", b"x" * 1000, StorageClass="DEEP_ARCHIVE")
    head = head_object(access, bucket, "cold.raw")
    assert head.storage_class == "DEEP_ARCHIVE" and head.needs_restore
    result = download_object(access, bucket, head)
    assert result.needs_restore and result.md5 is None and proxy.records("GetObject") == []


def test_a_get_answered_invalid_object_state_needs_restore(access, proxy, s3_client, bucket) -> None:
    """Archived although HEAD did not say so (e.g. an archive tier HEAD does not report): not a failure."""
    put_object(s3_client, bucket, "tiered.raw", random_bytes(3 * MIB))
    proxy.add(respond("GetObject", 403, "InvalidObjectState", times=None))
    result = download_object(access, bucket, head_object(access, bucket, "tiered.raw"), range_size=RANGE)
    assert result.needs_restore and result.md5 is None
    assert {g.status for g in proxy.records("GetObject")} == {403}


@pytest.mark.parametrize(("status", "code"), [(412, "PreconditionFailed"), (404, "NoSuchKey")])
def test_a_get_refused_once_while_head_shows_the_same_etag_is_read_again(
    access, proxy, s3_client, bucket, status: int, code: str
) -> None:
    """Defect 11e: a refusal HEAD does not confirm (a store's hiccup) concludes nothing: the range is retried."""
    data = random_bytes(3 * MIB, seed=6)
    put_object(s3_client, bucket, "flaky.raw", data)
    proxy.add(respond("GetObject", status, code, times=1))
    result = download_object(access, bucket, head_object(access, bucket, "flaky.raw"), range_size=RANGE)
    assert not result.needs_restore and result.md5 == hashlib.md5(data).hexdigest()
    assert [g.status for g in proxy.records("GetObject")].count(status) == 1


def test_a_get_refused_with_412_while_head_shows_the_same_etag_is_not_needs_restore(
    access, proxy, s3_client, bucket
) -> None:
    """Defect 11e: a store that keeps refusing IfMatch although the ETag is unchanged: unverified, try again."""
    put_object(s3_client, bucket, "stuck.raw", random_bytes(2 * MIB, seed=7))
    proxy.add(respond("GetObject", 412, "PreconditionFailed", times=None))
    head = head_object(access, bucket, "stuck.raw")
    with pytest.raises(S3TransientError, match=r"412 PreconditionFailed, yet HEAD still shows ETag"):
        download_object(access, bucket, head, range_size=RANGE)


def test_a_restored_archived_object_is_read(access, proxy, s3_client, bucket) -> None:
    data = random_bytes(2 * MIB, seed=5)
    put_object(s3_client, bucket, "thawed.raw", data, StorageClass="GLACIER")
    s3_client.restore_object(Bucket=bucket, Key="thawed.raw", RestoreRequest={"Days": 1})
    head = head_object(access, bucket, "thawed.raw")
    assert not head.needs_restore
    assert download_object(access, bucket, head, range_size=RANGE).md5 == hashlib.md5(data).hexdigest()


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_lasting_server_errors_end_in_a_transient_error(access, proxy, s3_client, bucket) -> None:
    put_object(s3_client, bucket, "busy.raw", random_bytes(2 * MIB))
    proxy.add(respond("GetObject", 503, "SlowDown", times=None))
    head = head_object(access, bucket, "busy.raw")
    with pytest.raises(S3TransientError, match="SlowDown"):
        download_object(access, bucket, head, range_size=RANGE)


def test_cancel_stops_the_download(access, proxy, s3_client, bucket) -> None:
    put_object(s3_client, bucket, "long.raw", random_bytes(4 * MIB))
    cancel = threading.Event()
    head = head_object(access, bucket, "long.raw")

    def stop_after_first(_: int) -> None:
        cancel.set()

    sink = io.BytesIO()
    with pytest.raises(BackupInterrupted, match="stopped"):
        download_object(
            access, bucket, head, sink=sink, range_size=RANGE, cancel=cancel, progress=stop_after_first
        )
    assert len(sink.getvalue()) == RANGE  # the range consumed before the stop, nothing after it


def test_missing_object_heads_none(access, bucket) -> None:
    assert head_object(access, bucket, "nothing.raw") is None


def test_run_per_object_keeps_order_and_raises_the_first_error() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def job(i: int) -> int:
        with lock:
            seen.append(i)
        return i * 10

    assert run_per_object([1, 100, 2, 3], job, range_size=10, max_concurrency=3) == [0, 10, 20, 30]
    assert seen[-1] == 1  # the large object runs after the small ones

    def failing(i: int) -> int:
        if i == 2:
            raise ValueError("boom")
        return i

    with pytest.raises(ValueError, match="boom"):
        run_per_object([1, 1, 1, 1], failing, range_size=10, max_concurrency=2)
