"""backupctl's side of the control socket: one JSON request, typed errors back."""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

from backupd.errors import BackupdError, DaemonUnreachable, PermissionDenied, from_code


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("backupd", timeout=timeout)
        self._socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class ControlClient:
    def __init__(self, socket_path: str, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send one request; raise the typed error the daemon reported, or DaemonUnreachable."""
        conn = _UnixConnection(self.socket_path, timeout or self.timeout)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except PermissionError as exc:
            raise PermissionDenied(
                message=f"cannot open {self.socket_path} (need membership of the socket group)"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise DaemonUnreachable(socket=self.socket_path, reason=reason or "no answer") from exc
        finally:
            conn.close()
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise BackupdError(f"daemon answered with non-JSON (HTTP {response.status})") from exc
        if response.status >= 400:
            error = data.get("error", {}) if isinstance(data, dict) else {}
            raise from_code(str(error.get("code", "")), str(error.get("message", raw[:200])))
        if not isinstance(data, dict):
            raise BackupdError("daemon answered with a non-object JSON body")
        return data
