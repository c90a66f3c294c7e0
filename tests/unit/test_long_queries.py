"""The strict read-only test of kill-selects: when unsure, a statement is NOT read-only."""

from __future__ import annotations

import pytest

from backupd.database import ServerVersion
from backupd.snapshot.long_queries import (
    VISIBLE_TEXT_LIMIT,
    LongQuery,
    is_plain_select,
    kill_statement,
    mark_views,
)

READS = [
    "SELECT SLEEP(30)",
    "select * from big",
    "SELECT a, b FROM t WHERE c = 'x' ORDER BY a LIMIT 10",
    "SELECT 1;",
    "  (SELECT a FROM t) UNION (SELECT b FROM u)",
    "/* app=shop */ SELECT COUNT(*) FROM a JOIN b ON (a.id = b.id)",
    "-- report\nSELECT SUM(x) FROM t GROUP BY y",
    "# report\nSELECT 1",
    "SELECT /*+ MAX_EXECUTION_TIME(1000) */ a FROM t",
    "SELECT a FROM t WHERE b IN (SELECT c FROM u) AND EXISTS (SELECT 1 FROM v)",
    "SELECT REPLACE(a, 'x', 'y'), CONCAT(b, '(') FROM t",
    "SELECT COUNT(*) FROM t1 CROSS JOIN t2 CROSS JOIN t3",
    "SELECT a FROM t FORCE INDEX (i) WHERE d > NOW() - INTERVAL 1 DAY",
    "SELECT 'it''s', \"a;b\", 'INTO', 'FOR UPDATE', 'f()' FROM t",
    "SELECT @@global.read_only, @x",
    "SELECT ROW_NUMBER() OVER (PARTITION BY a ORDER BY b) FROM t",
    "SELECT a, (SELECT MAX(b) FROM u) AS m FROM t WHERE ((a = 1) OR (a = -(2)))",
]

NOT_READS = [
    # writes, locks and other statements
    "UPDATE t SET a = 1",
    "DELETE FROM t",
    "INSERT INTO t SELECT * FROM u",
    "ALTER TABLE t ADD c INT",
    "CALL p()",
    "WITH x AS (SELECT 1) SELECT * FROM x",  # MySQL 8 also has WITH ... DELETE / UPDATE
    "WITH x AS (SELECT id FROM t) DELETE FROM t WHERE id IN (SELECT id FROM x)",
    "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t FOR SHARE",
    "SELECT * FROM t LOCK IN SHARE MODE",
    "SELECT a INTO @x FROM t",
    "SELECT a FROM t INTO OUTFILE '/tmp/x'",
    "SELECT a FROM t PROCEDURE ANALYSE()",
    "SELECT @a := 1",
    "SELECT NEXT VALUE FOR s",
    "SELECT NEXTVAL(s)",
    "SELECT 1; DELETE FROM t",
    # stored (or possibly stored) functions
    "SELECT f()",
    "SELECT f(a) FROM t",
    "SELECT db.sleep(1)",
    "SELECT db . count(1)",
    "SELECT `f`(1)",
    'SELECT "f"(1)',  # ANSI_QUOTES: a quoted function name
    "SELECT count (*) FROM t",  # without IGNORE_SPACE a spaced name is not the builtin
    "SELECT 1f(2)",
    "SELECT GET_LOCK('x', 10)",
    "SELECT a FROM JSON_TABLE('[]', '$[*]' COLUMNS (x INT PATH '$')) AS j",
    # executable comments, and text that may be cut or lexed two ways
    "/*!50000 SELECT */ 1",
    "SELECT 1 /*M!100000 , f() */",
    "SELECT 'abc",
    "SELECT 1 /* cut",
    "SELECT 'a\\' , f() , 'x'",  # NO_BACKSLASH_ESCAPES: f() is a call
    "SELECT " + "a, " * (VISIBLE_TEXT_LIMIT // 3) + "b FROM t",
    "",
    "   ",
    "SHOW PROCESSLIST",
]


@pytest.mark.parametrize("sql", READS)
def test_plain_selects_may_be_killed(sql: str) -> None:
    assert is_plain_select(sql)


@pytest.mark.parametrize("sql", NOT_READS, ids=[s[:40] for s in NOT_READS])
def test_anything_else_is_not_read_only(sql: str) -> None:
    assert not is_plain_select(sql)


class FakeCursor:
    """Answers the re-check with `row` and records every statement."""

    def __init__(self, log: list[str], row: tuple[object, ...] | None) -> None:
        self.log = log
        self.row = row

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, sql: str, args: object = None) -> None:
        self.log.append(sql)

    def fetchone(self) -> tuple[object, ...] | None:
        return self.row


class FakeConn:
    def __init__(self, row: tuple[object, ...] | None = None) -> None:
        self.log: list[str] = []
        self.row = row

    def cursor(self) -> FakeCursor:
        return FakeCursor(self.log, self.row)


MARIADB = ServerVersion.parse("10.11.6-MariaDB")
MYSQL = ServerVersion.parse("8.0.36")
JUDGED = LongQuery(7, "app", 120.0, "Query", "SELECT SLEEP(600)", query_id=4242)


def test_mariadb_kills_the_statement_by_its_query_id() -> None:
    conn = FakeConn()
    assert kill_statement(conn, MARIADB, JUDGED)
    assert conn.log == ["KILL QUERY ID 4242"]


@pytest.mark.parametrize(
    ("row", "killed"),
    [
        (("SELECT SLEEP(600)", 121), True),  # still the judged statement
        (("UPDATE t SET a = 1", 121), False),  # its thread moved on
        (("SELECT SLEEP(600)", 3), False),  # the same text, but a new run of it
        (None, False),  # the connection is gone
    ],
)
def test_mysql_rechecks_the_statement_before_killing_its_thread(
    row: tuple[object, ...] | None, killed: bool
) -> None:
    conn = FakeConn(row)
    assert kill_statement(conn, MYSQL, JUDGED) is killed
    assert ("KILL QUERY 7" in conn.log) is killed


class ViewsCursor(FakeCursor):
    """The server has one view, named Report (views match by name alone, in any case)."""

    def fetchall(self) -> list[tuple[object, ...]]:
        return [("Report",)]


class ViewsConn(FakeConn):
    def cursor(self) -> FakeCursor:
        return ViewsCursor(self.log, None)


def test_a_select_naming_a_view_is_not_read_only() -> None:
    plain = LongQuery(1, "app", 9.0, "Query", "SELECT a FROM t")
    on_view = LongQuery(2, "app", 9.0, "Query", "SELECT x FROM shop.`report` WHERE a = 1")
    marked = mark_views(ViewsConn(), [plain, on_view])
    assert [q.read_only for q in marked] == [True, False]
    conn = ViewsConn()  # nothing judged read-only by its text: no need to ask the server
    assert mark_views(conn, [LongQuery(3, "app", 9.0, "Query", "UPDATE t SET a = 1")])
    assert conn.log == []
