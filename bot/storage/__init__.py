"""Storage: the SQLite database (a writer it owns, read connections apart from it), its
migrations, and one repository module per table group.

All SQL lives in this package, behind small async functions that take a connection, so that
a PostgreSQL backend can be added later without touching the engine.
"""

from bot.storage.conn import Conn, ReadConn, Result
from bot.storage.db import (
    Database,
    DatabaseError,
    NestedTransactionError,
    Reader,
    fetch_all,
    fetch_one,
)
from bot.storage.tx import Tx

__all__ = [
    "Conn",
    "Database",
    "DatabaseError",
    "NestedTransactionError",
    "ReadConn",
    "Reader",
    "Result",
    "Tx",
    "fetch_all",
    "fetch_one",
]
