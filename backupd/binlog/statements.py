"""Statement text for the change index: its kind, the tables a DDL names, and the text itself
with every secret masked, then truncated.

The index lives in the repository for as long as the binlogs, and operators paste `find`
output into tickets: a password must never reach it. Masking is by keyword, before
truncation (a cut could otherwise split the pattern and keep the secret): every quoted
literal after IDENTIFIED BY/AS/VIA/USING, PASSWORD(...), PASSWORD =, MASTER_PASSWORD =,
and the like becomes '***'. Statements that manage accounts, servers or replication are
reduced further: every quoted literal in them is masked.
"""

from __future__ import annotations

import re

MAX_TEXT = 512
MASK = "'***'"

KIND_DML = "dml"
KIND_DDL = "ddl"
KIND_OTHER = "other"

_QUOTED = r"""(?:'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")"""
_LITERAL = re.compile(_QUOTED)
# Every pattern below needs one of these words: texts without any are left as they are.
_TRIGGERS: tuple[str, ...] = ("identified", "password", "key", "aes_", "user", "server")
_TRIGGERS += ("master", "replica", "slave", "grant", "plugin")
_SECRET_BEFORE = re.compile(
    r"(?P<key>\b(?:IDENTIFIED\s+(?:WITH\s+\S+\s+)?(?:BY|AS|VIA\s+\S+\s+USING|USING)"
    r"(?:\s+PASSWORD)?|PASSWORD\s*\(|(?:MASTER_|OLD_)?PASSWORD\s*=?|"
    r"MASTER_SSL_KEY\s*=|ENCRYPTION_KEY\s*=|AES_ENCRYPT\s*\([^,]*,|AES_DECRYPT\s*\([^,]*,)\s*)"
    + _QUOTED,
    re.IGNORECASE,
)
# Whole statements about credentials: mask every literal, whatever the syntax.
_ACCOUNT = re.compile(
    r"^\s*(?:/\*.*?\*/\s*)*(?:CREATE\s+(?:OR\s+REPLACE\s+)?(?:USER|SERVER|ROLE)|ALTER\s+(?:USER|SERVER)|"
    r"GRANT|SET\s+PASSWORD|CHANGE\s+(?:MASTER|REPLICATION)|START\s+(?:SLAVE|REPLICA)|"
    r"INSTALL\s+PLUGIN)\b",
    re.IGNORECASE | re.DOTALL,
)
_DDL = re.compile(
    r"^\s*(?:/\*.*?\*/\s*)*(?:CREATE|ALTER|DROP|RENAME|TRUNCATE|GRANT|REVOKE)\b",
    re.IGNORECASE | re.DOTALL,
)
_NAME = r"(?:`(?:[^`]|``)+`|[\w$]+)"
_DDL_TABLE = re.compile(
    r"^\s*(?:/\*.*?\*/\s*)*(?:CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMPORARY\s+)?TABLE|"
    r"ALTER\s+(?:ONLINE\s+|IGNORE\s+)*TABLE|DROP\s+(?:TEMPORARY\s+)?TABLE|"
    r"TRUNCATE(?:\s+TABLE)?|RENAME\s+TABLE)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?"
    rf"(?P<name>{_NAME}(?:\s*\.\s*{_NAME})?)",
    re.IGNORECASE | re.DOTALL,
)


def mask(text: str) -> str:
    """`text` with secrets replaced by '***'."""
    lowered = text.lower()
    for word in _TRIGGERS:
        if word in lowered:
            break
    else:
        return text  # the common case (row changes' statements), decided cheaply
    masked = _mask_keys(text)
    if _ACCOUNT.match(masked):
        return _LITERAL.sub(lambda m: m[0] if _account_name(masked, m) else MASK, masked)
    return masked


def _account_name(text: str, literal: re.Match[str]) -> bool:
    """A literal that is part of 'user'@'host' (kept readable: it names, it is no secret)."""
    before = text[: literal.start()].rstrip()
    after = text[literal.end() :].lstrip()
    return after.startswith("@") or before.endswith("@")


def _mask_keys(text: str) -> str:
    return _SECRET_BEFORE.sub(lambda m: m["key"] + MASK, text)


def summary(text: str) -> str:
    """Masked, then truncated to MAX_TEXT characters (marked with '...')."""
    masked = mask(text)
    return masked if len(masked) <= MAX_TEXT else masked[: MAX_TEXT - 3] + "..."


def kind(text: str) -> str:
    """KIND_DDL for schema and privilege changes, else KIND_OTHER (row changes are known
    from row events, not from text)."""
    return KIND_DDL if _DDL.match(text) else KIND_OTHER


def ddl_table(text: str, default_db: str) -> str:
    """The "db.table" a DDL statement names ("" when none can be read)."""
    found = _DDL_TABLE.match(text)
    if found is None:
        return ""
    parts = [p.strip().strip("`").replace("``", "`") for p in found["name"].split(".")]
    if len(parts) == 1:
        return f"{default_db}.{parts[0]}" if default_db else ""
    return f"{parts[0]}.{parts[1]}"
