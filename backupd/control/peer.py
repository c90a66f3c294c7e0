"""Who is on the other end of the control socket (SO_PEERCRED) and what they may do."""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from enum import IntEnum


class Role(IntEnum):
    NONE = 0
    READER = 1  # members of daemon.socket_group: read-only requests
    ADMIN = 2  # root and members of daemon.admin_group: changing requests too


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def group_id(name: str) -> int | None:
    if not name:
        return None
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def groups_of(uid: int, primary_gid: int) -> set[int]:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        return {primary_gid}
    return set(os.getgrouplist(user, primary_gid))


def role_of(peer: Peer, reader_gid: int | None, admin_gid: int | None) -> Role:
    if peer.uid == 0:
        return Role.ADMIN
    groups = groups_of(peer.uid, peer.gid)
    if admin_gid is not None and admin_gid in groups:
        return Role.ADMIN
    if reader_gid is not None and reader_gid in groups:
        return Role.READER
    return Role.NONE
