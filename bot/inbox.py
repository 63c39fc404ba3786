"""The inbox: verified inbound messages, handed from web processes to the main process.

With ``[web] workers = 0`` (the default) a webhook is handled where it arrives, and answered
once everything it causes is committed. With ``workers = N`` the web server runs in N
processes of its own (see :mod:`bot.web.workers`). Each checks a request (signature, secret,
shape), and its channel parses it and hands what it means to the ingress
(:mod:`bot.ingress`), which stores it in the inbox (an SQLite file of its own, beside the
panel's database) with :class:`InboxWriter`; the provider is answered once it is committed.
The main process reads the inbox in order with :class:`InboxReader`, hands each payload to
the handler for its source (its own ingress), and deletes it once handled. The inbox itself
never parses a provider's payload: it stores text under a source and a key.

Nothing is lost between the two: a payload is answered only after it is committed here, and
deleted only after the engine has committed what it caused. A crash in between means the
payload is handled again at the next start, which the engine's own dedupe on the provider's
message id turns into a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from bot.trouble import Trouble, storage_error

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.storage.db import Database

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    -- AUTOINCREMENT: ids never go back, even once every row has been handled and deleted,
    -- so the reader's "everything after the last id I read" never skips a row.
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    -- inbound, report, action (bot.ingress); earlier versions stored raw payloads as
    -- twilio-message, twilio-status, telegram-update, sim-message
    source      TEXT NOT NULL,
    key         TEXT NOT NULL,      -- the provider's id: a repeat of it is not stored twice
    payload     TEXT NOT NULL,      -- the parsed message or report as JSON (bot.ingress)
    received_at REAL NOT NULL,      -- Unix time
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    UNIQUE (source, key)
)
"""


def inbox_path(database: Path) -> Path:
    """The inbox's own SQLite file, beside the panel's database (``panel.db-inbox``).

    A file of its own so that a web process storing a payload never waits for the engine's
    transactions on the panel's database, nor they for it.
    """
    return database.with_name(database.name + "-inbox")


async def open_inbox(database: Path | str, *, writer: bool = False) -> Database:
    """Open (creating if needed) the inbox file for the panel database at ``database``.

    A ``writer`` (a web process) leaves checkpoints of the write-ahead log to the main
    process's reader, so that copying pages back into the file never delays an answer.
    """
    from bot.storage.db import Database

    setup = [SCHEMA, "PRAGMA wal_autocheckpoint = 0"] if writer else [SCHEMA]
    from bot.files import owner_only

    owner_only(inbox_path(Path(database)))  # payloads hold numbers and texts: 0600
    return await Database.connect(inbox_path(Path(database)), setup=setup)


# A handler takes the payload (text, as stored) and when it was received; it
# raises when it could not handle it (the row stays and is tried again).
Handler = Callable[[str, datetime], Awaitable[None]]

# Most payloads committed in one transaction by a web process (group commit).
MAX_WRITE_BATCH = 256
# Most rows read from the inbox at once, and most handled at the same time.
READ_BATCH = 256
MAX_IN_FLIGHT = 1024
# A payload that fails this many times stays in the table, with its error, untouched.
MAX_ATTEMPTS = 5
# How long a web process waits for the inbox's write lock before giving up on a batch.
BUSY_WAIT = 10.0
# Failed rows are tried again this often; without a wake-up the inbox is read this often.
RETRY_EVERY = 5.0
# While the database cannot store what payloads bring (full, locked, failing), the rows
# wait, their attempts uncounted, and are tried again ever less often, up to this.
MAX_STORAGE_BACKOFF = 30.0
IDLE_POLL = 1.0
# Handled rows are deleted at most this often, or once this many are waiting.
FLUSH_EVERY = 0.25
FLUSH_AT = 2000
# When idle, the reader empties the inbox's write-ahead log at most this often, so that
# payloads handled and deleted (or erased by ``panel erase``) do not linger in it.
TRUNCATE_EVERY = 10.0

INSERT = "INSERT OR IGNORE INTO inbox (source, key, payload, received_at) VALUES (?, ?, ?, ?)"


class UnstorablePayload(ValueError):
    """This payload itself cannot be stored (e.g. text with a lone surrogate, which has no
    UTF-8 form): the request is at fault (answer 4xx), not the storage (503)."""


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


def _unstorable(exc: Exception) -> Exception:
    """The exception a put raises: :class:`UnstorablePayload` for a payload's own fault."""
    if isinstance(exc, UnicodeError):
        return UnstorablePayload(f"the payload cannot be stored as text: {exc.reason}")
    return exc


def _settle(future: asyncio.Future[None], exc: Exception | None) -> None:
    if future.done():
        return
    if exc is None:
        future.set_result(None)
    else:
        future.set_exception(exc)


class InboxWriter:
    """Stores payloads for the main process; concurrent puts share one transaction.

    The transaction runs on the event loop itself, over a connection of its own: a batch
    of inserts and a COMMIT without a sync (WAL, ``synchronous = NORMAL``) take less time
    than handing them to a thread and back, which under a burst means waiting for a busy
    CPU twice. When the file is locked (the main process deleting what it handled), the
    loop is not blocked: it tries again after a short sleep, for up to BUSY_WAIT seconds.
    """

    def __init__(self, db: Database, *, notify_fd: int | None = None) -> None:
        self.db = db
        self.notify_fd = notify_fd
        from bot.storage.db import PRAGMAS

        self._conn = sqlite3.connect(db.path, isolation_level=None, check_same_thread=False)
        # The database's own settings, then: never sleep inside SQLite on a lock (the loop
        # waits instead, see _insert) and leave checkpoints to the main process.
        for pragma in (*PRAGMAS, "PRAGMA busy_timeout = 0", "PRAGMA wal_autocheckpoint = 0"):
            self._conn.execute(pragma)
        self._pending: list[tuple[tuple[str, str, str, float], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0

    async def put(self, source: str, key: str, payload: str) -> None:
        """Return once the payload is committed (a repeat of ``(source, key)`` is ignored).

        ``payload`` is text (the ingress stores a parsed message or report as JSON) that
        the handler for ``source`` reads back in the main process. Raises
        :class:`UnstorablePayload` when this payload cannot be stored (the request's fault:
        answer 4xx), anything else when storing failed (answer 503). Payloads that arrive
        together share a transaction; when it fails for another reason than a lock, they
        are stored one by one, so one bad payload never fails the others.
        """
        row = (source, key, payload, time.time())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="panelbot-inbox-writer")
        # Shielded: a client that hangs up must not cut the shared transaction short.
        await asyncio.shield(future)

    async def close(self) -> None:
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer], timeout=5)
        self._conn.close()

    async def backlog(self) -> tuple[int, float, int]:
        """See :func:`backlog`."""
        return await backlog(self.db)

    async def _write_loop(self) -> None:
        while self._pending:
            batch, self._pending = (
                self._pending[:MAX_WRITE_BATCH],
                self._pending[MAX_WRITE_BATCH:],
            )
            try:
                await self._insert([row for row, _ in batch])
            except Exception as exc:
                if len(batch) == 1 or _is_busy(exc):
                    # Alone, or the file stayed locked for BUSY_WAIT: one at a time would
                    # only wait as long again for each row. Every put fails (503, retried).
                    for _, future in batch:
                        _settle(future, _unstorable(exc))
                    continue
                # Something in the batch could not be stored (a payload SQLite cannot
                # encode, say): store the rows one by one, so that only that one fails.
                logger.warning(
                    "inbox: a batch of %d failed (%s); storing them one by one",
                    len(batch),
                    type(exc).__name__,
                )
                await self._insert_one_by_one(batch)
                continue
            self.batches += 1
            for _, future in batch:
                _settle(future, None)
            self._notify()

    async def _insert_one_by_one(
        self, batch: list[tuple[tuple[str, str, str, float], asyncio.Future[None]]]
    ) -> None:
        stored = False
        for row, future in batch:
            try:
                await self._insert([row])
            except Exception as exc:
                _settle(future, _unstorable(exc))
            else:
                self.batches += 1
                stored = True
                _settle(future, None)
        if stored:
            self._notify()

    async def _insert(self, rows: list[tuple[str, str, str, float]]) -> None:
        conn = self._conn
        deadline = time.monotonic() + BUSY_WAIT
        pause = 0.0005
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                    raise
                if time.monotonic() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.01)
        try:
            conn.executemany(INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _notify(self) -> None:
        if self.notify_fd is None:
            return
        # One byte says "there is something to read"; a full pipe already says so.
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self.notify_fd, b"!")


class InboxReader:
    """Reads the inbox in order and hands each payload to the handler for its source.

    Payloads are started in the order they were stored, so the engine receives one sender's
    messages in order; they are handled side by side (the engine writes messages that arrive
    together in one transaction) and deleted in batches once handled.
    """

    def __init__(
        self,
        db: Database,
        handlers: dict[str, Handler],
        *,
        wake_fd: int | None = None,
    ) -> None:
        self.db = db
        self.handlers = handlers
        self.wake_fd = wake_fd
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_id = 0
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._done: list[int] = []
        self._failed: list[tuple[int, str]] = []
        self._room = asyncio.Event()
        self._room.set()
        self.handled = 0
        self.truncations = 0
        # Rows whose handler failed because of the database (full, locked): not counted
        # as attempts; tried again, ever less often, until the database takes them.
        self.storage = Trouble(logger, "inbox: payloads wait, the database cannot store them")
        self._storage_backoff = RETRY_EVERY
        self._retry_now = False
        self.recording = Trouble(logger, "inbox: could not record handled rows")
        self._read_trouble = Trouble(logger, "inbox: reading failed")

    @classmethod
    async def open(cls, bot: Bot, *, wake_fd: int | None = None) -> InboxReader:
        """A started reader of the inbox beside the bot's database, handing what it holds to
        the bot's ingress (:meth:`bot.ingress.Ingress.handlers`). :meth:`close` it."""
        reader = cls(await open_inbox(bot.db.path), bot.ingress.handlers(), wake_fd=wake_fd)
        await reader.start()
        return reader

    @classmethod
    async def for_leftovers(cls, bot: Bot) -> InboxReader | None:
        """:meth:`open` when an inbox file exists beside the database (payloads web
        processes stored before a stop); None when there is none."""
        return await cls.open(bot) if inbox_path(bot.db.path).exists() else None

    async def close(self) -> None:
        """:meth:`stop`, then close the inbox's database."""
        await self.stop()
        await self.db.close()

    async def start(self) -> None:
        if self.wake_fd is not None:
            os.set_blocking(self.wake_fd, False)
            asyncio.get_running_loop().add_reader(self.wake_fd, self._on_wake_fd)
        self._task = asyncio.create_task(self._run(), name="panelbot-inbox-reader")

    def wake(self) -> None:
        self._wake.set()

    def _on_wake_fd(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.wake_fd, 4096):  # type: ignore[arg-type]
                pass
        self._wake.set()

    async def stop(self, *, drain: float = 10.0) -> None:
        """Handle what is already stored (for at most ``drain`` seconds), then stop.

        What is left after that stays stored and is handled at the next start.
        """
        if self.wake_fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.wake_fd)
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline:
            got = await self._read_once()  # never waits: reads only what there is room for
            if self._in_flight:
                await asyncio.wait(
                    list(self._in_flight.values()),
                    timeout=max(0.01, deadline - time.monotonic()),
                )
            await self._flush()
            if not got and not self._in_flight:
                break
        left = list(self._in_flight.values())
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=1)
        await self._flush()

    async def _run(self) -> None:
        next_retry = time.monotonic() + RETRY_EVERY
        last_flush = time.monotonic()
        next_truncate = time.monotonic() + TRUNCATE_EVERY
        while not self._stopping:
            try:
                # Cleared before reading: a wake-up that comes during the read is kept.
                self._wake.clear()
                await self._room.wait()
                got = await self._read_once()
                # Deletes are batched (FLUSH_EVERY): each takes the inbox's write lock,
                # which a web process storing a payload would then have to wait for.
                if time.monotonic() - last_flush >= FLUSH_EVERY or len(self._done) >= FLUSH_AT:
                    await self._flush()
                    last_flush = time.monotonic()
                if self._retry_now or time.monotonic() >= next_retry:
                    self._retry_now = False
                    await self._retry_failed()
                    if self.storage.active:
                        next_retry = time.monotonic() + self._storage_backoff
                        self._storage_backoff = min(self._storage_backoff * 2, MAX_STORAGE_BACKOFF)
                    else:
                        next_retry = time.monotonic() + RETRY_EVERY
                if not got:
                    # Idle: back in time for the next flush when there is one to make.
                    pending = self._done or self._failed or self._in_flight
                    if not pending and time.monotonic() >= next_truncate:
                        next_truncate = time.monotonic() + TRUNCATE_EVERY
                        if not await truncate_log(self.db):
                            logger.debug("inbox: the log could not be emptied; trying later")
                        self.truncations += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            self._wake.wait(), FLUSH_EVERY if pending else IDLE_POLL
                        )
                self._read_trouble.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._read_trouble.failed(exc)  # tried again in a second
                await asyncio.sleep(1.0)

    async def _read_once(self) -> bool:
        """Start the payloads stored since the last read, as many as there is room for
        (at most MAX_IN_FLIGHT running); True when there were any."""
        room = min(READ_BATCH, MAX_IN_FLIGHT - len(self._in_flight))
        if room <= 0:
            return False
        rows = await self.db.fetchall(
            "SELECT id, source, payload, received_at FROM inbox "
            "WHERE id > ? AND attempts < ? ORDER BY id LIMIT ?",
            (self._last_id, MAX_ATTEMPTS, room),
        )
        for row in rows:
            self._start(row)
        if rows:
            self._last_id = rows[-1]["id"]
        return bool(rows)

    async def _retry_failed(self) -> None:
        """Start again the rows already read that are still here: ones that failed, and
        ones an operator sent back with ``panelbot db inbox --retry``."""
        rows = await self.db.fetchall(
            "SELECT id, source, payload, received_at FROM inbox "
            "WHERE id <= ? AND attempts < ? ORDER BY id LIMIT ?",
            (self._last_id, MAX_ATTEMPTS, READ_BATCH),
        )
        settled = {row_id for row_id in self._done} | {row_id for row_id, _ in self._failed}
        for row in rows:
            if row["id"] not in self._in_flight and row["id"] not in settled:
                self._start(row)

    def _start(self, row: sqlite3.Row) -> None:
        row_id = row["id"]
        task = asyncio.create_task(
            self._handle(row_id, row["source"], row["payload"], row["received_at"])
        )
        self._in_flight[row_id] = task
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            self._room.clear()

    async def _handle(self, row_id: int, source: str, payload: str, received_at: float) -> None:
        try:
            handler = self.handlers.get(source)
            if handler is None:
                raise LookupError(f"no handler for {source!r} (is its channel enabled?)")
            await handler(payload, datetime.fromtimestamp(received_at, UTC))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if storage_error(exc) is not None:
                # The database's fault, not the payload's: no attempt counted; the row is
                # tried again (_retry_failed) until the database takes it.
                self.storage.failed(exc)
                return
            # The payload holds personal data: the log names the row and the error only.
            logger.warning("inbox: row %d (%s) failed: %s", row_id, source, type(exc).__name__)
            self._failed.append((row_id, f"{type(exc).__name__}: {exc}"[:500]))
        else:
            self._done.append(row_id)
            self.handled += 1
            if self.storage.ok():
                # The database takes payloads again: the ones waiting go now.
                self._storage_backoff = RETRY_EVERY
                self._retry_now = True
        finally:
            self._in_flight.pop(row_id, None)
            if len(self._in_flight) < MAX_IN_FLIGHT:
                self._room.set()

    async def _flush(self) -> None:
        """Delete what was handled, count what failed: one transaction."""
        done, self._done = self._done, []
        failed, self._failed = self._failed, []
        if not done and not failed:
            return
        try:
            async with self.db.transaction() as tx:
                for start in range(0, len(done), 500):
                    chunk = done[start : start + 500]
                    tx.later(f"DELETE FROM inbox WHERE id IN ({','.join('?' * len(chunk))})", chunk)
                for row_id, error in failed:
                    tx.later(
                        "UPDATE inbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                        (error, row_id),
                    )
        except BaseException as exc:
            # Kept for the next flush. Handled rows left behind would only be handled again,
            # harmlessly (the engine dedupes on the provider's id).
            self._done.extend(done)
            self._failed.extend(failed)
            if not isinstance(exc, Exception):
                raise
            self.recording.failed(exc)  # tried again at the next flush
            return
        self.recording.ok()
        for row_id, _ in failed:
            logger.debug("inbox: row %d will be tried again", row_id)


def payload_addresses(source: str, payload: str) -> set[str]:
    """The ``channel:id`` addresses a stored payload is from or to, as far as it says: an
    item the ingress stored, or a raw payload an earlier version stored."""
    from bot.ingress import stored_addresses

    found: set[str] = stored_addresses(source, payload)
    try:
        if source.startswith("twilio-"):
            from bot.channels.twilio.webhook import address_from

            for name, value in parse_qsl(payload, keep_blank_values=True):
                if name in ("From", "To") and (address := address_from(value)) is not None:
                    found.add(str(address))
        elif source == "telegram-update":
            data = json.loads(payload)
            for part in ("message", "edited_message", "callback_query"):
                item = data.get(part) if isinstance(data, dict) else None
                if not isinstance(item, dict):
                    continue
                message = item.get("message", item) if part == "callback_query" else item
                chat = message.get("chat") if isinstance(message, dict) else None
                if isinstance(chat, dict) and "id" in chat:
                    found.add(f"telegram:{chat['id']}")
                sender = item.get("from")
                if isinstance(sender, dict) and "id" in sender:
                    found.add(f"telegram:{sender['id']}")
        elif source == "sim-message":
            data = json.loads(payload)
            if isinstance(data, dict) and isinstance(data.get("from"), str):
                found.add(data["from"])
    except (ValueError, AttributeError, TypeError, RecursionError):
        pass
    return found


@contextlib.asynccontextmanager
async def existing_inbox(database: Path) -> AsyncIterator[Database | None]:
    """The inbox beside ``database``, opened and then closed; None when there is none (the
    bot never ran with web processes there): nothing is created."""
    if not inbox_path(database).exists():
        yield None
        return
    inbox = await open_inbox(database)
    try:
        yield inbox
    finally:
        await inbox.close()


async def backlog(db: Database) -> tuple[int, float, int]:
    """Payloads waiting for the main process, the age in seconds of the oldest, and how
    many were given up on after MAX_ATTEMPTS failures (they stay for an operator)."""
    row = await db.fetchone(
        "SELECT count(*) FILTER (WHERE attempts < ?), "
        "min(received_at) FILTER (WHERE attempts < ?), "
        "count(*) FILTER (WHERE attempts >= ?) FROM inbox",
        (MAX_ATTEMPTS, MAX_ATTEMPTS, MAX_ATTEMPTS),
    )
    assert row is not None
    oldest = round(max(0.0, time.time() - row[1]), 3) if row[1] is not None else 0.0
    return int(row[0]), oldest, int(row[2])


async def erase_payloads(database: Path, addresses: Iterable[str]) -> int:
    """Delete stored payloads from or to any of ``addresses`` (``channel:id``); how many.

    Payloads normally live for milliseconds, but one that keeps failing stays: an erasure
    must reach it too.
    """
    wanted = set(addresses)
    async with existing_inbox(database) as inbox:
        if inbox is None:
            return 0
        rows = await inbox.fetchall("SELECT id, source, payload FROM inbox")
        doomed = [r["id"] for r in rows if payload_addresses(r["source"], r["payload"]) & wanted]
        if doomed:
            async with inbox.transaction() as tx:
                tx.later(f"DELETE FROM inbox WHERE id IN ({','.join('?' * len(doomed))})", doomed)
        return len(doomed)


async def payloads_of(database: Path, addresses: Iterable[str]) -> list[dict[str, Any]]:
    """The stored payloads from or to any of ``addresses``, contents included (for a
    subject access request), oldest first."""
    wanted = set(addresses)
    async with existing_inbox(database) as inbox:
        if inbox is None:
            return []
        rows = await inbox.fetchall(
            "SELECT id, source, key, payload, received_at, attempts, last_error FROM inbox "
            "ORDER BY id"
        )
    return [
        {
            **{k: r[k] for k in ("id", "source", "key", "payload", "attempts", "last_error")},
            "received_at": datetime.fromtimestamp(r["received_at"], UTC).isoformat(
                timespec="milliseconds"
            ),
        }
        for r in rows
        if payload_addresses(r["source"], r["payload"]) & wanted
    ]


async def prune_payloads(database: Path, before: float) -> int:
    """Delete payloads received before ``before`` (Unix time), given up on or not: the
    retention limit (``[privacy] keep_messages_for``) applies to them too. How many."""
    async with existing_inbox(database) as inbox:
        if inbox is None:
            return 0
        async with inbox.transaction() as tx:
            result = await tx.execute("DELETE FROM inbox WHERE received_at < ?", (before,))
        return int(result.rowcount)


async def truncate_log(db: Database) -> bool:
    """Copy the write-ahead log into the file and empty it (``wal_checkpoint(TRUNCATE)``).

    Until then the log keeps old copies of pages, payloads already handled and deleted
    among them. False when another connection kept it from completing (a web process in
    the middle of a write); the main process's reader tries again whenever it is idle.
    """
    async with db.exclusive() as conn:
        row = await conn.execute_fetchall("PRAGMA wal_checkpoint(TRUNCATE)")
    result = next(iter(row), None)
    return result is not None and result[0] == 0


async def truncate_inbox_log(database: Path) -> bool | None:
    """:func:`truncate_log` on the inbox beside ``database``; None when there is no inbox."""
    async with existing_inbox(database) as inbox:
        if inbox is None:
            return None
        return await truncate_log(inbox)


async def inbox_status(database: Path) -> tuple[int, float, list[dict[str, Any]]] | None:
    """What waits in the inbox beside ``database``: the count waiting, the oldest one's age
    in seconds, and the payloads given up on (without their contents). None: no inbox."""
    async with existing_inbox(database) as inbox:
        if inbox is None:
            return None
        waiting, oldest, _ = await backlog(inbox)
        failed = await inbox.fetchall(
            "SELECT id, source, attempts, last_error, received_at FROM inbox "
            "WHERE attempts >= ? ORDER BY id",
            (MAX_ATTEMPTS,),
        )
    return (
        waiting,
        oldest,
        [
            {
                "id": r["id"],
                "source": r["source"],
                "attempts": r["attempts"],
                "last_error": r["last_error"],
                "received_at": datetime.fromtimestamp(r["received_at"], UTC).isoformat(
                    timespec="seconds"
                ),
            }
            for r in failed
        ],
    )


async def settle_failed(database: Path, *, retry: bool) -> int:
    """Send the payloads given up on back to the main process (``retry``), or delete them."""
    async with existing_inbox(database) as inbox:
        if inbox is None:
            return 0
        sql = (
            "UPDATE inbox SET attempts = 0 WHERE attempts >= ?"
            if retry
            else "DELETE FROM inbox WHERE attempts >= ?"
        )
        async with inbox.transaction() as tx:
            cursor = await tx.execute(sql, (MAX_ATTEMPTS,))
            return int(cursor.rowcount)
