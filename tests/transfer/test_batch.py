"""transfer/batch.py: the files of a set side by side, all or nothing, proven by one listing."""

from __future__ import annotations

import threading
import time

import pytest

from airflow_provider_kraken_s3.core.errors import BackupInterrupted, BucketAccessDeniedError, IntegrityError
from airflow_provider_kraken_s3.transfer.batch import run_all, verify_listed
from tests.conftest import put_object
from tests.faults import after, delay, hold, respond
from tests.transfer.conftest import body_in_s3


def file_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("kraken-file")]


def test_a_set_runs_side_by_side_and_the_results_keep_its_order(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    paths = [make_file(f"s.d/f{i}.bin", 1000 + i, seed=i) for i in range(5)]
    proxy.add(delay("PutObject", 0.5, key="s.d/f0.bin"))  # the first file finishes last
    finished: list[str] = []
    proxy.add(after("PutObject", lambda record: finished.append(record.key), times=None))
    budget = threading.BoundedSemaphore(2)
    jobs = [verified_upload(p, key=f"s.d/{p.name}", budget=budget, check_after=False) for p in paths]
    results = run_all(jobs, concurrency=3, cancel=threading.Event())
    assert [r.key for r in results] == [f"s.d/f{i}.bin" for i in range(5)]
    deadline = time.monotonic() + 10
    while len(finished) < 5 and time.monotonic() < deadline:  # the proxy's callbacks run after the answer
        time.sleep(0.05)
    assert finished[-1] == "s.d/f0.bin"  # ran beside the others, not before them
    for path, result in zip(paths, results, strict=True):
        assert body_in_s3(s3_client, bucket, result.key) == path.read_bytes()
    verify_listed(jobs[0].access, bucket, "s.d/", results)
    assert file_threads() == []


def test_one_job_runs_in_the_caller_s_thread(proxy, make_file, verified_upload) -> None:
    seen: list[str] = []
    job = verified_upload(
        make_file("one.bin", 10), progress=lambda done, total: seen.append(threading.current_thread().name)
    )
    (result,) = run_all([job], concurrency=4, cancel=threading.Event())
    assert result.size == 10 and seen == [threading.current_thread().name]


def test_the_first_failure_stops_the_others_and_is_the_error_raised(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    paths = [make_file(f"f.d/f{i}.bin", 500, seed=i) for i in range(6)]
    proxy.add(respond("PutObject", 403, "AccessDenied", key="f.d/f2.bin", times=None))
    cancel = threading.Event()
    jobs = [verified_upload(p, key=f"f.d/{p.name}", cancel=cancel) for p in paths]
    with pytest.raises(BucketAccessDeniedError, match=r"f\.d/f2\.bin"):
        run_all(jobs, concurrency=2, cancel=cancel)
    assert cancel.is_set() and file_threads() == []  # every other file stopped and was waited for


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_a_cancel_from_outside_interrupts_the_set_and_waits_for_its_files(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    paths = [make_file(f"c.d/f{i}.bin", 500, seed=i) for i in range(3)]
    # Never released by the test: the proxy forwards the held PUT after 3 s, longer than the set's poll, so
    # the set sees the cancel while that file is still in flight (or the file hears it in its body first):
    # either way the set is interrupted, and it must wait for the held file.
    proxy.add(hold("PutObject", threading.Event(), key="c.d/f1.bin", timeout=3))
    cancel = threading.Event()

    def cancel_then_release() -> None:
        proxy.wait_for("PutObject", key="c.d/f1.bin")
        cancel.set()

    helper = threading.Thread(target=cancel_then_release, daemon=True)
    helper.start()
    jobs = [verified_upload(p, key=f"c.d/{p.name}", cancel=cancel) for p in paths]
    with pytest.raises(BackupInterrupted, match="stopped"):  # the set's, or a file's that heard the cancel
        run_all(jobs, concurrency=3, cancel=cancel)
    assert file_threads() == []  # it waited: no file thread outlives the set
    helper.join()


def test_a_listing_that_shows_other_objects_than_were_proven_fails(
    proxy, s3_client, bucket, make_file, verified_upload
) -> None:
    paths = [make_file(f"l.d/f{i}.bin", 700, seed=i) for i in range(2)]
    jobs = [verified_upload(p, key=f"l.d/{p.name}", check_after=False) for p in paths]
    results = run_all(jobs, concurrency=2, cancel=threading.Event())
    put_object(s3_client, bucket, "l.d/f1.bin", b"replaced concurrently")
    s3_client.delete_object(Bucket=bucket, Key="l.d/f0.bin")
    with pytest.raises(
        IntegrityError, match=r"l\.d/f0\.bin: nothing .*l\.d/f1\.bin: ETag [0-9a-f]{32}, 21 bytes"
    ):
        verify_listed(jobs[0].access, bucket, "l.d/", results)
    assert [r.operation for r in proxy.requests[-1:]] == ["ListObjectsV2"]
