"""What S3 does that moto does not, emulated on the wire by :class:`tests.faults.FaultProxy` faults (issue 17).

- :class:`SseKms` — answers as S3 does for an SSE-KMS bucket (or SSE-C, ``encryption="SSE-C"``): every ETag in
  every response (PutObject, UploadPart, CompleteMultipartUpload, HeadObject, GetObject, ListObjectsV2,
  ListParts) becomes an **opaque** value of the same shape (32 hex digits, ``-N`` kept for multipart objects)
  that is not the MD5 of anything sent, and the object answers carry the encryption headers. The opaque ETag
  is stable per stored ETag (HEAD, GET and listings agree, as on S3), and the proxy translates it back where
  the client hands it to the server (the part ETags of a completion, ``If-Match``), so moto keeps working.
- :class:`ListObjectParts` — adds ``ObjectParts`` (part sizes and their CRC32/CRC32C) to GetObjectAttributes
  answers, as S3 lists them for an object uploaded with checksums (moto 5.2 never does).
- :class:`ValidateChecksums` — refuses, as S3 does, a request whose declared ``x-amz-checksum-crc64nvme``
  does not match the bytes that arrived (``400 BadDigest``): a PutObject or UploadPart body, and at
  completion the full-object value of a ``FULL_OBJECT`` upload against the parts received (and
  ``x-amz-mp-object-size`` against their total). moto stores whatever it is told; with this fault armed
  after a :class:`~tests.faults.FlipByte`, corruption in transit meets S3's validation. It also answers
  ListParts as S3 does and moto does not: each part with the CRC64NVME it was sent with, and the upload's
  ``ChecksumAlgorithm``/``ChecksumType`` as its creation declared them.

Both use only :mod:`tests.faults`' public API (a :class:`~tests.faults.Fault` subclass added with
:meth:`~tests.faults.FaultProxy.add`). Usage::

    kms = proxy.add(SseKms())
    checks = proxy.add(ValidateChecksums())
    ...
    assert checks.refused == [...]
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from dataclasses import dataclass, field

from awscrt import checksums

from tests.faults import Fault, ProxiedRequest, ProxiedResponse, RequestRecord, Respond

#: The key S3 names in ``x-amz-server-side-encryption-aws-kms-key-id`` (any well-formed ARN will do).
KMS_KEY_ID = "arn:aws:kms:us-east-1:111122223333:key/6f1c8e2a-4b7d-4c39-9a0e-2d5f7b3c1e84"

#: Operations whose answers describe one object (and so carry its encryption headers).
OBJECT_OPERATIONS = frozenset(
    {"PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload", "HeadObject", "GetObject"}
)
#: Operations S3 answers only with the customer key for an SSE-C object.
KEYED_OPERATIONS = OBJECT_OPERATIONS | {"GetObjectAttributes", "ListParts"}
#: Operations whose response body lists ETags.
ETAGS_IN_BODY = frozenset(
    {"CompleteMultipartUpload", "ListObjectsV2", "ListParts", "CopyObject", "GetObjectAttributes"}
)

_ETAG_TEXT = re.compile(rb"(?P<hex>[0-9a-fA-F]{32})(?P<suffix>-[0-9]+)?")
_ETAG_ELEMENT = re.compile(rb"<ETag>(?P<value>.*?)</ETag>", re.DOTALL)
_PART_NUMBER = re.compile(rb"<PartNumber>\s*([0-9]+)\s*</PartNumber>")


def opaque_etag(etag: str) -> str:
    """The opaque ETag standing for a stored ETag ``etag`` (unquoted): same shape, not an MD5 of the bytes,
    the same every time (S3's KMS ETags are stable for an object version)."""
    hex_part, _, suffix = etag.strip('"').lower().partition("-")
    opaque = hashlib.md5(b"sse-kms emulation " + hex_part.encode()).hexdigest()
    return f"{opaque}-{suffix}" if suffix else opaque


def crc64nvme_b64(data: bytes | bytearray) -> str:
    """CRC64NVME of ``data`` as S3 writes it (8 bytes big-endian, base64)."""
    return base64.b64encode(checksums.crc64nvme(bytes(data)).to_bytes(8, "big")).decode()


@dataclass
class SseKms(Fault):
    """Answer as an SSE-KMS (or SSE-C) bucket does: opaque ETags everywhere, and the encryption headers.

    :param encryption: ``"aws:kms"`` (the KMS headers) or ``"SSE-C"`` (the customer-key headers).
    :param key_md5: SSE-C only: the customer key's base64 MD5, announced in every object answer and required,
        as S3 requires it, on every request about an object (a request without it gets ``400 InvalidRequest``).
    """

    operation: str = "*"
    times: int | None = None
    encryption: str = "aws:kms"
    key_id: str = KMS_KEY_ID
    key_md5: str | None = None
    #: opaque → stored ETag, for every opaque value handed out
    _real: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def armed_for(self, record: RequestRecord) -> bool:
        return True

    @property
    def real(self) -> dict[str, str]:
        """Opaque → stored ETag, for every opaque value handed out so far."""
        with self._lock:
            return dict(self._real)

    def reply(self, record: RequestRecord) -> ProxiedResponse | None:
        """Under SSE-C with a known key: refuse an object request that does not carry it, as S3 does."""
        if self.key_md5 is None or record.operation not in KEYED_OPERATIONS:
            return None
        if record.headers.get("x-amz-server-side-encryption-customer-key-md5") == self.key_md5:
            return None
        body = b"<Error><Code>InvalidRequest</Code><Message>The object was stored using a form of SSE</Message></Error>"
        return ProxiedResponse(400, "Bad Request", [("Content-Type", "application/xml")], body)

    # ------------------------------------------------------------------ requests: opaque → stored

    def on_request(self, request: ProxiedRequest) -> None:
        request.headers = [
            (name, self._unmap_text(value) if name.lower() in ("if-match", "if-none-match") else value)
            for name, value in request.headers
        ]
        if request.method == "POST" and "uploadId=" in request.target and request.body is not None:
            body = _ETAG_ELEMENT.sub(
                lambda m: b"<ETag>" + self._unmap(m["value"]) + b"</ETag>", bytes(request.body)
            )
            request.body[:] = body  # same length: an opaque ETag has the shape of the one it stands for

    def _unmap(self, value: bytes) -> bytes:
        def real(match: re.Match[bytes]) -> bytes:
            with self._lock:
                stored = self._real.get(match[0].decode().lower())
            return stored.encode() if stored else match[0]

        return _ETAG_TEXT.sub(real, value)

    def _unmap_text(self, value: str) -> str:
        return self._unmap(value.encode()).decode()

    # ------------------------------------------------------------------ responses: stored → opaque

    def opaque(self, etag: str) -> str:
        stored = etag.strip('"').lower()
        value = opaque_etag(stored)
        with self._lock:
            self._real[value] = stored
        return value

    def on_response(self, record: RequestRecord, response: ProxiedResponse) -> None:
        if not 200 <= response.status < 300:
            return
        for name, value in list(response.headers):
            if name.lower() == "etag":
                response.set_header("ETag", f'"{self.opaque(value)}"')
        if record.operation in ETAGS_IN_BODY and response.body:
            response.body = _ETAG_ELEMENT.sub(self._opaque_element, response.body)
        if record.operation in OBJECT_OPERATIONS:
            for name, value in self._headers():
                response.set_header(name, value)

    def _opaque_element(self, match: re.Match[bytes]) -> bytes:
        def opaque(etag: re.Match[bytes]) -> bytes:
            return self.opaque(etag[0].decode()).encode()

        return b"<ETag>" + _ETAG_TEXT.sub(opaque, match["value"]) + b"</ETag>"

    def _headers(self) -> list[tuple[str, str]]:
        if self.encryption == "SSE-C":
            key_md5 = self.key_md5 or base64.b64encode(hashlib.md5(b"customer key").digest()).decode()
            return [
                ("x-amz-server-side-encryption-customer-algorithm", "AES256"),
                ("x-amz-server-side-encryption-customer-key-MD5", key_md5),
            ]
        return [
            ("x-amz-server-side-encryption", self.encryption),
            ("x-amz-server-side-encryption-aws-kms-key-id", self.key_id),
        ]


@dataclass
class ListObjectParts(Fault):
    """Add ``ObjectParts`` (each part's size and ``algorithm`` checksum) to GetObjectAttributes answers, as S3
    lists them for objects uploaded with checksums (moto 5.2 never does)."""

    operation: str = "GetObjectAttributes"
    times: int | None = None
    parts: list[tuple[int, str]] = field(default_factory=list)
    algorithm: str = "CRC32"

    def on_response(self, record: RequestRecord, response: ProxiedResponse) -> None:
        name = f"Checksum{self.algorithm}"
        listed = "".join(
            f"<Part><PartNumber>{n}</PartNumber><Size>{size}</Size><{name}>{crc}</{name}></Part>"
            for n, (size, crc) in enumerate(self.parts, start=1)
        )
        element = (
            f"<ObjectParts><TotalPartsCount>{len(self.parts)}</TotalPartsCount><IsTruncated>false</IsTruncated>"
            f"{listed}</ObjectParts>"
        ).encode()
        for end in (b"</GetObjectAttributesResponse>", b"</GetObjectAttributesOutput>"):
            response.body = response.body.replace(end, element + end)


@dataclass
class ValidateChecksums(Fault):
    """Refuse, as S3 does, a declared CRC64NVME that the bytes received do not have (``400 BadDigest``).

    PutObject and UploadPart: the body's CRC64NVME against ``x-amz-checksum-crc64nvme``. The CRC of every
    part received is kept (per upload id and part number), so a CompleteMultipartUpload declaring a
    full-object value is checked against the parts it names, combined in order, and ``x-amz-mp-object-size``
    against their total length. ``refused`` lists the records of the requests refused.

    ListParts answers carry what S3 shows and moto leaves out: each part's declared CRC64NVME, and the
    checksum algorithm and type the upload was created with.
    """

    operation: str = "*"
    times: int | None = None
    refused: list[RequestRecord] = field(default_factory=list)
    #: (upload id, part number) → (CRC64NVME base64, length) of each part that arrived (the last one wins)
    parts: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    #: (upload id, part number) → the CRC64NVME the part was sent with (what S3 lists for it)
    declared_parts: dict[tuple[str, int], str] = field(default_factory=dict)
    #: upload id → (ChecksumAlgorithm, ChecksumType) its creation declared
    uploads: dict[str, tuple[str, str]] = field(default_factory=dict)
    _pending: threading.local = field(default_factory=threading.local, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def armed_for(self, record: RequestRecord) -> bool:
        return record.operation in (
            "PutObject",
            "UploadPart",
            "CompleteMultipartUpload",
            "CreateMultipartUpload",
            "ListParts",
        )

    def on_response(self, record: RequestRecord, response: ProxiedResponse) -> None:
        if response.status != 200:
            return
        if record.operation == "CreateMultipartUpload" and "x-amz-checksum-algorithm" in record.headers:
            found = re.search(rb"<UploadId>(.*?)</UploadId>", response.body)
            if found:
                kind = record.headers.get("x-amz-checksum-type", "COMPOSITE")
                with self._lock:
                    self.uploads[found[1].decode()] = (record.headers["x-amz-checksum-algorithm"], kind)
        elif record.operation == "ListParts" and record.upload_id:
            response.body = self._list_parts_as_s3(record.upload_id, response.body)

    def _list_parts_as_s3(self, upload_id: str, body: bytes) -> bytes:
        with self._lock:
            created = self.uploads.get(upload_id)
            declared = {n: v for (u, n), v in self.declared_parts.items() if u == upload_id}

        def with_checksum(match: re.Match[bytes]) -> bytes:
            value = declared.get(int(match[1]))
            extra = f"<ChecksumCRC64NVME>{value}</ChecksumCRC64NVME>".encode() if value else b""
            return match[0] + extra

        body = _PART_NUMBER.sub(with_checksum, body)
        if created is not None:
            top = f"<ChecksumAlgorithm>{created[0]}</ChecksumAlgorithm><ChecksumType>{created[1]}</ChecksumType>"
            body = body.replace(b"</UploadId>", b"</UploadId>" + top.encode(), 1)
        return body

    def on_request(self, request: ProxiedRequest) -> None:
        # The body is judged in reply(), after every fault's on_request: a FlipByte added after this fault
        # has done its damage by then, as it would have on the way to S3.
        self._pending.request = request

    def reply(self, record: RequestRecord) -> ProxiedResponse | None:
        request: ProxiedRequest | None = getattr(self._pending, "request", None)
        self._pending.request = None
        if request is None or record.operation not in ("PutObject", "UploadPart", "CompleteMultipartUpload"):
            return None
        if "x-amz-trailer" in record.headers:
            raise ValueError("a streamed (trailer) checksum reached the proxy; these tests run over HTTP")
        declared = record.headers.get("x-amz-checksum-crc64nvme")
        body = request.body or bytearray()
        if record.operation in ("PutObject", "UploadPart"):
            got = crc64nvme_b64(body)
            if declared and declared != got:
                return self._refuse(
                    record,
                    f"The CRC64NVME you specified ({declared}) did not match the calculated checksum ({got}).",
                )
            if record.operation == "UploadPart" and record.upload_id and record.part_number:
                with self._lock:
                    self.parts[(record.upload_id, record.part_number)] = (got, len(body))
                    if declared:
                        self.declared_parts[(record.upload_id, record.part_number)] = declared
                    else:
                        self.declared_parts.pop((record.upload_id, record.part_number), None)
            return None
        if not declared or not record.upload_id:
            return None
        numbers = [int(n) for n in _PART_NUMBER.findall(bytes(body))]
        with self._lock:
            received = [self.parts.get((record.upload_id, n)) for n in numbers]
        if any(part is None for part in received):
            return None  # a part this proxy never saw (sent before it was armed): S3 would know, we do not
        total = _combine([part for part in received if part is not None])
        if total != declared:
            return self._refuse(
                record,
                f"The full object CRC64NVME you specified ({declared}) did not match the calculated checksum ({total}).",
            )
        size = record.headers.get("x-amz-mp-object-size")
        length = sum(part[1] for part in received if part is not None)
        if size is not None and int(size) != length:
            return self._refuse(
                record,
                f"The MpuObjectSize you specified ({size}) did not match the object's size ({length}).",
            )
        return None

    def _refuse(self, record: RequestRecord, message: str) -> ProxiedResponse:
        with self._lock:
            self.refused.append(record)
        return Respond(record.operation, status=400, code="BadDigest", message=message).reply(record)


def _combine(parts: list[tuple[str, int]]) -> str:
    """The full-object CRC64NVME of consecutive parts, each (base64 CRC, length), as S3 combines them.

    Independent of the provider's arithmetic (``core.checksum``): GF(2) matrix powers, as zlib's
    ``crc32_combine`` was first written, for the reflected CRC-64/NVME polynomial.
    """
    total: int | None = None
    for crc_b64, length in parts:
        crc = int.from_bytes(base64.b64decode(crc_b64), "big")
        total = crc if total is None else _combine_two(total, crc, length)
    return base64.b64encode((total or 0).to_bytes(8, "big")).decode()


_POLY = 0x9A6C9329AC4BC9B5


def _times(matrix: list[int], vector: int) -> int:
    result, row = 0, 0
    while vector:
        if vector & 1:
            result ^= matrix[row]
        vector >>= 1
        row += 1
    return result


def _square(matrix: list[int]) -> list[int]:
    return [_times(matrix, matrix[n]) for n in range(64)]


def _combine_two(first: int, second: int, length: int) -> int:
    if length == 0:
        return first
    odd = [_POLY] + [1 << n for n in range(63)]  # the operator for one zero bit
    even = _square(odd)  # two zero bits
    odd = _square(even)  # four zero bits
    while True:  # apply length zero bytes to first, one bit of length at a time
        even = _square(odd)
        if length & 1:
            first = _times(even, first)
        length >>= 1
        if not length:
            break
        odd = _square(even)
        if length & 1:
            first = _times(odd, first)
        length >>= 1
        if not length:
            break
    return first ^ second


@dataclass
class KeepNoChecksums(Fault):
    """Answer as a store that keeps no additional checksums (Ceph RGW 16): every ``x-amz-checksum-*`` header
    is dropped from the responses, whatever moto computed or was told."""

    operation: str = "*"
    times: int | None = None

    def armed_for(self, record: RequestRecord) -> bool:
        return True

    def on_response(self, record: RequestRecord, response: ProxiedResponse) -> None:
        response.headers = [(k, v) for k, v in response.headers if not k.lower().startswith("x-amz-checksum")]
        if record.operation in ("CompleteMultipartUpload", "ListParts"):
            response.body = re.sub(rb"<Checksum[A-Za-z0-9]*>.*?</Checksum[A-Za-z0-9]*>", b"", response.body)


def declared_checksum(record: RequestRecord) -> str | None:
    """The CRC64NVME a request declared (header), if any."""
    return record.headers.get("x-amz-checksum-crc64nvme")
