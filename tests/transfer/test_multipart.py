"""transfer/multipart.py: parts in parallel, each proven, completed only once proven — or kept, or aborted.

Against moto through the FaultProxy: the sender gets a :class:`Shipment` as the upload builds it, and what is
asserted is what S3 holds afterwards, the requests the proxy saw and what the sender said.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time

import pytest

from airflow_provider_kraken_s3.core.decision import META_MD5, META_PART_SIZE, META_RCLONE_MD5
from airflow_provider_kraken_s3.core.errors import BackupInterrupted, IntegrityError, UploadVanishedError
from airflow_provider_kraken_s3.core.parts import plan_parts
from airflow_provider_kraken_s3.transfer.hashing import compute_s3_etag, compute_s3_etag_and_md5
from airflow_provider_kraken_s3.transfer.multipart import MultipartSender, object_metadata
from tests.conftest import random_bytes
from tests.faults import Fault, LoseResponse, after, delay, hold, respond, rewrite_etag
from tests.transfer.conftest import PART, body_in_s3, etag_in_s3, uploads_in_s3, versioned


def told(into: list):
    return lambda upload_id, part_size: into.append((upload_id, part_size))


def test_a_resumed_upload_reuses_the_parts_in_s3_and_resends_a_differing_one(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    path = make_file("a.raw", 4 * PART + 10)
    data = path.read_bytes()
    upload_id = s3_client.create_multipart_upload(Bucket=bucket, Key="a.raw")["UploadId"]
    for number, body in [(1, data[:PART]), (2, random_bytes(PART, seed=9)), (3, data[2 * PART : 3 * PART])]:
        s3_client.upload_part(Bucket=bucket, Key="a.raw", UploadId=upload_id, PartNumber=number, Body=body)
    ids: list = []
    sent = MultipartSender(shipment(path, upload_id=upload_id, on_upload_id=told(ids))).run()
    assert sent.parts_reused == 2 and [p.number for p in sent.parts_sent] == [2, 4, 5]
    assert sorted(r.part_number for r in proxy.records("UploadPart")) == [2, 4, 5]
    assert [r.upload_id for r in proxy.records("UploadPart")] == [upload_id] * 3
    assert not proxy.records("CreateMultipartUpload") and ids == [(upload_id, PART), (None, PART)]
    assert sent.etag == compute_s3_etag(path, PART) == etag_in_s3(s3_client, bucket, "a.raw")
    assert body_in_s3(s3_client, bucket, "a.raw") == data


def test_a_vanished_upload_to_resume_starts_a_new_one(proxy, s3_client, bucket, make_file, shipment) -> None:
    path = make_file("b.raw", 2 * PART)
    gone = s3_client.create_multipart_upload(Bucket=bucket, Key="b.raw")["UploadId"]
    s3_client.abort_multipart_upload(Bucket=bucket, Key="b.raw", UploadId=gone)
    sent = MultipartSender(shipment(path, upload_id=gone)).run()
    assert sent.parts_reused == 0 and len(sent.parts_sent) == 2
    assert (
        len(proxy.records("CreateMultipartUpload")) == 1
        and body_in_s3(s3_client, bucket, "b.raw") == path.read_bytes()
    )


def test_a_part_whose_etag_is_not_its_md5_aborts_the_upload(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    path = make_file("c.raw", 3 * PART)
    proxy.add(rewrite_etag("UploadPart", "f" * 32, part_number=2))
    ids: list = []
    with pytest.raises(IntegrityError, match=rf"part 2 of s3://{bucket}/c.raw with ETag f{{32}}"):
        MultipartSender(shipment(path, on_upload_id=told(ids))).run()
    (abort,) = proxy.records("AbortMultipartUpload")
    assert abort.upload_id == ids[0][0] and ids[-1] == (None, PART)
    assert uploads_in_s3(s3_client, bucket) == [] and not proxy.records("CompleteMultipartUpload")
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_after_a_failed_part_the_others_land_before_the_abort(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    """Nothing may land after an abort: the slow part 2 is waited for before AbortMultipartUpload is sent."""
    path = make_file("d.raw", 2 * PART)
    landed: dict[str, float] = {}

    class Arrives(Fault):
        def on_request(self, request) -> None:
            landed.setdefault("abort", time.monotonic())

    proxy.add(rewrite_etag("UploadPart", "0" * 32, part_number=1))
    proxy.add(delay("UploadPart", 1.5, part_number=2))
    proxy.add(
        after("UploadPart", lambda record: landed.setdefault("part 2", time.monotonic()), part_number=2)
    )
    proxy.add(Arrives("AbortMultipartUpload"))
    with pytest.raises(IntegrityError, match="part 1"):
        MultipartSender(shipment(path, max_concurrency=2)).run()
    # Under load part 2 may hear the stop while its body is still read (then it never lands); if it was sent,
    # it landed before the abort. Either way nothing of the upload is left.
    assert "part 2" not in landed or landed["part 2"] < landed["abort"]
    assert uploads_in_s3(s3_client, bucket) == []


def test_a_lost_completion_response_is_recovered_by_head(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    """The completion lands, its answer is lost, the retry hears NoSuchUpload: HEAD shows our object."""
    versioned(s3_client, bucket)
    path = make_file("e.raw", 2 * PART + 7)

    class LoseThenForget(LoseResponse):
        def on_request(self, request) -> None:
            proxy.add(respond("CompleteMultipartUpload", 404, "NoSuchUpload"))

    proxy.add(LoseThenForget("CompleteMultipartUpload"))
    ids: list = []
    sent = MultipartSender(shipment(path, on_upload_id=told(ids))).run()
    head = s3_client.head_object(Bucket=bucket, Key="e.raw")
    assert sent.etag == compute_s3_etag(path, PART) == head["ETag"].strip('"')
    assert sent.version_id == head["VersionId"]  # read from the HEAD, the completion's answer was lost
    assert [r.status for r in proxy.records("CompleteMultipartUpload")] == [None, 404]
    assert proxy.requests[-1].operation == "HeadObject" and ids[-1] == (None, PART)


def test_an_upload_aborted_by_someone_else_before_completion_has_vanished(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    path = make_file("f.raw", 2 * PART)
    proxy.add(respond("CompleteMultipartUpload", 404, "NoSuchUpload"))
    ids: list = []
    with pytest.raises(UploadVanishedError, match="vanished before it was completed"):
        MultipartSender(shipment(path, on_upload_id=told(ids))).run()
    assert not proxy.records("AbortMultipartUpload")  # not ours to abort: it is gone
    assert ids[-1] == (None, PART)  # forgotten: the next attempt starts a new upload
    assert s3_client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


@pytest.mark.slow  # waits out retries, a backoff or an outage by design
def test_an_interruption_keeps_the_upload_and_does_not_wait_for_a_stuck_part(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    path = make_file("g.raw", 3 * PART)
    release = threading.Event()
    proxy.add(hold("UploadPart", release, part_number=2, timeout=30))
    cancel = threading.Event()
    ids: list = []

    def cancel_once_only_part_2_is_in_flight() -> None:
        # Parts 1 and 3 answered: only the held part 2 is left, its body sent, waiting for S3's answer. (A part
        # still reading when the cancel comes hears it itself, and that counts as a failed part: waited for.)
        proxy.wait_for("UploadPart", part_number=2)
        while [r.status for r in proxy.records("UploadPart") if r.part_number != 2] != [200, 200]:
            time.sleep(0.02)
        cancel.set()

    threading.Thread(target=cancel_once_only_part_2_is_in_flight, daemon=True).start()
    try:
        with pytest.raises(BackupInterrupted, match="interrupted"):
            MultipartSender(shipment(path, cancel=cancel, on_upload_id=told(ids), max_concurrency=3)).run()
        # not held by the part stuck on the network: it is still in flight (held for up to 30 s)
        assert proxy.records("UploadPart", part_number=2)[0].status is None
    finally:
        release.set()
    upload_id = ids[-1][0]
    assert upload_id is not None and uploads_in_s3(s3_client, bucket) == [upload_id]
    assert not proxy.records("AbortMultipartUpload") and not proxy.records("CompleteMultipartUpload")


def test_a_file_whose_parts_do_not_give_the_inventory_etag_is_never_completed(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    path = make_file("h.raw", 2 * PART + 1)
    with pytest.raises(IntegrityError, match="The upload was not completed"):
        MultipartSender(shipment(path, expected_etag="0" * 32 + "-3")).run()
    assert not proxy.records("CompleteMultipartUpload") and len(proxy.records("AbortMultipartUpload")) == 1
    assert uploads_in_s3(s3_client, bucket) == []


def test_with_only_an_md5_the_whole_file_is_proven_and_claimed_in_metadata(
    proxy, s3_client, bucket, make_file, shipment
) -> None:
    path = make_file("i.raw", 2 * PART + 1)
    etag, md5 = compute_s3_etag_and_md5(path, PART)
    sent = MultipartSender(shipment(path, expected_md5=md5, storage_class="STANDARD_IA")).run()
    assert (sent.etag, sent.md5) == (etag, md5)
    head = s3_client.head_object(Bucket=bucket, Key="i.raw")
    assert head["Metadata"] == object_metadata(plan_parts(path.stat().st_size, PART), md5, None)
    assert head["Metadata"][META_MD5] == md5 and head["StorageClass"] == "STANDARD_IA"


def test_object_metadata_claims_the_md5_only_where_it_is_checked_before_completion() -> None:
    plan = plan_parts(3 * PART, PART)
    md5 = hashlib.md5(b"x").hexdigest()
    assert object_metadata(plan, None, None) == {META_PART_SIZE: str(PART)}
    assert object_metadata(plan, md5, "0" * 32 + "-3") == {META_PART_SIZE: str(PART)}
    claimed = object_metadata(plan, md5, None)
    assert (
        claimed[META_MD5] == md5
        and claimed[META_RCLONE_MD5] == base64.b64encode(hashlib.md5(b"x").digest()).decode()
    )
