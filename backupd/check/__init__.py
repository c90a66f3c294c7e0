"""`backupctl check`: every dependency the daemon needs, tested for real from the config.

One module per dependency (mysql, storage, ec2, local, access); each returns a list of
`Result` lines, so the command prints `OK`/`WARN`/`FAIL` with the fix and never stops at the
first problem.
"""
