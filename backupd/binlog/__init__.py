"""Continuous binlog archiving: replication stream -> exact segments -> spool -> repository.

Data flow (one module per stage): client (COM_BINLOG_DUMP) -> segmenter (checks, cuts) ->
spool (fsync) -> uploader (zstd, sha256, put) -> layout (keys); state picks where to resume,
compactor folds closed files, fetch rebuilds files, service and ctl are the daemon and
backupctl faces. Restore tooling reads the archive through `layout`.
"""
