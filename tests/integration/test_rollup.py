"""Roll-up on the real bed (MariaDB, moto's S3, the daemon): a binlog file that never closes
is folded into objects of about `binlog.rollup_bytes` while it grows. The folds hold the
file's exact bytes, `find` still names the accident first from their merged indexes, and
the parts a fold replaced are gone after the next roll-up (here: the next start).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backupd.binlog import layout, rollup
from tests.conftest import ConfigFactory
from tests.integration.test_binlog import (
    IN_USE_FLAG_OFFSET,
    fetch,
    wait_archived,
    wait_for,
)
from tests.integration.test_find import MIN_ROWS, find, run_workload, s3_config  # noqa: F401
from tests.testbed.daemon import DaemonProcess
from tests.testbed.mariadb import MariaDB

pytestmark = pytest.mark.integration

ROLLUP_BYTES = 96 * 1024


def listed(
    s3: Any, bucket: str, file: str
) -> tuple[list[layout.SegmentKey], list[layout.IndexKey]]:
    """The file's segments and index objects."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="repo/")
    keys = [i["Key"].removeprefix("repo/") for page in pages for i in page.get("Contents", [])]
    segments = [s for k in keys if (s := layout.parse_segment(k)) is not None and s.file == file]
    indexes = [i for k in keys if (i := layout.parse_index(k)) is not None and i.file == file]
    return segments, indexes


def test_an_open_file_is_rolled_up_exactly(
    live_mariadb: MariaDB,
    s3_config: tuple[Path, dict[str, Any], str, Any],  # noqa: F811
    write_config: ConfigFactory,
    start_daemon: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    db = live_mariadb
    _config, raw_config, bucket, s3 = s3_config
    folding = {"rollup_bytes": ROLLUP_BYTES, "index_flush_seconds": 0.5}
    raw_config["binlog"].update(folding, segment_max_bytes=16384)
    config = write_config(raw_config)
    sock = str(raw_config["daemon"]["socket"])
    db.sql("FLUSH BINARY LOGS")
    file = str(db.sql("SHOW MASTER STATUS")[0][0])
    daemon = start_daemon(config)
    gtid, deleted = run_workload(db, random.Random())
    for _ in range(10):  # more good writes after it, in the same file (~80 kB each)
        db.sql(
            "INSERT INTO shop.items (customer, note) "
            "SELECT seq % 50, REPEAT('m', 60) FROM shop.seq_1_to_1000"
        )
    assert str(db.sql("SHOW MASTER STATUS")[0][0]) == file  # still open: no compaction
    end = wait_archived(sock, db)[1]
    assert end > 6 * ROLLUP_BYTES

    def folded() -> list[layout.SegmentKey]:
        found = layout.chain(listed(s3, bucket, file)[0])
        assert found is not None and not found.holes
        return [seg for seg in found.segments if seg.size >= ROLLUP_BYTES]

    try:
        wait_for(lambda: len(folded()) >= 4, "the open file to be rolled up", timeout=120)
    except AssertionError:
        segments, indexes = listed(s3, bucket, file)
        sizes = [(s.start, s.end) for s in sorted(segments)]
        spans = [(i.start, i.end) for i in sorted(indexes)]
        log = [
            line
            for line in daemon.log_path.read_text().splitlines()
            if "compact" in line or "roll" in line or "Error" in line
        ]
        raise AssertionError(
            f"not rolled up: segments {sizes}, indexes {spans}, log {log[-20:]}"
        ) from None
    segments, _ = listed(s3, bucket, file)
    chain = layout.chain(segments)
    assert chain is not None and not chain.closed
    rolled = folded()
    assert all(ROLLUP_BYTES <= seg.size <= 2 * ROLLUP_BYTES for seg in rolled)
    assert sum(seg.size for seg in rolled) > end / 2
    # (the parts a fold replaced wait for the file's next roll-up: tests/unit/test_binlog_rollup)

    # the folds hold the server's bytes exactly
    fetch(config, tmp_path / "fetched", file)
    copy = (tmp_path / "fetched" / file).read_bytes()
    server = bytearray((db.binlog_dir / file).read_bytes()[: chain.end])
    server[IN_USE_FLAG_OFFSET] &= ~0x1  # open on the server, not in the archive
    assert len(copy) >= chain.end and copy[: chain.end] == bytes(server)

    # find reads the folds' merged indexes: the accident first, as without roll-up
    # (the archive begins at the session server's oldest binlog: earlier tests' accidents too)
    found = find(config, "--table", "shop.orders", "--op", "delete", "--min-rows", str(MIN_ROWS))
    assert found[0]["gtid"] == gtid and found[0]["rows"] == deleted
    assert [item["gtid"] for item in found if item["file"] == file] == [gtid]

    # the next start's roll-up deletes what the folds replaced, parts and indexes alike
    daemon.stop()
    start_daemon(config)

    def tidy() -> bool:
        segments, indexes = listed(s3, bucket, file)
        chain = layout.chain(segments)
        assert chain is not None
        return rollup.shadowed(chain.segments, segments, indexes) == ([], [])

    wait_for(tidy, "the replaced parts to be deleted", timeout=120)
    segments, _ = listed(s3, bucket, file)
    assert set(rolled) <= set(segments)
    again = find(config, "--table", "shop.orders", "--op", "delete", "--min-rows", str(MIN_ROWS))
    assert again == found
