"""A scratch server starts on a data directory, stays off the network, and proves its tables."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from backupd.restore.proof import prove
from backupd.restore.scratch import ScratchServer, ScratchServerFailed, remap_binlog_index

pytestmark = pytest.mark.integration


def test_scratch_server_and_proof(tmp_path: Path) -> None:
    datadir = tmp_path / "data"
    subprocess.run(
        [
            "mariadb-install-db",
            "--user=root",
            f"--datadir={datadir}",
            "--skip-test-db",
            "--auth-root-authentication-method=normal",
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    server = ScratchServer(datadir, tmp_path / "run", log_bin=str(tmp_path / "binlog" / "b"))
    (tmp_path / "binlog").mkdir()
    server.start()
    try:
        with server.connect() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT @@skip_networking, @@event_scheduler, @@log_bin")
            assert cursor.fetchone() == (1, "OFF", 1)
            cursor.execute("CREATE DATABASE proof_t")
            cursor.execute("CREATE TABLE proof_t.a (id INT PRIMARY KEY) ENGINE=InnoDB")
            cursor.execute("INSERT INTO proof_t.a VALUES (1), (2)")
            proofs = prove(conn)
        assert [p.table for p in proofs] == ["`proof_t`.`a`"]
        assert proofs[0].ok and proofs[0].checksum
    finally:
        server.stop()
    assert server.process is not None and server.process.returncode == 0


def test_scratch_server_failure_names_the_cause(tmp_path: Path) -> None:
    server = ScratchServer(tmp_path / "missing", tmp_path / "run", extra={"no-such-option": "1"})
    with pytest.raises(ScratchServerFailed, match="exited"):
        server.start(timeout=60)


def test_remap_binlog_index(tmp_path: Path) -> None:
    index = tmp_path / "mysql-bin.index"
    index.write_text(
        "/old/mnt/mysql/binlog/mysql-bin.000001\n/old/mnt/mysql/binlog/mysql-bin.000002\n"
    )
    assert remap_binlog_index(index, "/old/mnt", "/restore/mnt") == 2
    assert index.read_text().splitlines() == [
        "/restore/mnt/mysql/binlog/mysql-bin.000001",
        "/restore/mnt/mysql/binlog/mysql-bin.000002",
    ]
