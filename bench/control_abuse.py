"""How fast an admin's `status` answers while readers abuse the control socket.

32 reader connections (uid nobody, group `nogroup` = the socket group here) trickle one
header byte every half second: they fill every reader slot, and the rest are refused 503.
Meanwhile root (an admin) asks `GET /v1/status` N times. Prints JSON: admin latency
p50/max against the goal of 1 s, what the readers got (held / refused), and how long the
held ones lasted before the request deadline cut them.

    .venv/bin/python -m bench.control_abuse [--requests 20] [--slow 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from backupd.control.client import ControlClient
from tests.clients import connect_as, read_until_closed, trickle
from tests.testbed.bed import LocalBed
from tests.testbed.daemon import DaemonProcess, NotifyListener, render_toml

NOBODY = (65534, 65534)


def configure(bed: LocalBed, request_seconds: float) -> Path:
    config: dict[str, Any] = bed.config()
    config["daemon"].update({"socket_group": "nogroup", "socket_request_seconds": request_seconds})
    config["snapshot"]["enabled"] = False
    path = bed.base / "bench.toml"
    path.write_text(render_toml(config))
    return path


def measure(sock: str, args: argparse.Namespace) -> dict[str, Any]:
    connected_at = time.monotonic()
    slow = connect_as(*NOBODY, sock, args.slow)
    stop = threading.Event()
    sender = threading.Thread(target=trickle, args=(slow, stop), daemon=True)
    sender.start()
    client = ControlClient(sock, timeout=30)
    latencies = []
    for _ in range(args.requests):
        started = time.monotonic()
        client.request("GET", "/v1/status")
        latencies.append(time.monotonic() - started)
    closed = read_until_closed(slow, args.request_seconds + 30)
    stop.set()
    for conn in slow:
        conn.close()
    held = [when - connected_at for when, data in closed.values() if not data]
    return {
        "slow_clients": args.slow,
        "admin_status_requests": len(latencies),
        "admin_status_p50_ms": round(statistics.median(latencies) * 1000, 3),
        "admin_status_max_ms": round(max(latencies) * 1000, 3),
        "target_max_ms": 1000,
        "readers_refused_503": sum(1 for _when, data in closed.values() if data),
        "readers_held_then_cut": len(held),
        "request_deadline_s": args.request_seconds,
        "held_for_s_min": round(min(held), 3) if held else None,
        "held_for_s_max": round(max(held), 3) if held else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="/var/tmp/backupd-bench-control")
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--slow", type=int, default=32)
    parser.add_argument("--request-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    bed = LocalBed(Path(args.base)).up()
    notify = NotifyListener(bed.base / "notify.sock")
    daemon = DaemonProcess(configure(bed, args.request_seconds), bed.base / "backupd.log", notify)
    try:
        daemon.start()
        result = measure(str(bed.base / "run" / "control.sock"), args)
    finally:
        daemon.stop()
        notify.close()
        bed.down()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
