"""The control socket's HTTP server: bounded, time-limited, and checked per peer.

A garbled, oversized or slow request is answered with an error or dropped; it can never
crash the daemon or hold more than one of a bounded number of handler threads.
"""

from __future__ import annotations

import json
import os
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from backupd.control.peer import Peer, Role, group_id, peer_of, role_of
from backupd.errors import (
    BackupdError,
    ConfigError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    UsageError,
)
from backupd.log import get_logger

MAX_BODY_BYTES = 64 * 1024
REQUEST_TIMEOUT_SECONDS = 5.0
MAX_CONNECTIONS = 16

_log = get_logger("control")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any]
    peer: Peer
    role: Role


Handler = Callable[[Request], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    changes: bool = False  # changing requests need Role.ADMIN


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Thread per connection, but never more than MAX_CONNECTIONS at once."""

    daemon_threads = True
    block_on_close = False
    control: ControlServer
    slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # refused: every slot is busy
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "backupd"
    timeout = REQUEST_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("control request", detail=format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests (stdlib parser) get our JSON error shape too."""
        if getattr(self, "request_version", "") in ("", "HTTP/0.9"):
            self.request_version = "HTTP/1.0"  # always answer with a status line and headers
        self._reply(code, {"error": {"code": "bad_request", "message": message or explain or ""}})
        self.close_connection = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        control = self.server.control
        try:
            status, payload = control.handle(method, self.path, self._read_body(), self._peer())
        except BackupdError as exc:
            status, payload = exc.http_status, {"error": exc.to_dict()}
        except Exception as exc:
            _log.exception("control handler failed", path=self.path)
            status = 500
            payload = {"error": {"code": "internal_error", "message": str(exc)}}
        self._reply(status, payload)

    def _peer(self) -> Peer:
        return peer_of(self.connection)

    def _read_body(self) -> dict[str, Any]:
        length_text = self.headers.get("Content-Length", "0") or "0"
        if not length_text.isdigit():
            self.close_connection = True
            raise UsageError(f"bad Content-Length: {length_text!r}")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise PayloadTooLarge(size=length, limit=MAX_BODY_BYTES)
        if length == 0:
            return {}
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise UsageError("request body must be a JSON object")
        return body

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = (json.dumps(payload, indent=2, default=str) + "\n").encode()
        try:
            self.send_response(status, HTTPStatus(status).phrase if status in _PHRASES else None)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the peer went away; nothing to tell it
        self.server.control.count(status)


_PHRASES = {status.value for status in HTTPStatus}


class ControlServer:
    """Owns the socket file, the route table and the handler threads."""

    def __init__(
        self,
        path: str,
        routes: list[Route],
        socket_group: str,
        admin_group: str = "",
        on_status: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self._routes = {(route.method, route.path): route for route in routes}
        self._paths = {route.path for route in routes}
        self._group_name = socket_group
        self._reader_gid = group_id(socket_group)
        self._admin_gid = group_id(admin_group)
        if self._reader_gid is None:
            raise ConfigError([f"daemon.socket_group: group {socket_group!r} does not exist"])
        if admin_group and self._admin_gid is None:
            raise ConfigError([f"daemon.admin_group: group {admin_group!r} does not exist"])
        self._on_status = on_status
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        socket_path = Path(self.path)
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        if socket_path.is_socket():
            socket_path.unlink()  # left by a killed daemon; we hold the only live one
        old_umask = os.umask(0o117)
        try:
            server = _Server(self.path, _RequestHandler, bind_and_activate=True)
        finally:
            os.umask(old_umask)
        os.chown(self.path, -1, self._reader_gid if self._reader_gid is not None else -1)
        os.chmod(self.path, 0o660)
        server.control = self
        server.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="control", daemon=True
        )
        self._thread.start()

    def handle(
        self, method: str, raw_path: str, body: dict[str, Any], peer: Peer
    ) -> tuple[int, dict[str, Any]]:
        url = urlparse(raw_path)
        route = self._routes.get((method, url.path))
        if route is None:
            if url.path in self._paths:
                raise MethodNotAllowed(method=method, path=url.path)
            raise NotFound(path=url.path)
        role = role_of(peer, self._reader_gid, self._admin_gid)
        needed = Role.ADMIN if route.changes else Role.READER
        if role < needed:
            what = (
                "changing requests need root or the admin group"
                if route.changes
                else (f"read access needs membership of group {self._group_name!r}")
            )
            raise PermissionDenied(message=f"uid {peer.uid}: {what}")
        request = Request(method, url.path, parse_qs(url.query), body, peer, role)
        return route.handler(request)

    def count(self, status: int) -> None:
        if self._on_status:
            self._on_status(status)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        try:
            if Path(self.path).is_socket():
                os.unlink(self.path)
        except OSError:
            pass
