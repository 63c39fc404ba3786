"""The SQLite database: a writer it owns, read connections apart from it, numbered migrations.

SQLite allows one writer at a time. The :class:`Database` owns one write connection, on a
thread of its own, and every write goes through :meth:`Database.transaction`, which holds an
application-level lock and opens the transaction with ``BEGIN IMMEDIATE`` (a deferred
transaction that reads and then writes fails at once with SQLITE_BUSY when another process,
such as a CLI command, is writing). ``busy_timeout`` makes the two processes wait for each
other instead of failing.

Reads outside a transaction (:meth:`Database.fetchone`, :attr:`Database.reader`, and
:attr:`Database.conn` outside one) go to read connections, each on its own thread, opened
``query_only``: in WAL mode they see what is committed and never a transaction still open.
Reads inside a transaction go through it (``db.conn`` and ``db.fetchone`` do so on their
own in the task that holds it), so they see its writes.

A task that holds a transaction and asks for another on the same database gets
:class:`NestedTransactionError` at once: waiting for the lock it holds would never end. A
transaction asked for by another task waits its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import queue
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, TypeVar

from bot.storage.conn import ReadConn, Result
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
# Read connections per database: a slow report does not hold up the dispatcher's look-ups.
READERS = 2

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

# The transactions open in this task (a tuple: a task may hold one on each of two files).
_open: contextvars.ContextVar[tuple[Tx, ...]] = contextvars.ContextVar(
    "panelbot_open_transactions", default=()
)

# A folder of a plugin's migrations, as the plugin gives it.
MigrationFolder = str | os.PathLike[str] | Traversable


class DatabaseError(Exception):
    """A database problem the user can act on (too new, unreadable, not a database)."""


class CannotOpen(Exception):
    """sqlite3 could not open the file at all."""


class NestedTransactionError(RuntimeError):
    """A transaction was asked for while this task already holds one on the same database."""


def _numbered(folder: Traversable, owner: str) -> list[tuple[int, str, str]]:
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (version, name, _) in enumerate(found, start=1):
        if version != expected:
            raise DatabaseError(
                f"{owner}: migration {name} is out of sequence (expected {expected:04d})"
            )
    return found


def migrations() -> list[tuple[int, str, str]]:
    """The shipped migrations as (version, file name, SQL), in order."""
    return _numbered(resources.files("bot.storage").joinpath("migrations"), "panelbot")


def latest_version() -> int:
    return len(migrations())


def plugin_migrations(plugin: str, folder: MigrationFolder) -> list[tuple[int, str, str]]:
    """A plugin's migrations (``0001_name.sql``, ...) as (version, file name, SQL)."""
    path = folder if isinstance(folder, Traversable) else Path(folder)
    if not path.is_dir():
        raise DatabaseError(f"plugin {plugin}: its migrations folder {folder} does not exist")
    return _numbered(path, f"plugin {plugin}")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


def _deliver(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return  # the caller was cancelled; the statement still ran, in order
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class _Thread:
    """A thread that owns one sqlite3 connection; what is sent to it runs in order."""

    def __init__(self, name: str) -> None:
        self.raw: sqlite3.Connection | None = None
        self.pending = 0
        self.closed = False
        self.calls = 0  # hops sent to this thread (bench/inbound.py counts them)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, future, loop = item
            try:
                value, ok = fn(self.raw), True
            except BaseException as exc:  # handed to the caller, whatever it is
                value, ok = exc, False
            try:
                loop.call_soon_threadsafe(_deliver, future, ok, value)
            except RuntimeError:
                pass  # the loop has closed: nobody is waiting

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` on this thread, after everything sent before it."""
        if self.closed:
            raise ValueError("the database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.calls += 1
        self.pending += 1
        self._queue.put((fn, future, loop))
        try:
            return await future
        finally:
            self.pending -= 1

    async def connect(self, path: Path, statements: Sequence[str], *, read_only: bool) -> None:
        def connect(_: object) -> None:
            try:
                raw = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                raise CannotOpen(str(exc)) from None
            try:
                raw.row_factory = sqlite3.Row
                for sql in statements:
                    raw.execute(sql)
                if read_only:
                    raw.execute("PRAGMA query_only = ON")
            except BaseException:
                raw.close()
                raise
            self.raw = raw

        await self.call(connect)  # type: ignore[arg-type]

    async def close(self) -> None:
        def close(raw: sqlite3.Connection | None) -> None:
            if raw is not None:
                raw.close()

        if self.closed:
            return
        try:
            await self.call(close)  # type: ignore[arg-type]
        finally:
            self.closed = True
            self.raw = None
            self._queue.put(None)


class Reader:
    """The read connections: each query sees what is committed, never an open transaction.

    Implements :class:`~bot.storage.conn.ReadConn`.
    """

    def __init__(self, threads: list[_Thread]) -> None:
        self._threads = threads

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(sqlite3_connection)`` on the least busy read connection, in one hop."""
        thread = min(self._threads, key=lambda t: t.pending)
        return await thread.call(fn)

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self.run(lambda raw: raw.execute(sql, params).fetchall())


class Writer:
    """The write connection without a transaction, for :meth:`Database.exclusive` (VACUUM,
    checkpoints, per-connection pragmas). Statements run one by one, autocommitted."""

    def __init__(self, thread: _Thread) -> None:
        self._thread = thread

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._thread.call(fn)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        def execute(raw: sqlite3.Connection) -> Result:
            cursor = raw.execute(sql, params)
            return Result(cursor.lastrowid, cursor.rowcount)

        return await self.run(execute)

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self.run(lambda raw: raw.execute(sql, params).fetchall())

    @property
    def in_transaction(self) -> bool:
        raw = self._thread.raw
        return raw is not None and raw.in_transaction


class Database:
    """One SQLite file. Open with :meth:`open`; close with :meth:`close`."""

    def __init__(
        self,
        path: Path,
        writer: _Thread,
        readers: list[_Thread],
        plugins: Sequence[tuple[str, MigrationFolder]] = (),
    ) -> None:
        self.path = path
        self._writer = writer
        self._readers = readers
        self.writer = Writer(writer)
        self.reader = Reader(readers)
        self.plugins = list(plugins)
        self._write_lock = asyncio.Lock()
        self._exclusive_task: asyncio.Task[Any] | None = None

    @classmethod
    async def connect(
        cls,
        path: Path | str,
        *,
        setup: Sequence[str] = (),
        readers: int = READERS,
        plugins: Sequence[tuple[str, MigrationFolder]] = (),
    ) -> Database:
        """Open the file (created if needed) with the pragmas, and ``setup`` run on the
        writer; no migrations. sqlite3.Error from ``setup`` is raised as it is."""
        path = Path(path)
        writer = _Thread(f"sqlite-writer {path.name}")
        threads = [writer]
        try:
            await writer.connect(path, [*PRAGMAS, *setup], read_only=False)
            for n in range(readers):
                threads.append(_Thread(f"sqlite-reader{n} {path.name}"))
                await threads[-1].connect(path, PRAGMAS, read_only=True)
        except BaseException:
            for thread in threads:
                await thread.close()
            raise
        return cls(path, writer, threads[1:], plugins)

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        migrate: bool = True,
        plugins: Sequence[tuple[str, MigrationFolder]] = (),
    ) -> Database:
        """Open (creating if needed) and bring the schema up to date: the core's, then each
        plugin's in ``plugins`` ((plugin name, migrations folder) pairs).

        A database written by a newer panelbot, or by a newer version of a plugin, is
        refused rather than guessed at.
        """
        path = Path(path)
        if path.parent and not path.parent.exists():
            raise DatabaseError(f"{path}: the folder {path.parent} does not exist")
        from bot.files import owner_only

        owner_only(path)  # personal data: the owner's alone (mode 0600)
        try:
            db = await cls.connect(path, plugins=plugins)
        except CannotOpen as exc:
            raise DatabaseError(f"{path}: cannot open the database ({exc})") from None
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(f"{path}: not a panelbot database ({exc})") from None
        except sqlite3.Error as exc:
            raise DatabaseError(f"{path}: cannot open the database ({exc})") from None
        try:
            if migrate:
                await db.upgrade()
            else:
                await db.check_version()
        except sqlite3.DatabaseError as exc:
            await db.close()
            raise DatabaseError(f"{path}: not a panelbot database ({exc})") from None
        except BaseException:
            await db.close()
            raise
        return db

    async def close(self) -> None:
        async with self._write_lock:
            for thread in (self._writer, *self._readers):
                await thread.close()

    async def ping(self) -> None:
        """A query on a read connection: raises when the database cannot be read."""
        await self.reader.execute_fetchall("SELECT 1")

    def round_trips(self) -> int:
        """How many calls were sent to the writer's and readers' threads so far: each is a
        hop there and back, the main cost of a small statement."""
        return sum(thread.calls for thread in (self._writer, *self._readers))

    async def schema_version(self) -> int:
        row = await self.fetchone("PRAGMA user_version")
        assert row is not None
        return int(row[0])

    async def plugin_versions(self) -> dict[str, int]:
        """Each plugin's schema version recorded in the database."""
        exists = await self.fetchone(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'plugin_schema'"
        )
        if exists is None:
            return {}
        rows = await self.fetchall("SELECT plugin, version FROM plugin_schema")
        return {row["plugin"]: int(row["version"]) for row in rows}

    async def check_version(self) -> int:
        version = await self.schema_version()
        latest = latest_version()
        if version > latest:
            raise DatabaseError(
                f"{self.path}: the database is at schema version {version}, but this panelbot "
                f"only knows up to {latest}; upgrade panelbot (never run an older version on "
                "a newer database)"
            )
        recorded = await self.plugin_versions() if self.plugins else {}
        for plugin, folder in self.plugins:
            known = len(plugin_migrations(plugin, folder))
            if recorded.get(plugin, 0) > known:
                raise DatabaseError(
                    f"{self.path}: the tables of plugin {plugin} are at version "
                    f"{recorded[plugin]}, but this version of the plugin only knows up to "
                    f"{known}; upgrade the plugin (never run an older version on a newer "
                    "database)"
                )
        return version

    async def upgrade(self) -> list[str]:
        """Apply pending migrations, the core's then each plugin's, each in its own
        transaction. Returns the names applied (a plugin's as ``plugin/0001_name.sql``)."""
        applied = []
        self._refuse_nested()
        async with self._write_lock:
            current = await self.check_version()
            for version, name, sql in migrations():
                if version <= current:
                    continue
                # The script carries its own BEGIN IMMEDIATE/COMMIT and the version bump.
                await self._script(
                    f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {version};\nCOMMIT;"
                )
                logger.info("applied migration %s", name)
                applied.append(name)
            if self.plugins:
                recorded = await self.plugin_versions()
            for plugin, folder in self.plugins:
                for version, name, sql in plugin_migrations(plugin, folder):
                    if version <= recorded.get(plugin, 0):
                        continue
                    await self._script(
                        "BEGIN IMMEDIATE;\n"
                        "CREATE TABLE IF NOT EXISTS plugin_schema (\n"
                        "    plugin TEXT PRIMARY KEY, version INTEGER NOT NULL);\n"
                        f"{sql}\n;\n"
                        "INSERT INTO plugin_schema (plugin, version) "
                        f"VALUES ({_quote(plugin)}, {version}) "
                        "ON CONFLICT (plugin) DO UPDATE SET version = excluded.version;\n"
                        "COMMIT;"
                    )
                    logger.info("applied migration %s/%s", plugin, name)
                    applied.append(f"{plugin}/{name}")
        return applied

    async def _script(self, script: str) -> None:
        def run(raw: sqlite3.Connection) -> None:
            try:
                raw.executescript(script)
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                raise

        await self._writer.call(run)

    # -- transactions --------------------------------------------------------------------

    def current_transaction(self) -> Tx | None:
        """The transaction this task holds on this database, if any."""
        held = _open.get()
        if not held:
            return None
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return None
        for tx in held:
            if tx.owner is self and tx.task is task and not tx.finished:
                return tx
        return None

    def _refuse_nested(self) -> None:
        if self._exclusive_task is not None and self._exclusive_task is _current_task():
            raise NestedTransactionError(
                f"{self.path.name}: this task holds the write lock (Database.exclusive); "
                "a transaction inside it would wait for ever"
            )
        if self.current_transaction() is not None:
            raise NestedTransactionError(
                f"{self.path.name}: a transaction is already open in this task; use the tx "
                "you were given (a hook called inside the engine's transaction receives it "
                "as `tx`)"
            )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A write transaction: serialised in this process, BEGIN IMMEDIATE across processes.

        The :class:`~bot.storage.tx.Tx` it yields holds writes nobody reads and sends them
        with the next statement that returns something (fewer round trips to SQLite).
        Raises :class:`NestedTransactionError` at once when this task already holds one.
        """
        self._refuse_nested()
        async with self._write_lock:
            tx = Tx(self._writer.call, owner=self, task=asyncio.current_task())
            token = _open.set((*_open.get(), tx))
            try:
                yield tx
                await tx.commit()
            except BaseException:
                tx.discard()
                if tx.begun:
                    # Also when cancelled while waiting for a busy database: the BEGIN may
                    # still complete on the writer's thread, so undo it rather than leave
                    # the connection inside a transaction every later BEGIN would trip over.
                    await self._rollback()
                raise
            finally:
                tx.finished = True
                try:
                    _open.reset(token)
                except ValueError:  # closed from another context
                    _open.set(tuple(t for t in _open.get() if t is not tx))

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(sqlite3_connection)`` on the writer's thread in one hop (after everything
        sent to it before). Inside :meth:`transaction` use the Tx instead."""
        return await self._writer.call(fn)

    async def _rollback(self) -> None:
        # The writer runs requests in order, so this ROLLBACK follows any BEGIN still
        # queued; shielded so that a cancellation cannot skip it.
        def rollback(raw: sqlite3.Connection) -> None:
            if raw.in_transaction:
                raw.execute("ROLLBACK")

        await asyncio.shield(self._writer.call(rollback))

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[Writer]:
        """This process's write lock without a transaction, for VACUUM and checkpoints."""
        self._refuse_nested()
        async with self._write_lock:
            self._exclusive_task = asyncio.current_task()
            try:
                yield self.writer
            finally:
                self._exclusive_task = None

    @property
    def conn(self) -> Tx | Reader:
        """What to read through now: this task's open transaction, else the read
        connections (which never see a transaction still open)."""
        return self.current_transaction() or self.reader

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        return await fetch_one(self.conn, sql, params)

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await fetch_all(self.conn, sql, params)

    async def execute_write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """A single-statement write in its own transaction; returns lastrowid."""
        async with self.transaction() as tx:
            result = await tx.execute(sql, params)
            return result.lastrowid or 0

    async def executemany_write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.transaction() as tx:
            await tx.executemany(sql, rows)

    async def truncate_log(self, *, wait: float = 1.0) -> bool:
        """Copy the write-ahead log into the file and empty it (``wal_checkpoint(TRUNCATE)``).

        SQLite's own checkpoints copy pages back but leave the log's old frames on disk
        until they are overwritten, erased messages among them. Waits at most ``wait``
        seconds for other connections; False when one kept it from completing.
        """

        def checkpoint(raw: sqlite3.Connection) -> bool:
            raw.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            try:
                row = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            except sqlite3.OperationalError:
                return False
            finally:
                raw.execute(BUSY_TIMEOUT)
            return row is not None and row[0] == 0

        async with self.exclusive() as writer:
            return await writer.run(checkpoint)

    async def backup(self, target: Path) -> None:
        """An online copy through SQLite's backup API, consistent while the bot writes
        (taken on a read connection: what is committed).

        The copy holds the whole panel's personal data: it is created readable and
        writable by its owner only (0600), whatever the umask.
        """
        await backup_connection(self.reader, Path(target))


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


async def backup_connection(reader: Reader, target: Path) -> None:
    """Copy an open database (through one of its read connections, ``db.reader``) to a new
    file ``target``, created owner-only (0600)."""
    # Created empty and owner-only first: SQLite then writes into it (and gives a journal
    # it makes beside it the same permissions).
    create_owner_only(target)

    def copy(raw: sqlite3.Connection) -> None:
        dest = sqlite3.connect(str(target))
        try:
            raw.backup(dest)
        finally:
            dest.close()

    try:
        await reader.run(copy)
    except sqlite3.Error as exc:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise DatabaseError(f"{target}: the backup failed ({exc})") from None


# Each await on a connection is a hop to its thread and back, the main cost of a small
# query; execute_fetchall runs the query and reads its rows in one hop.


async def fetch_one(conn: ReadConn, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
    """The first row of a query on a connection (inside or outside a transaction)."""
    rows = await conn.execute_fetchall(sql, params)
    return next(iter(rows), None)


async def fetch_all(conn: ReadConn, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, params))
