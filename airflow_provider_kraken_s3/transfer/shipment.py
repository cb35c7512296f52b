"""What a sender gets once the upload has looked and decided to send, and what it hands back.

A :class:`Shipment` is built once, after planning and deciding, and never changes: which bytes (the file, its
``stat`` when it was planned, the part plan), where to (bucket, key, storage class), what they must prove
(the inventory's MD5 and/or ETag, as planning adjusted them), and how to behave (log, progress, cancel, the
set's shared budget, the upload to resume and whom to tell its id).
A sender — :mod:`.single_put` or :mod:`.multipart` — answers with a :class:`Sent`: facts, never hopes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_kraken_s3.core.checksum import Checksum, Encryption
from airflow_provider_kraken_s3.core.log import Log
from airflow_provider_kraken_s3.core.parts import Part, PartPlan
from airflow_provider_kraken_s3.transfer.access import S3Access
from airflow_provider_kraken_s3.transfer.progress import ProgressReporter

#: ``on_upload_id(upload_id, part_size)``: a multipart upload was started or resumed (persist it before any
#: part is sent), or ``(None, part_size)`` once it is completed or aborted.
UploadIdCallback = Callable[[str | None, int], None]


@dataclass(frozen=True)
class Shipment:
    """One file to send to one key, and what the bytes sent must prove.

    :param expected_etag: the inventory's ETag after planning (None when the file is sent in one part and
        that ETag follows from ``expected_md5``).
    :param upload_id: a multipart upload of this key, part size and expectation to resume.
    :param budget: a semaphore bounding the requests in flight across all files of a set.
    :param checksum: the file's CRC64NVME when a read before sending computed it (the hash-first step, the
        check before a replacing PUT): a single PUT declares it as it is, and S3 checks the bytes against it.
    """

    access: S3Access
    path: Path
    stat: os.stat_result
    plan: PartPlan
    bucket: str
    key: str
    log: Log
    reporter: ProgressReporter
    cancel: threading.Event
    expected_md5: str | None = None
    expected_etag: str | None = None
    storage_class: str | None = None
    upload_id: str | None = None
    on_upload_id: UploadIdCallback | None = None
    max_concurrency: int = 4
    budget: threading.Semaphore | None = None
    checksum: Checksum | None = None

    @property
    def target(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def expected_digest(self) -> str | None:
        """What the bytes of a single PUT must hash to (an MD5, or a one-part ETag that is one), if known."""
        return self.expected_md5 or self.expected_etag

    def object_arguments(self) -> dict[str, Any]:
        """Arguments every new object gets, whichever way it is sent."""
        return {"StorageClass": self.storage_class} if self.storage_class else {}

    def transfer_slot(self) -> AbstractContextManager[Any]:
        """One place in the set's shared budget of requests in flight (no limit without a budget)."""
        return self.budget if self.budget is not None else nullcontext()


@dataclass(frozen=True)
class Sent:
    """What a sender proved: the object's ETag (S3's answer), the whole-file MD5 if it was computed, the parts
    sent now and the number reused from an earlier attempt, and the version S3 created (where the bucket
    keeps versions).

    ``local_etag`` and ``local_checksum`` are what the bytes read give (the ETag of the part MD5s, the
    full-object CRC64NVME of the part CRCs); ``checksum`` is S3's full-object checksum where its answer showed
    one equal to ours. ``proven`` is False when S3's answer alone could not prove the object (a completion
    without a checksum under SSE-KMS, say): the upload then reads it with HEAD and decides from that.
    """

    etag: str
    md5: str | None
    parts_sent: tuple[Part, ...]
    parts_reused: int = 0
    version_id: str | None = None
    local_etag: str = ""
    local_checksum: Checksum | None = None
    checksum: Checksum | None = None
    encryption: Encryption = Encryption.NONE
    proven: bool = True

    @property
    def bytes_sent(self) -> int:
        return sum(part.length for part in self.parts_sent)
