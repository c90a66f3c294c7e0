"""A TCP proxy on 127.0.0.1 in front of an endpoint (moto), for tests of a misbehaving one:
it can hold back requests containing a marker (e.g. the EC2 action `CreateSnapshots`: a slow
endpoint while frozen), or hang them (accept, never answer, drop the connection after
`delay`: an endpoint that stopped answering), and it can be cut (refuse and drop connections:
an endpoint that went away) and restored. `matches` counts the marked requests. In front of
S3 it can also fail the GETs of selected keys with a `503 SlowDown` (a throttled read of one
object while the rest of the store answers). It counts the HTTP requests it receives by S3
operation (`requests`), which is what an S3 bill counts."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
from collections import Counter
from urllib.parse import unquote

# A request line at the start of the stream or after a CRLF; bodies (zstd) never hold one.
_REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/1\.[01]\r\n")
_CARRY = 4096  # bytes kept between reads, so a request line split across two is still seen


def s3_operation(method: str, target: str) -> str:
    """The S3 operation a request line names (the names the daemon's metric uses)."""
    path, _, query = target.partition("?")
    if method == "GET":
        return "ListObjectsV2" if "list-type=2" in query else "GetObject"
    if method == "HEAD":
        return "HeadBucket" if path.strip("/").count("/") == 0 else "HeadObject"
    if method == "PUT":
        return "CreateBucket" if path.strip("/").count("/") == 0 else "PutObject"
    return {"DELETE": "DeleteObject", "POST": "DeleteObjects" if "delete" in query else "Post"}[
        method
    ]


SLOW_DOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
SLOW_DOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
    + f"Content-Length: {len(SLOW_DOWN_BODY)}\r\n".encode()
    + b"Connection: close\r\n\r\n"
    + SLOW_DOWN_BODY
)


class DelayingProxy:
    def __init__(
        self,
        upstream_port: int,
        marker: bytes | None = None,
        delay: float = 0.0,
        hang: bool = False,
    ) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.delay = delay
        self.hang = hang  # marked requests are never forwarded; dropped after `delay`
        self.matches = 0
        self.seen = threading.Event()  # set when a marked request arrived (and is held)
        self._stop = threading.Event()
        self._cut = threading.Event()
        self.failing_gets: set[str] = set()  # key fragments whose GETs answer 503
        self.failed_gets = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()  # S3 operation -> requests forwarded
        self.gets: Counter[str] = Counter()  # GetObject path (unquoted, no query) -> requests
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DelayingProxy:
        self._thread.start()
        return self

    def cut(self) -> None:
        """Refuse new connections and drop open ones (what a dead endpoint looks like)."""
        self._cut.set()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._cut.clear()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for src, dst, hold in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(src, dst, hold), daemon=True).start()

    def fail_gets(self, *fragments: str) -> None:
        """Answer 503 SlowDown to every GET whose request line contains one of `fragments`."""
        self.failing_gets = set(fragments)

    def _failing(self, chunk: bytes) -> bool:
        request_line = chunk.split(b"\r\n", 1)[0].decode("latin-1")
        return request_line.startswith("GET ") and any(
            fragment in request_line for fragment in self.failing_gets
        )

    def _pipe(self, src: socket.socket, dst: socket.socket, hold: bool) -> None:
        with self._lock:
            self._open.update((src, dst))
        carry = b""
        try:
            while chunk := src.recv(65536):
                if hold:
                    carry = self._count(carry, chunk)
                if hold and self._failing(chunk):
                    self.failed_gets += 1
                    src.sendall(SLOW_DOWN)
                    return  # the finally closes both sides, as S3 may after an error
                if hold and self.marker is not None and self.marker in chunk:
                    with self._lock:
                        self.matches += 1
                    self.seen.set()
                    if self._stop.wait(self.delay) or self.hang:
                        return
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._open.discard(src)

    def _count(self, carry: bytes, chunk: bytes) -> bytes:
        """Count the request lines that end in `chunk`; return the tail to carry over."""
        data = carry + chunk
        for match in _REQUEST_LINE.finditer(data):
            if match.end() > len(carry):
                method, target = match.group(1).decode(), match.group(2).decode()
                operation = s3_operation(method, target)
                with self._lock:
                    self.requests[operation] += 1
                    if operation == "GetObject":
                        self.gets[unquote(target.partition("?")[0])] += 1
        return data[-_CARRY:]

    def stop(self) -> None:
        self._stop.set()
        self.cut()
        self._listener.close()
