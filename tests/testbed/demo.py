"""`make demo`: the whole job on an embedded local default, in the foreground.

Brings up a throwaway MariaDB on a loop-mounted ext4 and moto as the S3/EC2 endpoint, runs
`backupd run` on them, and shows what an operator sees. Ctrl-C (or --once) tears it all down.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

from tests.testbed.bed import LocalBed
from tests.testbed.daemon import BIN_DIR, DaemonProcess, NotifyListener, render_toml


def show(*args: str) -> int:
    print(f"\n$ backupctl {' '.join(args)}", flush=True)
    return subprocess.run([str(BIN_DIR / "backupctl"), *args], check=False).returncode


def switch_to_ebs(bed: LocalBed, config: Path, daemon: DaemonProcess) -> int:
    """Point the running daemon at moto's EC2 (an instance with a data volume), via SIGHUP."""
    settings = bed.config()
    settings["snapshot"].update({"provider": "ebs", "ebs": bed.ebs_section()})
    config.write_text(render_toml(settings))
    print('\ndemo: [snapshot] provider = "ebs" (moto), then SIGHUP', flush=True)
    daemon.signal(signal.SIGHUP)
    try:
        daemon.notify.wait_for("STATUS", "config reloaded")
    except TimeoutError as exc:
        print(f"demo: reload failed: {exc}")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--base", default="/var/tmp/backupd-demo", help="scratch directory")
    parser.add_argument("--once", action="store_true", help="show the tour, then tear down")
    args = parser.parse_args(argv)
    bed = LocalBed(Path(args.base))
    print(f"demo: bringing up MariaDB, moto and a loop filesystem under {bed.base}", flush=True)
    bed.up()
    config = bed.write_config()
    notify = NotifyListener(bed.base / "notify.sock")
    daemon = DaemonProcess(config, bed.base / "backupd.log", notify)
    failures = 0
    try:
        daemon.start()
        print(f"demo: backupd is running (config {config}, log {daemon.log_path})", flush=True)
        sock = ["--socket", str(bed.base / "run" / "control.sock")]
        failures += show(*sock, "probe") != 0
        failures += show(*sock, "status") != 0
        failures += show(*sock, "snapshot", "--wait") != 0  # local provider: an image file
        failures += switch_to_ebs(bed, config, daemon)
        failures += show(*sock, "snapshot", "--wait") != 0  # EBS against moto's EC2
        failures += show(*sock, "snapshots") != 0
        failures += show(*sock, "prune", "--dry-run") != 0
        if not args.once:
            print("\ndemo: backupd keeps running; Ctrl-C to stop and tear down", flush=True)
            assert daemon.process is not None
            daemon.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        daemon.stop()
        notify.close()
        bed.down()
    print(f"demo: {'done' if not failures else f'{failures} step(s) failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
