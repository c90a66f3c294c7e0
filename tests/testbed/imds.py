"""A stand-in for the EC2 instance metadata service (IMDSv2) on 127.0.0.1."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOKEN = "testbed-imds-token"


class ImdsStub:
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.requests: list[tuple[str, str, str]] = []  # method, path, token header
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: str) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                stub.requests.append(("PUT", self.path, ""))
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                if self.path == "/latest/api/token" and ttl:
                    self._answer(200, TOKEN)
                else:
                    self._answer(400, "")

            def do_GET(self) -> None:
                token = self.headers.get("X-aws-ec2-metadata-token", "")
                stub.requests.append(("GET", self.path, token))
                if token != TOKEN:
                    self._answer(401, "")  # IMDSv2 only: no token, no answer
                elif self.path == "/latest/meta-data/instance-id":
                    self._answer(200, stub.instance_id)
                else:
                    self._answer(404, "")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ImdsStub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
