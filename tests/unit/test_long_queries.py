"""The strict read-only test of kill-selects: when unsure, a statement is NOT read-only."""

from __future__ import annotations

import pytest

from backupd.snapshot.long_queries import VISIBLE_TEXT_LIMIT, is_plain_select

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
