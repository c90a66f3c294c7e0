"""Long statements a commit lock would queue behind, and which of them may be killed.

`on_long_query = "kill-selects"` must only ever cost a reader a retry, never a write, so the
test is strict and errs towards "not read-only" (which skips the run instead): a plain
`SELECT` — no `WITH` (MySQL 8 allows `WITH … DELETE`), no `INTO`, `FOR UPDATE`/`FOR SHARE`/
`LOCK IN SHARE MODE`, no `:=`, no call of anything but a known builtin function written
directly before its `(` (a stored function may write), no name of a view (its definition may
call one), no executable comment, no second statement, and no text the process list may have
cut short.

A kill targets the statement that was judged, not whatever its thread runs by then: MariaDB
kills by the statement's QUERY_ID (`KILL QUERY ID`); MySQL has no such id, so the thread's
statement (text, start) is read again immediately before `KILL QUERY <thread>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from backupd.database import ServerVersion

# Statements that never wait for the lock and that the lock never waits for.
IDLE_COMMANDS = (
    "Sleep",
    "Daemon",
    "Binlog Dump",
    "Binlog Dump GTID",
    "Slave_IO",
    "Slave_SQL",
    "Slave_worker",
)
# information_schema.PROCESSLIST.INFO holds at most 65535 characters: longer text is cut.
VISIBLE_TEXT_LIMIT = 65535 - 1024

_LEXICON = r"""
    (?P<space>\s+)
  | (?P<exec_comment>/\*M?!)
  | (?P<comment>/\*.*?\*/|--(?:[ \t][^\n]*)?(?=\n|$)|\#[^\n]*)
  | (?P<string>STRINGS)
  | (?P<quoted>`(?:[^`]|``)*`)
  | (?P<word>@{0,2}[A-Za-z_$][\w$]*)
  | (?P<number>\d[\w.]*)
  | (?P<op>:=|\S)
"""
_ESCAPING_STRINGS = r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*""" + '"'
_PLAIN_STRINGS = r"""'(?:[^']|'')*'|"(?:[^"]|"")*""" + '"'  # sql_mode NO_BACKSLASH_ESCAPES
# A statement counts as read-only only when it is one under both string grammars.
_GRAMMARS = tuple(
    re.compile(_LEXICON.replace("STRINGS", strings), re.VERBOSE | re.DOTALL)
    for strings in (_ESCAPING_STRINGS, _PLAIN_STRINGS)
)
# Words that make a SELECT write, lock rows, or run more than a SELECT.
_NOT_A_READ = frozenset(
    {
        "INTO", "FOR", "LOCK", "SHARE", "WITH", "PROCEDURE", "HANDLER", "CALL",
        "UPDATE", "DELETE", "INSERT", "SET", "DO", "LOAD", "RETURNING", "NEXT", "PREVIOUS",
    }
)  # fmt: skip
# Keywords that may stand before a parenthesis without being a function call.
_SYNTAX_BEFORE_PAREN = frozenset(
    {
        "SELECT", "FROM", "JOIN", "STRAIGHT_JOIN", "ON", "USING", "WHERE", "AND", "OR", "NOT",
        "XOR", "IN", "EXISTS", "ANY", "ALL", "SOME", "AS", "BY", "HAVING", "OVER", "WHEN",
        "THEN", "ELSE", "CASE", "IS", "LIKE", "BETWEEN", "UNION", "INTERSECT", "EXCEPT",
        "DISTINCT", "INTERVAL", "DIV", "REGEXP", "RLIKE", "ESCAPE", "PARTITION", "INDEX",
        "KEY", "MATCH", "AGAINST", "ROW", "LIMIT", "OFFSET",
    }
)  # fmt: skip
# Builtin functions without side effects on data (a kill of them loses nothing).
_BUILTINS = frozenset(
    {
        # aggregate and window
        "COUNT", "SUM", "AVG", "MIN", "MAX", "GROUP_CONCAT", "STD", "STDDEV", "STDDEV_POP",
        "STDDEV_SAMP", "VARIANCE", "VAR_POP", "VAR_SAMP", "BIT_AND", "BIT_OR", "BIT_XOR",
        "ROW_NUMBER", "RANK", "DENSE_RANK", "LAG", "LEAD", "FIRST_VALUE", "LAST_VALUE",
        "NTILE", "JSON_ARRAYAGG", "JSON_OBJECTAGG",
        # control flow and comparison
        "IF", "IFNULL", "NULLIF", "COALESCE", "GREATEST", "LEAST", "ISNULL",
        # strings
        "CONCAT", "CONCAT_WS", "LENGTH", "CHAR_LENGTH", "CHARACTER_LENGTH", "LOWER", "UPPER",
        "LCASE", "UCASE", "SUBSTRING", "SUBSTR", "SUBSTRING_INDEX", "LEFT", "RIGHT", "TRIM",
        "LTRIM", "RTRIM", "REPLACE", "REPEAT", "REVERSE", "LPAD", "RPAD", "LOCATE", "INSTR",
        "POSITION", "FIELD", "FIND_IN_SET", "FORMAT", "HEX", "UNHEX", "MD5", "SHA1", "SHA2",
        "CRC32", "ASCII", "ORD", "CHAR", "SPACE", "STRCMP", "QUOTE", "REGEXP_REPLACE",
        "REGEXP_SUBSTR", "REGEXP_INSTR", "CONVERT", "CAST",
        # numbers
        "ABS", "CEIL", "CEILING", "FLOOR", "ROUND", "TRUNCATE", "MOD", "POW", "POWER", "SQRT",
        "EXP", "LN", "LOG", "LOG2", "LOG10", "SIGN", "RAND", "PI", "CONV",
        # dates
        "NOW", "CURDATE", "CURRENT_DATE", "CURTIME", "CURRENT_TIME", "CURRENT_TIMESTAMP",
        "SYSDATE", "UTC_TIMESTAMP", "UTC_DATE", "DATE", "TIME", "YEAR", "MONTH", "DAY",
        "DAYOFMONTH", "DAYOFWEEK", "DAYOFYEAR", "HOUR", "MINUTE", "SECOND", "WEEK", "WEEKDAY",
        "QUARTER", "DATE_ADD", "DATE_SUB", "ADDDATE", "SUBDATE", "DATEDIFF", "TIMEDIFF",
        "TIMESTAMPDIFF", "TIMESTAMPADD", "DATE_FORMAT", "STR_TO_DATE", "FROM_UNIXTIME",
        "UNIX_TIMESTAMP", "EXTRACT", "LAST_DAY", "TO_DAYS", "FROM_DAYS",
        # JSON
        "JSON_EXTRACT", "JSON_UNQUOTE", "JSON_OBJECT", "JSON_ARRAY", "JSON_CONTAINS",
        "JSON_LENGTH", "JSON_VALUE", "JSON_KEYS",
        # session and server information, and waiting
        "SLEEP", "BENCHMARK", "DATABASE", "SCHEMA", "USER", "CURRENT_USER", "VERSION",
        "CONNECTION_ID", "FOUND_ROWS", "ROW_COUNT", "LAST_INSERT_ID", "UUID", "INET_ATON",
        "INET_NTOA",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    end: int


def tokens(sql: str, grammar: re.Pattern[str] = _GRAMMARS[0]) -> list[Token]:
    """The statement's tokens without spaces and plain comments."""
    found = []
    for match in grammar.finditer(sql):
        kind = match.lastgroup or "op"
        if kind not in ("space", "comment"):
            found.append(Token(kind, match.group(), match.start(), match.end()))
    return found


def is_plain_select(sql: str) -> bool:
    """True only for a statement that provably just reads (see the module docstring)."""
    if len(sql) >= VISIBLE_TEXT_LIMIT:
        return False  # maybe cut short: the part not shown could say FOR UPDATE
    return all(_reads(tokens(sql, grammar)) for grammar in _GRAMMARS)


def _reads(toks: list[Token]) -> bool:
    while toks and toks[0].text == "(":
        toks = toks[1:]
    if not toks or toks[0].text.upper() != "SELECT":
        return False
    for index, tok in enumerate(toks):
        following = toks[index + 1] if index + 1 < len(toks) else None
        if not _token_reads(tok, toks[index - 1] if index else None, following):
            return False
    return True


def _structure_reads(tok: Token, after: Token | None) -> bool:
    """No executable comment, assignment, cut-off literal or comment, or second statement."""
    if tok.kind == "exec_comment" or tok.text in (":=", "'", '"', "`"):
        return False
    if tok.text == ";":
        return after is None  # at most a trailing semicolon
    return not (tok.text == "/" and after is not None and after.text == "*")


def _token_reads(tok: Token, before: Token | None, after: Token | None) -> bool:
    if not _structure_reads(tok, after):
        return False
    calls = after is not None and after.text == "("
    if tok.kind in ("quoted", "string", "number"):
        return not calls  # `name`(...), "name"(...) (ANSI_QUOTES), 1name(...): not builtins
    if tok.kind != "word":
        return True  # an operator or a parenthesis: `, (`, `= (`, `((`
    word = tok.text.upper()
    if calls and after is not None:
        if word in _SYNTAX_BEFORE_PAREN:
            return True
        qualified = before is not None and before.text == "."
        # `count (x)` (with a space) may name a stored function: only `count(x)` is builtin.
        return word in _BUILTINS and not qualified and after.start == tok.end
    return word not in _NOT_A_READ


@dataclass(frozen=True)
class LongQuery:
    thread_id: int
    user: str
    seconds: float
    command: str
    info: str
    query_id: int = 0  # MariaDB's id of this very statement (0: not known, MySQL)
    names_a_view: bool = False  # a view may call a stored function that writes

    @property
    def read_only(self) -> bool:
        """A plain SELECT that may be killed without losing a write (kill-selects)."""
        return not self.names_a_view and is_plain_select(self.info)

    def describe(self) -> str:
        return f"thread {self.thread_id} ({self.user}, {self.seconds:.0f}s): {self.info[:80]}"


def has_query_ids(version: ServerVersion) -> bool:
    """MariaDB (10.0.5+) shows QUERY_ID in the process list and kills by it."""
    return version.flavor == "mariadb" and version.at_least(10, 0, 5)


def names(sql: str) -> set[str]:
    """Every identifier in the statement, lower-cased and unquoted (over-inclusive on purpose)."""
    found = set()
    for tok in tokens(sql):
        if tok.kind in ("word", "quoted"):
            found.add(tok.text.strip("`").replace("``", "`").lower())
    return found


def view_names(conn: Any) -> set[str]:
    """The names of the views the account can see, in any schema but the server's own (their
    definitions call no writing function; `mysql.user` would otherwise taint every `user`)."""
    with conn.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA "
            "NOT IN ('mysql', 'sys', 'information_schema', 'performance_schema')"
        )
        return {str(row[0]).lower() for row in cursor.fetchall()}


def mark_views(conn: Any, queries: list[LongQuery]) -> list[LongQuery]:
    """A SELECT that names a view (matched by name alone, in any schema) is not read-only."""
    if not any(query.read_only for query in queries):
        return queries
    views = view_names(conn)
    return [replace(q, names_a_view=bool(names(q.info) & views)) for q in queries]


def list_long_queries(conn: Any, version: ServerVersion, older_than: float) -> list[LongQuery]:
    """Statements running for `older_than` seconds or more, which a lock would queue behind."""
    query_id = "QUERY_ID" if has_query_ids(version) else "0"
    with conn.cursor() as cursor:
        cursor.execute(
            f"SELECT ID, USER, TIME, COMMAND, COALESCE(INFO, ''), {query_id} "
            "FROM information_schema.PROCESSLIST "
            "WHERE ID <> CONNECTION_ID() AND TIME >= %s AND COMMAND NOT IN %s",
            (older_than, IDLE_COMMANDS),
        )
        rows = cursor.fetchall()
    queries = [
        LongQuery(int(r[0]), str(r[1]), float(r[2]), str(r[3]), str(r[4]), int(r[5] or 0))
        for r in rows
    ]
    return mark_views(conn, queries)


def kill_statement(conn: Any, version: ServerVersion, query: LongQuery) -> bool:
    """Kill exactly the statement judged; False when it is no longer running (nothing done)."""
    with conn.cursor() as cursor:
        if has_query_ids(version) and query.query_id:
            cursor.execute(f"KILL QUERY ID {int(query.query_id)}")
            return True
        cursor.execute(
            "SELECT COALESCE(INFO, ''), TIME FROM information_schema.PROCESSLIST WHERE ID = %s",
            (query.thread_id,),
        )
        row = cursor.fetchone()
        if row is None or str(row[0]) != query.info or float(row[1]) < query.seconds:
            return False  # finished, or its thread has moved on to another statement
        cursor.execute(f"KILL QUERY {int(query.thread_id)}")
        return True
