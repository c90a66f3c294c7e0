"""An HTTP proxy on 127.0.0.1 in front of moto that can answer or rewrite chosen requests:
an EC2 role that is denied an action (UnauthorizedOperation for DryRun calls), or snapshots
EC2 still reports `pending` with a progress percentage. The real client code runs unchanged
against it (it is just another endpoint_url)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# (request body) -> response body rewriter, or None to pass through
Rewrite = Callable[[bytes, bytes], bytes]
# (request body) -> (status, body) to answer without asking upstream, or None
Answer = Callable[[bytes], tuple[int, bytes] | None]

UNAUTHORIZED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    b"<Code>UnauthorizedOperation</Code><Message>You are not authorized to perform this "
    b"operation.</Message></Error></Errors><RequestID>testbed-proxy</RequestID></Response>"
)


def deny_dry_run(action: bytes) -> Answer:
    """Answer UnauthorizedOperation to `action` called with DryRun=true."""

    def answer(body: bytes) -> tuple[int, bytes] | None:
        if f"Action={action.decode()}&".encode() in body + b"&" and b"DryRun=true" in body:
            return 403, UNAUTHORIZED
        return None

    return answer


class RewritingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.answers: list[Answer] = []
        self.rewrites: list[Rewrite] = []
        self.requests: list[bytes] = []  # request bodies, in order
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                proxy.requests.append(body)
                for answer in list(proxy.answers):
                    canned = answer(body)
                    if canned is not None:
                        self._reply(canned[0], {"Content-Type": "text/xml"}, canned[1])
                        return
                status, headers, data = proxy.upstream(self.command, self.path, self.headers, body)
                for rewrite in list(proxy.rewrites):
                    data = rewrite(body, data)
                self._reply(status, headers, data)

            def _reply(self, status: int, headers: dict[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def upstream(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            forward = {k: v for k, v in headers.items() if k.lower() != "connection"}
            conn.request(method, path, body=body, headers=forward)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def start(self) -> RewritingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
