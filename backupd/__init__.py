"""backupd: protect a production MySQL/MariaDB server without ever taking it down."""

__version__ = "0.1.0"
