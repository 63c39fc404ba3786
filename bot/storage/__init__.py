"""Storage: the aiosqlite database, its migrations, and one repository module per table group.

All SQL lives in this package, behind small async functions that take a connection, so that
a PostgreSQL backend can be added later without touching the engine.
"""

from bot.storage.db import Database, DatabaseError, fetch_all, fetch_one

__all__ = ["Database", "DatabaseError", "fetch_all", "fetch_one"]
