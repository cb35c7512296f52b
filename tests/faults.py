"""An HTTP reverse proxy that injects S3 faults between botocore and ``moto_server``.

:class:`FaultProxy` understands HTTP/1.1 and S3, so a test can aim at one request (``UploadPart`` part 2,
the ``CompleteMultipartUpload`` call, ...) and do to it what the real world does: corrupt a byte in transit,
answer ``503 SlowDown``, lose the response after the server acted, hold a request back so that concurrent
requests finish in a chosen order. The client is a real boto3 client and the
server a real moto process, so botocore's retries, signing and parsing all run as in production.

Usage::

    proxy = FaultProxy(moto_server.port)
    proxy.add(respond("UploadPart", 503, "SlowDown", part_number=2))
    with proxy.running():
        client = boto3.client("s3", endpoint_url=proxy.url, ...)
        ...
    assert [r.status for r in proxy.records("UploadPart", part_number=2)] == [503, 200]

Every request is recorded (:class:`RequestRecord`) in :attr:`FaultProxy.requests`. Faults fire on matching
requests, each at most ``times`` times (``None``: always), in the order they were added. An exception raised
inside the proxy (a failing ``after`` callback, an unreachable server, ...) is re-raised by ``running()`` when
the ``with`` block ends, so it fails the test instead of vanishing in a server thread.

:class:`CuttingProxy`, at the end of this module, is the blunt one: it knows nothing of HTTP and cuts every
TCP connection once N bytes have gone through, the way a link that goes away mid-upload does.
"""

from __future__ import annotations

import http
import http.client
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import KW_ONLY, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar, cast
from urllib.parse import parse_qs, unquote, urlsplit
from xml.sax.saxutils import escape

# Headers that describe one connection, not the message (RFC 9110 §7.6.1). The proxy owns both connections:
# it answers ``Expect: 100-continue`` itself, has the whole body in hand and frames it with Content-Length.
# botocore does not sign any of them (SigV4 skips ``expect`` and ``transfer-encoding``).
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade", "expect"}
)
# Operations whose response body carries the object's ETag (rewritten along with the header).
_ETAG_IN_BODY = frozenset({"CompleteMultipartUpload", "CopyObject"})
UPSTREAM_TIMEOUT = 120.0


class FaultProxyError(RuntimeError):
    """Something failed inside the proxy; raised when ``running()`` ends, chained to the first failure."""


@dataclass
class RequestRecord:
    """One request seen by the proxy, classified as an S3 operation.

    ``status`` is what the client received: the server's status, an injected one, or ``None`` while the
    request is in flight or when its response was lost on purpose. ``faults`` names the faults that fired on it
    (class names, in order of addition). ``headers`` are the request headers with lower-cased names.
    """

    operation: str
    method: str
    path: str
    bucket: str | None
    key: str | None
    part_number: int | None
    upload_id: str | None
    headers: dict[str, str]
    status: int | None = None
    faults: list[str] = field(default_factory=list)

    @property
    def fault_fired(self) -> bool:
        return bool(self.faults)

    def matches(self, operation: str, part_number: int | None = None, key: str | None = None) -> bool:
        """Whether this is ``operation`` (and, when given, on that part number and key)."""
        return (
            self.operation == operation
            and (part_number is None or self.part_number == part_number)
            and (key is None or self.key == key)
        )

    @classmethod
    def classify(cls, method: str, target: str, headers: dict[str, str]) -> RequestRecord:
        """Name the S3 operation of a path-style request (``/bucket/key?query``) from method and query."""
        url = urlsplit(target)
        bucket, _, key = (unquote(part) for part in url.path.lstrip("/").partition("/"))
        query = parse_qs(url.query, keep_blank_values=True)
        upload_id = query.get("uploadId", [None])[0]
        part_number = int(query["partNumber"][0]) if "partNumber" in query else None
        copy = "x-amz-copy-source" in headers
        operation = "Other"
        if method == "PUT" and key:
            if upload_id is not None and part_number is not None:
                operation = "UploadPartCopy" if copy else "UploadPart"
            elif upload_id is None and not query:
                operation = "CopyObject" if copy else "PutObject"
        elif method == "POST" and key:
            if "uploads" in query:
                operation = "CreateMultipartUpload"
            elif upload_id is not None:
                operation = "CompleteMultipartUpload"
        elif method == "DELETE" and key:
            operation = "AbortMultipartUpload" if upload_id is not None else "DeleteObject"
        elif method == "GET" and key:
            if upload_id is not None:
                operation = "ListParts"
            elif "attributes" in query:
                operation = "GetObjectAttributes"
            elif all(q in ("versionId", "partNumber") or q.startswith("response-") for q in query):
                operation = "GetObject"
        elif method == "GET" and bucket:
            if query.get("list-type") == ["2"]:
                operation = "ListObjectsV2"
            elif "uploads" in query:
                operation = "ListMultipartUploads"
        elif method == "HEAD" and key:
            operation = "HeadObject"
        elif method == "HEAD" and bucket:
            operation = "HeadBucket"
        elif method == "PUT" and bucket and not query:
            operation = "CreateBucket"
        return cls(
            operation=operation,
            method=method,
            path=target,
            bucket=bucket or None,
            key=key or None,
            part_number=part_number,
            upload_id=upload_id,
            headers=headers,
        )


@dataclass
class ProxiedRequest:
    """The request as it will be forwarded: faults may change ``body`` before it leaves."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytearray | None


@dataclass
class ProxiedResponse:
    """A response as it will be relayed to the client: faults may change headers and body first."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def set_header(self, name: str, value: str) -> None:
        """Replace every header called ``name`` (any case) by one ``name: value``."""
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()] + [(name, value)]


@dataclass
class Fault:
    """What to do to matching requests; subclasses override the hooks of the stages they act in.

    The proxy runs, for each request: ``on_request`` (before forwarding; may block or change the body),
    ``reply`` (a response instead of forwarding), ``on_response`` (change the response), ``drops_response``
    (close without answering) and ``on_relayed`` (after the response reached the client).
    """

    operation: str
    _: KW_ONLY
    part_number: int | None = None
    key: str | None = None
    times: int | None = 1
    fired: int = field(default=0, init=False)
    drops_response: ClassVar[bool] = False

    def armed_for(self, record: RequestRecord) -> bool:
        return (self.times is None or self.fired < self.times) and record.matches(
            self.operation, self.part_number, self.key
        )

    def on_request(self, request: ProxiedRequest) -> None:
        """Act before the request is forwarded."""

    def reply(self, record: RequestRecord) -> ProxiedResponse | None:
        """A response to send instead of forwarding, or ``None`` to forward."""
        return None

    def on_response(self, record: RequestRecord, response: ProxiedResponse) -> None:
        """Change the response before it is relayed."""

    def on_relayed(self, record: RequestRecord) -> None:
        """Act once the response has been sent to the client."""


@dataclass
class FlipByte(Fault):
    """XOR the body byte at ``offset`` with 0xFF: corruption in transit that the server cannot notice.

    moto checks neither Content-MD5 nor ``x-amz-checksum-*``, so it stores the corrupted bytes and computes
    its ETag from them, which is what an end-to-end verification must catch.
    """

    offset: int = 0

    def on_request(self, request: ProxiedRequest) -> None:
        if request.body is None or not 0 <= self.offset < len(request.body):
            size = 0 if request.body is None else len(request.body)
            raise ValueError(f"flip_byte offset {self.offset} outside a {size}-byte {self.operation} body")
        request.body[self.offset] ^= 0xFF


@dataclass
class FlipResponseByte(Fault):
    """XOR byte ``offset`` *of the object* with 0xFF in every response body that carries it (GetObject, whole
    or ranged: the position is mapped through ``Content-Range``): bytes that rotted in storage, or were
    rewritten behind S3's back, while HEAD still reports the ETag of the original. Use ``times=None`` for
    damage that stays.
    """

    offset: int = 0

    def on_response(self, record: RequestRecord, response: ProxiedResponse) -> None:
        if response.status not in (200, 206):
            return
        content_range = next((v for k, v in response.headers if k.lower() == "content-range"), None)
        start = int(content_range.split()[1].split("-")[0]) if content_range else 0
        index = self.offset - start
        if 0 <= index < len(response.body):
            body = bytearray(response.body)
            body[index] ^= 0xFF
            response.body = bytes(body)


@dataclass
class RewriteETag(Fault):
    """Report ``etag`` (quoted, as S3 does) in the response instead of the server's ETag; the object is unchanged."""

    etag: str

    def on_response(self, record: RequestRecord, response: ProxiedResponse) -> None:
        quoted = self.etag if self.etag.startswith('"') else f'"{self.etag}"'
        if any(name.lower() == "etag" for name, _ in response.headers):
            response.set_header("ETag", quoted)
        if record.operation in _ETAG_IN_BODY:
            element = "<ETag>" + escape(quoted, {'"': "&quot;"}) + "</ETag>"
            response.body = re.sub(rb"<ETag>.*?</ETag>", element.encode(), response.body, flags=re.DOTALL)


@dataclass
class Respond(Fault):
    """Answer with an S3 XML error (``status``, ``code``) without forwarding: the server never sees it."""

    status: int
    code: str
    message: str = "Injected by the test's FaultProxy."

    def reply(self, record: RequestRecord) -> ProxiedResponse:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(self.code)}</Code><Message>{escape(self.message)}</Message>"
            "<RequestId>fault-proxy</RequestId></Error>"
        ).encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", "fault-proxy")]
        return ProxiedResponse(self.status, http.HTTPStatus(self.status).phrase, headers, body)


@dataclass
class LoseResponse(Fault):
    """Forward the request (the server acts on it), then close the client connection without an answer."""

    drops_response: ClassVar[bool] = True


@dataclass
class Hold(Fault):
    """Block the request before forwarding until ``event`` is set, or ``timeout`` seconds (then forward)."""

    event: threading.Event
    timeout: float = 60.0

    def on_request(self, request: ProxiedRequest) -> None:
        self.event.wait(self.timeout)


@dataclass
class After(Fault):
    """Call ``callback(record)`` once the server's response has been relayed to the client.

    The callback runs in the proxy's thread for that connection, possibly after the client has already
    returned: a test that needs its effect should wait for it (e.g. on an event the callback sets). An
    exception in it fails the ``running()`` block.
    """

    callback: Callable[[RequestRecord], object]

    def on_relayed(self, record: RequestRecord) -> None:
        self.callback(record)


@dataclass
class Delay(Fault):
    """Sleep ``seconds`` before forwarding the request."""

    seconds: float

    def on_request(self, request: ProxiedRequest) -> None:
        time.sleep(self.seconds)


# The constructors tests use: ``flip_byte("UploadPart", part_number=2)``, ``respond("PutObject", 503, ...)``.
flip_byte = FlipByte
flip_response_byte = FlipResponseByte
rewrite_etag = RewriteETag
respond = Respond
lose_response = LoseResponse
hold = Hold
after = After
delay = Delay


class FaultProxy:
    """Forward ``http://127.0.0.1:<port>`` to an S3 server on ``target_port``, applying the added faults."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._faults: list[Fault] = []
        self._records: list[RequestRecord] = []
        self._failures: list[BaseException] = []
        self._changed = threading.Condition()
        self._server = _Server(self)
        self.port: int = self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of the records of every request so far, in order of arrival."""
        with self._changed:
            return list(self._records)

    def records(
        self, operation: str, *, part_number: int | None = None, key: str | None = None
    ) -> list[RequestRecord]:
        """The records of one operation (optionally one part number and key), in order of arrival."""
        return [r for r in self.requests if r.matches(operation, part_number, key)]

    def add(self, fault: Fault) -> Fault:
        """Arm ``fault`` for the requests that arrive from now on; returns it (``fault.fired`` counts)."""
        with self._changed:
            self._faults.append(fault)
        return fault

    def wait_for(
        self, operation: str, *, part_number: int | None = None, key: str | None = None, timeout: float = 30.0
    ) -> RequestRecord:
        """Block until a matching request has arrived (it may still be in flight) and return its record."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: next((r for r in self._records if r.matches(operation, part_number, key)), None),
                timeout,
            )
        if found is None:
            raise TimeoutError(f"no {operation} request (part {part_number}, key {key}) within {timeout} s")
        return found

    @contextmanager
    def running(self) -> Iterator[FaultProxy]:
        """Serve while the block runs; then stop and re-raise the first failure inside the proxy, if any.

        Stopping drops idle keep-alive connections, releases held requests (it sets their events, so a failed
        test does not wait out the hold timeout) and waits for the requests in flight to finish.
        """
        thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            thread.join()
            with self._changed:
                holds = [fault for fault in self._faults if isinstance(fault, Hold)]
            for fault in holds:
                fault.event.set()
            self._server.disconnect_all()
            self._server.server_close()
        if self._failures:
            raise FaultProxyError(f"{len(self._failures)} failure(s) in the proxy") from self._failures[0]

    def _failed(self, failure: BaseException) -> None:
        with self._changed:
            self._failures.append(failure)

    def _arrived(self, record: RequestRecord) -> list[Fault]:
        """Record a request and claim the faults that fire on it."""
        with self._changed:
            fired = [fault for fault in self._faults if fault.armed_for(record)]
            for fault in fired:
                fault.fired += 1
            record.faults = [type(fault).__name__ for fault in fired]
            self._records.append(record)
            self._changed.notify_all()
        return fired


class _Server(ThreadingHTTPServer):
    """One thread per client connection; ``server_close()`` joins them, so nothing runs after ``running()``."""

    daemon_threads = False
    block_on_close = True
    request_queue_size = 64

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def disconnect_all(self) -> None:
        """Shut every client connection down, so handler threads idling on keep-alive return."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """One client connection (keep-alive): each request is read whole, faulted, forwarded and relayed."""

    protocol_version = "HTTP/1.1"  # keep-alive, and ``Expect: 100-continue`` answered by the base class

    @property
    def proxy(self) -> FaultProxy:
        return cast(_Server, self.server).proxy

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the records are the log."""

    def _handle(self) -> None:
        try:
            self._proxy_one()
        except ConnectionError:  # the client went away, e.g. after its own timeout
            self.close_connection = True
        except Exception as exc:
            self.close_connection = True
            self.proxy._failed(exc)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle

    def _proxy_one(self) -> None:
        body = self._read_body()
        record = RequestRecord.classify(
            self.command, self.path, {name.lower(): value for name, value in self.headers.items()}
        )
        faults = self.proxy._arrived(record)
        headers = [
            (k, v) for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"content-length"}
        ]
        if body is not None:
            headers.append(("Content-Length", str(len(body))))
        request = ProxiedRequest(self.command, self.path, headers, body)
        for fault in faults:
            fault.on_request(request)
        response = next((r for f in faults if (r := f.reply(record)) is not None), None)
        if response is None:
            response = self._forward(request)
        for fault in faults:
            fault.on_response(record, response)
        if any(fault.drops_response for fault in faults):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        record.status = response.status  # before relaying: the client may look at the record at once
        self._relay(response)
        for fault in faults:
            fault.on_relayed(record)

    def _read_body(self) -> bytearray | None:
        """The request body (de-chunked), or ``None`` when the request has none."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()  # the CRLF closing the chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers, up to the blank line
                pass
            return body
        if "Content-Length" in self.headers:
            return bytearray(self.rfile.read(int(self.headers["Content-Length"])))
        return None

    def _forward(self, request: ProxiedRequest) -> ProxiedResponse:
        """Send the request to the server on a fresh connection and read the whole response."""
        upstream = http.client.HTTPConnection("127.0.0.1", self.proxy.target_port, timeout=UPSTREAM_TIMEOUT)
        try:
            upstream.putrequest(request.method, request.target, skip_host=True, skip_accept_encoding=True)
            for name, value in request.headers:
                upstream.putheader(name, value)
            upstream.endheaders(None if request.body is None else bytes(request.body))
            answer = upstream.getresponse()
            body = answer.read()  # http.client de-chunks; empty for HEAD
            return ProxiedResponse(answer.status, answer.reason, answer.getheaders(), body)
        except OSError as exc:
            raise FaultProxyError(f"forwarding {request.method} {request.target} failed: {exc!r}") from exc
        finally:
            upstream.close()

    def _relay(self, response: ProxiedResponse) -> None:
        """Send the response with Content-Length framing (kept as the server sent it for HEAD)."""
        self.send_response_only(response.status, response.reason)
        for name, value in response.headers:
            if name.lower() in _HOP_BY_HOP or (name.lower() == "content-length" and self.command != "HEAD"):
                continue
            self.send_header(name, value)
        if self.command != "HEAD" and response.status not in (204, 304):
            self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)


# ---------------------------------------------------------------------------------------------- TCP cut


class CuttingProxy:
    """A TCP proxy: forward 127.0.0.1:<port> to ``target_port``; after ``cut_after`` client bytes, drop
    everything. It interrupts a real upload on the wire, the way a flaky network does, rather than by mocking botocore.

    Once cut, the proxy stays down (new connections are closed at once), so botocore's retries fail too and
    the caller sees a network error, as when a link goes away for longer than the retries last.
    """

    def __init__(self, target_port: int, cut_after: int) -> None:
        self.target_port = target_port
        self.cut_after = cut_after
        self.forwarded = 0
        self.down = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def running(self) -> Iterator[CuttingProxy]:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._cut()
            self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while not self.down.is_set():
                data = source.recv(65536)
                if not data:
                    break
                if counted:
                    with self._lock:
                        self.forwarded += len(data)
                        over = self.forwarded > self.cut_after
                    if over:
                        self._cut()
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _cut(self) -> None:
        self.down.set()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
