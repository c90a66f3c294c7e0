"""Pinned restores on the real bed: `restore volumes` writes a restore record and prints the
replay command; that command, run as printed, replays from the recorded set even after a
newer set was taken, and reproduces the source's checksums. A server at another position
(restored from the older set but planned from the newer one, or already replayed) is
refused with both positions; the protected server is still refused."""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backupd.config_loader import load_config
from backupd.restore.drill import mount_image, start_scratch, unmount
from backupd.restore.scratch import ScratchServer
from backupd.snapshot.catalog import Catalog
from backupd.storage import open_store
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import binlog_config, wait_archived
from tests.integration.test_restore import checksums, run_json
from tests.integration.test_snapshot_local import snap_config, take, thawed  # noqa: F401
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def restored_server(
    config: Path, record: dict[str, Any], dest: Path, socket_dir: Path
) -> Iterator[ScratchServer]:
    """Mount the images `restore volumes` made where its steps say; start a server on them."""
    loaded = load_config(config)
    sets, _ = Catalog(open_store(loaded.storage)).list()
    (snapshot,) = [s for s in sets if s.set_id == record["set_id"]]
    mounts: dict[str, Path] = {}
    for volume in record["volumes"]:
        point = dest / f"mnt-{len(mounts)}"
        mount_image(Path(volume["image"]), point)
        mounts[volume["mount"]] = point
    scratch = None
    try:
        scratch = start_scratch(snapshot, mounts, socket_dir)
        yield scratch
    finally:
        if scratch is not None:
            scratch.stop()
        for volume in record["volumes"]:
            unmount(mounts.get(volume["mount"], dest / "none"), Path(volume["image"]))


def printed(command: str, *extra: str) -> tuple[int, dict[str, Any]]:
    words = shlex.split(command)
    assert words[0] == "backupctl"
    return run_json(*words[1:], "--json", *extra)


def test_pinned_replay_runs_as_printed_and_refuses_other_positions(
    snap_config: dict[str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: Callable[..., DaemonProcess],
    live_mariadb: MariaDB,
    workdir: Path,
) -> None:
    db = live_mariadb
    schema = f"pin_{uuid.uuid4().hex[:8]}"
    config = binlog_config(snap_config)
    start_daemon(write_config(config))
    sock = config["daemon"]["socket"]
    db.sql(f"CREATE DATABASE {schema}")
    db.sql(f"CREATE TABLE {schema}.t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB")
    db.sql(f"INSERT INTO {schema}.t VALUES (1, 'in the set')")
    first = take(sock)
    db.sql(f"INSERT INTO {schema}.t VALUES (2, 'after the set'), (3, 'also')")
    wait_archived(sock, db)
    cli = write_config(
        {key: config[key] for key in ("storage", "snapshot", "mysql", "daemon")}, "restore.toml"
    )
    dest = workdir / "restored"
    socket_dir = Path(tempfile.mkdtemp(prefix="backupd-pin-"))  # short: socket path limit
    target_socket = str(socket_dir / "scratch.sock")
    try:
        code, doc = run_json(
            "--config", str(cli), "--json", "restore", "volumes", "--to", "latest",
            "--dest", str(dest), "--target-socket", target_socket,
        )  # fmt: skip
        assert code == 0, doc
        record = doc["record"]
        assert record["set_id"] == first["set_id"] == doc["set_id"]
        assert record["gtid"] == first["gtid"] and record["coordinate"] == first["coordinate"]
        assert record["flavor"] == "mariadb" and record["created_at"] > 0
        assert Path(record["path"]) == dest / f"{first['set_id']}.restore.json"
        assert json.loads(Path(record["path"]).read_text())["set_id"] == first["set_id"]
        command = record["replay_command"]
        assert doc["steps"][-1] == command and f"--target-socket {target_socket}" in command
        assert f"--socket={target_socket}" in doc["steps"][-2]
        assert "--record" in command and "--to latest" in command

        second = take(sock)  # a newer set: an unpinned replay would start from it
        db.sql(f"INSERT INTO {schema}.t VALUES (4, 'after both sets')")
        wait_archived(sock, db)
        expected = checksums(db, schema)
        gtid = str(db.sql("SELECT @@gtid_binlog_pos")[0][0])

        with restored_server(cli, doc, dest, socket_dir) as restored:
            code, refused = run_json(
                "--config", str(cli), "--json", "restore", "replay", "--to", "latest",
                "--target-socket", target_socket,
            )  # fmt: skip
            assert code == 1, refused
            error = refused["error"]
            assert error["code"] == "target_position_mismatch", refused
            assert first["gtid"] in error["message"] and second["gtid"] in error["message"]

            code, refused = printed(command.replace(target_socket, db.socket))
            assert code == 1 and refused["error"]["code"] == "protected_server", refused

            code, done = printed(command)
            assert code == 0, done
            assert done["snapshot"]["set_id"] == first["set_id"]  # pinned, not the newer set
            assert done["start_position"] == {
                "position": first["gtid"],
                "checked": "gtid_binlog_pos",
            }
            assert done["replay"]["server_gtid"] == gtid
            assert checksums_of(restored, schema) == expected

            code, again = printed(command)  # the same replay twice would apply it twice
            assert code == 1 and again["error"]["code"] == "target_position_mismatch", again
            assert gtid in again["error"]["message"] and first["gtid"] in again["error"]["message"]
            assert checksums_of(restored, schema) == expected
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
        for image in dest.glob("*.img"):
            image.unlink()


def checksums_of(server: ScratchServer, schema: str) -> dict[str, int]:
    with server.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CHECKSUM TABLE `{schema}`.`t`")
        return {f"`{schema}`.`{row[0].split('.')[1]}`": int(row[1]) for row in cur}
