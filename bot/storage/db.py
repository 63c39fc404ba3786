"""The SQLite database: one aiosqlite connection, WAL, numbered migrations, serialised writes.

SQLite allows one writer at a time. Coroutines sharing a connection could interleave inside a
transaction, so every write goes through :meth:`Database.transaction`, which holds an
application-level lock and opens the transaction with ``BEGIN IMMEDIATE`` (a deferred
transaction that reads and then writes fails at once with SQLITE_BUSY when another process,
such as a CLI command, is writing). ``busy_timeout`` makes the two processes wait for each
other instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.storage.tx import Tx

T = TypeVar("T")

logger = logging.getLogger(__name__)

BUSY_TIMEOUT = "PRAGMA busy_timeout = 10000"
PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    BUSY_TIMEOUT,
    "PRAGMA foreign_keys = ON",
    # Freed space is zeroed, so deleted personal data does not linger in the file.
    "PRAGMA secure_delete = ON",
)

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


class DatabaseError(Exception):
    """A database problem the user can act on (too new, unreadable, not a database)."""


def migrations() -> list[tuple[int, str, str]]:
    """The shipped migrations as (version, file name, SQL), in order."""
    found = []
    for entry in resources.files("bot.storage").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (version, name, _) in enumerate(found, start=1):
        if version != expected:
            raise RuntimeError(f"migration {name} is out of sequence (expected {expected:04d})")
    return found


def latest_version() -> int:
    return len(migrations())


class Database:
    """One SQLite file. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(self, path: Path, conn: aiosqlite.Connection) -> None:
        self.path = path
        self.conn = conn
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str, *, migrate: bool = True) -> Database:
        """Open (creating if needed) and bring the schema up to date.

        A database written by a newer panelbot is refused rather than guessed at.
        """
        path = Path(path)
        if path.parent and not path.parent.exists():
            raise DatabaseError(f"{path}: the folder {path.parent} does not exist")
        try:
            conn = await aiosqlite.connect(str(path), isolation_level=None)
        except sqlite3.Error as exc:
            raise DatabaseError(f"{path}: cannot open the database ({exc})") from None
        conn.row_factory = sqlite3.Row
        db = cls(path, conn)
        try:
            for pragma in PRAGMAS:
                await conn.execute(pragma)
            if migrate:
                await db.upgrade()
            else:
                await db.check_version()
        except sqlite3.DatabaseError as exc:
            await conn.close()
            raise DatabaseError(f"{path}: not a panelbot database ({exc})") from None
        except BaseException:
            await conn.close()
            raise
        return db

    async def close(self) -> None:
        async with self._write_lock:
            await self.conn.close()

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0])

    async def check_version(self) -> int:
        version = await self.schema_version()
        latest = latest_version()
        if version > latest:
            raise DatabaseError(
                f"{self.path}: the database is at schema version {version}, but this panelbot "
                f"only knows up to {latest}; upgrade panelbot (never run an older version on "
                "a newer database)"
            )
        return version

    async def upgrade(self) -> list[str]:
        """Apply pending migrations, each in its own transaction. Returns the names applied."""
        applied = []
        async with self._write_lock:
            current = await self.check_version()
            for version, name, sql in migrations():
                if version <= current:
                    continue
                # executescript runs outside our transaction helper, so the script carries
                # its own BEGIN IMMEDIATE/COMMIT and the version bump inside it.
                script = f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
                try:
                    await self.conn.executescript(script)
                except BaseException:
                    if self.conn.in_transaction:
                        await self.conn.execute("ROLLBACK")
                    raise
                logger.info("applied migration %s", name)
                applied.append(name)
        return applied

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A write transaction: serialised in this process, BEGIN IMMEDIATE across processes.

        The :class:`~bot.storage.tx.Tx` it yields holds writes nobody reads and sends them
        with the next statement that returns something (fewer round trips to SQLite).
        """
        async with self._write_lock:
            tx = Tx(self)
            try:
                yield tx
                await tx.commit()
            except BaseException:
                tx.discard()
                if tx.begun:
                    # Also when cancelled while waiting for a busy database: the BEGIN may
                    # still complete in aiosqlite's thread, so undo it rather than leave the
                    # connection inside a transaction every later BEGIN would trip over.
                    await self._rollback()
                raise

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(sqlite3_connection)`` on aiosqlite's thread in one hop.

        aiosqlite has no public call for this; ``_execute`` is the method its own public
        calls use. tests/test_storage.py fails if an upgrade of aiosqlite removes it.
        """
        conn = self.conn
        return await conn._execute(fn, conn._conn)

    async def _rollback(self) -> None:
        # aiosqlite runs requests in order, so this ROLLBACK follows any BEGIN still queued;
        # shielded so that a cancellation cannot skip it.
        try:
            await asyncio.shield(self.conn.execute("ROLLBACK"))
        except sqlite3.OperationalError:
            pass  # no transaction was open

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[aiosqlite.Connection]:
        """This process's write lock without a transaction, for VACUUM and checkpoints."""
        async with self._write_lock:
            yield self.conn

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        return await fetch_one(self.conn, sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await fetch_all(self.conn, sql, params)

    async def execute_write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """A single-statement write in its own transaction; returns lastrowid."""
        async with self.transaction() as conn:
            cursor = await conn.execute(sql, params)
            return cursor.lastrowid or 0

    async def executemany_write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.transaction() as conn:
            await conn.executemany(sql, rows)

    async def truncate_log(self, *, wait: float = 1.0) -> bool:
        """Copy the write-ahead log into the file and empty it (``wal_checkpoint(TRUNCATE)``).

        SQLite's own checkpoints copy pages back but leave the log's old frames on disk
        until they are overwritten, erased messages among them. Waits at most ``wait``
        seconds for other connections; False when one kept it from completing.
        """
        async with self.exclusive() as conn:
            await conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            try:
                rows = await conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError:
                return False
            finally:
                await conn.execute(BUSY_TIMEOUT)
        row = next(iter(rows), None)
        return row is not None and row[0] == 0

    async def backup(self, target: Path) -> None:
        """An online copy through SQLite's backup API, consistent while the bot writes.

        The copy holds the whole panel's personal data: it is created readable and
        writable by its owner only (0600), whatever the umask.
        """
        await backup_connection(self.conn, Path(target))


def create_owner_only(target: Path) -> None:
    """Create ``target`` empty, readable and writable by its owner only (0600), whatever
    the umask; DatabaseError when it exists or cannot be created."""
    if os.path.lexists(target):
        raise DatabaseError(f"{target} already exists; choose a new file")
    if not os.path.isdir(target.parent):
        raise DatabaseError(f"{target}: the folder {target.parent} does not exist")
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    except OSError as exc:
        raise DatabaseError(f"{target}: cannot create the backup ({exc.strerror})") from None


async def backup_connection(conn: aiosqlite.Connection, target: Path) -> None:
    """Copy an open database to a new file ``target``, created owner-only (0600)."""
    # Created empty and owner-only first: SQLite then writes into it (and gives a journal
    # it makes beside it the same permissions).
    create_owner_only(target)
    try:
        async with aiosqlite.connect(str(target)) as dest:
            await conn.backup(dest)
    except sqlite3.Error as exc:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise DatabaseError(f"{target}: the backup failed ({exc})") from None


# Each await on aiosqlite is a hop to its thread and back, the main cost of a small query;
# execute_fetchall runs the query and reads its rows in one hop (a cursor takes three).


async def fetch_one(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> sqlite3.Row | None:
    """The first row of a query on a connection (inside or outside a transaction)."""
    rows = await conn.execute_fetchall(sql, params)
    return next(iter(rows), None)


async def fetch_all(
    conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, params))
