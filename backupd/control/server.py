"""The control socket's HTTP server: bounded, time-limited, and checked per peer.

A garbled, oversized or slow request is answered with an error or dropped; it can never
crash the daemon. Each connection is judged at accept time (SO_PEERCRED) and counted
against its role's slots (control/limits.py), so readers can never starve admin requests;
one deadline covers the whole request (headers and body), however slowly it trickles in;
one request per connection; long-polls wait outside the request slots.
"""

from __future__ import annotations

import io
import json
import os
import select
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from backupd.control.limits import ROLE_NAMES, Limits, RolePool, RolePools
from backupd.control.peer import Peer, Role, group_id, peer_of, role_of
from backupd.errors import (
    BackupdError,
    ConfigError,
    ControlBusy,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    UsageError,
)
from backupd.log import get_logger

MAX_BODY_BYTES = 64 * 1024
REFUSED_LINGER_SECONDS = 1.0  # a refused peer may still be sending its request: let it land
MAX_LINGERING = 256
PEER_CHECK_SECONDS = 1.0  # how often a parked wait looks whether its client went away

_log = get_logger("control")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: dict[str, Any]
    peer: Peer
    role: Role


@dataclass(frozen=True)
class LongPoll:
    """Answer later: once `done` is set or `timeout` seconds passed, reply with `answer()`.

    The connection gives its request slot back while it waits (a parked wait); when the
    role's parked waits are all taken, `answer()` is sent at once instead.
    """

    done: threading.Event
    timeout: float
    answer: Callable[[], tuple[int, dict[str, Any]]]


Reply = tuple[int, dict[str, Any]]
Handler = Callable[[Request], Reply | LongPoll]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    changes: bool = False  # changing requests need Role.ADMIN


class _Ticket:
    """One connection's claim on its role's pool; gives the slot back exactly once."""

    def __init__(self, pool: RolePool, role: Role, peer: Peer, deadline: float) -> None:
        self.pool = pool
        self.role = role
        self.peer = peer
        self.deadline = deadline  # monotonic: the whole request must have arrived by then
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self.pool.release_slot()


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline: trickling a byte at a time does not extend it."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("request deadline passed")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Thread per connection, admitted only while its role has a free slot."""

    daemon_threads = True
    block_on_close = False
    control: ControlServer
    closing: threading.Event
    lingering: deque[tuple[float, socket.socket]]
    tickets: dict[socket.socket, _Ticket]  # each connection's, until its thread ends

    def process_request(self, request: Any, client_address: Any) -> None:
        control = self.control
        peer = peer_of(request)
        role = role_of(peer, control.reader_gid, control.admin_gid)
        pool = control.pools.of(role)
        if not pool.take_slot():
            self._refuse(request, role, pool)
            return
        ticket = _Ticket(pool, role, peer, time.monotonic() + control.limits.request_seconds)
        self.tickets[request] = ticket
        try:
            super().process_request(request, client_address)
        except BaseException:
            del self.tickets[request]
            ticket.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.tickets.pop(request).release()

    def _refuse(self, request: socket.socket, role: Role, pool: RolePool) -> None:
        """503 without reading: written now (it fits the socket buffer), closed a bit later."""
        name = ROLE_NAMES[role]
        error = ControlBusy(slots=pool.slots, role=name)
        _log.warning("control request refused", role=name, slots=pool.slots)
        self.control.count(error.http_status)
        try:
            request.setblocking(False)
            request.send(_response(error.http_status, {"error": error.to_dict()}))
            request.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if len(self.lingering) >= MAX_LINGERING:
            self.shutdown_request(request)
            return
        self.lingering.append((time.monotonic() + REFUSED_LINGER_SECONDS, request))

    def service_actions(self) -> None:
        """Close refused connections whose linger ran out (called by serve_forever)."""
        super().service_actions()
        now = time.monotonic()
        while self.lingering and self.lingering[0][0] <= now:
            _when, request = self.lingering.popleft()
            _drain(request)
            request.close()

    def server_close(self) -> None:
        self.closing.set()
        super().server_close()
        while self.lingering:
            self.lingering.popleft()[1].close()


def _drain(sock: socket.socket) -> None:
    """Read what a refused peer sent, so closing does not reset its connection."""
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def _response(status: int, payload: dict[str, Any]) -> bytes:
    data = (json.dumps(payload, indent=2, default=str) + "\n").encode()
    phrase = HTTPStatus(status).phrase if status in _PHRASES else ""
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nServer: backupd\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "backupd"

    def setup(self) -> None:
        super().setup()
        self.ticket = self.server.tickets[self.request]
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self.ticket.deadline))

    def finish(self) -> None:
        """Free the slot before the close a client waits for (so its next request finds it)."""
        try:
            super().finish()
        finally:
            self.ticket.release()

    def handle(self) -> None:
        """One request per connection: an idle keep-alive would hold a slot for nothing."""
        self.close_connection = True
        self.handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("control request", detail=format % args)

    def log_error(self, format: str, *args: Any) -> None:
        _log.info("control connection dropped", detail=format % args, uid=self.ticket.peer.uid)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests (stdlib parser) get our JSON error shape too."""
        self._reply(code, {"error": {"code": "bad_request", "message": message or explain or ""}})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()  # a TimeoutError here drops the request unanswered
        except BackupdError as exc:
            self._reply(exc.http_status, {"error": exc.to_dict()})
            return
        self._reply(*self._answer(method, body))

    def _answer(self, method: str, body: dict[str, Any]) -> Reply:
        ticket = self.ticket
        try:
            result = self.server.control.handle(method, self.path, body, ticket.peer, ticket.role)
            return self._park(result) if isinstance(result, LongPoll) else result
        except BackupdError as exc:
            return exc.http_status, {"error": exc.to_dict()}
        except Exception as exc:
            _log.exception("control handler failed", path=self.path)
            return 500, {"error": {"code": "internal_error", "message": str(exc)}}

    def _park(self, poll: LongPoll) -> Reply:
        """Wait for `poll` without holding a request slot (in a parked wait, if one is free)."""
        pool = self.ticket.pool
        self.ticket.release()  # first, so a client that sees it parked finds the slot free
        if not pool.take_wait():
            _log.warning("long-poll answered at once: every parked wait is taken")
            return poll.answer()
        try:
            deadline = time.monotonic() + poll.timeout
            while not poll.done.wait(min(PEER_CHECK_SECONDS, max(deadline - time.monotonic(), 0))):
                if time.monotonic() >= deadline or self._abandoned():
                    break
            return poll.answer()
        finally:
            pool.release_wait()

    def _abandoned(self) -> bool:
        """The client hung up or the server is closing: stop waiting for it."""
        if self.server.closing.is_set():
            return True
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

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
        try:
            self.connection.settimeout(self.server.control.limits.request_seconds)
            self.wfile.write(_response(status, payload))
        except OSError:
            self.close_connection = True  # the peer went away or stopped reading
        self.log_request(status)
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
        limits: Limits | None = None,
    ) -> None:
        self.path = path
        self.limits = limits or Limits()
        self.pools = RolePools(self.limits)
        self._routes = {(route.method, route.path): route for route in routes}
        self._paths = {route.path for route in routes}
        self._group_name = socket_group
        self.reader_gid = group_id(socket_group)
        self.admin_gid = group_id(admin_group)
        if self.reader_gid is None:
            raise ConfigError([f"daemon.socket_group: group {socket_group!r} does not exist"])
        if admin_group and self.admin_gid is None:
            raise ConfigError([f"daemon.admin_group: group {admin_group!r} does not exist"])
        self._on_status = on_status
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        socket_path = Path(self.path)
        if not socket_path.parent.is_dir():
            socket_path.parent.mkdir(parents=True)
            # search only: readers reach the socket by name; the socket's own mode guards it
            os.chmod(socket_path.parent, 0o711)  # noqa: S103 - search only, by design
        if socket_path.is_socket():
            socket_path.unlink()  # left by a killed daemon; we hold the only live one
        old_umask = os.umask(0o117)
        try:
            server = _Server(self.path, _RequestHandler, bind_and_activate=True)
        finally:
            os.umask(old_umask)
        server.control = self
        server.closing = threading.Event()
        server.lingering = deque()
        server.tickets = {}
        try:
            os.chown(self.path, -1, self.reader_gid if self.reader_gid is not None else -1)
        except PermissionError as exc:
            server.server_close()
            raise ConfigError(
                [
                    f"daemon.socket_group: cannot give the socket to group {self._group_name!r}"
                    " (the service user must be a member of it)"
                ]
            ) from exc
        os.chmod(self.path, 0o660)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="control", daemon=True
        )
        self._thread.start()

    def handle(
        self, method: str, raw_path: str, body: dict[str, Any], peer: Peer, role: Role
    ) -> Reply | LongPoll:
        url = urlparse(raw_path)
        route = self._routes.get((method, url.path))
        if route is None:
            if url.path in self._paths:
                raise MethodNotAllowed(method=method, path=url.path)
            raise NotFound(path=url.path)
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

    def usage(self) -> dict[str, Any]:
        """Slots and parked waits per role: the status document's `control` section."""
        return self.pools.usage()

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
