"""A write transaction that reaches SQLite in as few thread hops as it can.

The database's writer runs every call on its own thread; the hop there and back, not the
SQL, is the main cost of a small statement (bench/inbound.py measures it). Inside a
transaction most writes return nothing anyone reads (an UPDATE of a session, an audit
row), so :meth:`Tx.later` holds them and sends them with the next statement whose result
is needed, or with COMMIT.
``BEGIN IMMEDIATE`` itself travels with the first statement. The order of statements is
kept, and the transaction is still all-or-nothing: a held write that fails raises from the
flush that carries it, and the transaction rolls back.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from bot.storage.conn import Conn, Result

T = TypeVar("T")

__all__ = ["Result", "Tx", "write_later"]


class Tx:
    """Handed out by :meth:`Database.transaction`; storage functions take it as ``conn``.

    Implements :class:`~bot.storage.conn.Conn`. ``run`` sends a function to the writer's
    thread; ``owner`` (the database) and ``task`` (the task that opened it) let the
    database refuse a second transaction opened by the same task.
    """

    def __init__(
        self,
        run: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]],
        *,
        owner: object = None,
        task: asyncio.Task[Any] | None = None,
    ) -> None:
        self._send = run
        self.owner = owner
        self.task = task
        self._pending: list[tuple[str, Sequence[Any], bool]] = [("BEGIN IMMEDIATE", (), False)]
        self.begun = False
        self.finished = False
        # One entry per held insert made with ``capture=True``, in order, once flushed: the
        # new row's id, or None when nothing was inserted (INSERT OR IGNORE of a repeat).
        self.captured: list[int | None] = []
        self.capture_requests = 0

    def later(self, sql: str, params: Sequence[Any] = (), *, capture: bool = False) -> None:
        """Hold a write whose result nobody reads now; it goes with the next flush.

        With ``capture`` the new row's id (when a row was inserted) is added to
        :attr:`captured` at that flush.
        """
        self._pending.append((sql, params, capture))
        self.capture_requests += capture

    async def run(self, final: Callable[[sqlite3.Connection], T]) -> T:
        """Send the held statements, then ``final(raw_connection)``, in one hop."""
        pending, self._pending = self._pending, []
        if pending and pending[0][0] == "BEGIN IMMEDIATE":
            self.begun = True
        captured = self.captured

        def work(raw: sqlite3.Connection) -> T:
            for sql, params, capture in pending:
                cursor = raw.execute(sql, params)
                if capture:
                    inserted = cursor.rowcount == 1 and cursor.lastrowid
                    captured.append(cursor.lastrowid if inserted else None)
            return final(raw)

        return await self._send(work)

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        def final(raw: sqlite3.Connection) -> Result:
            cursor = raw.execute(sql, params)
            return Result(cursor.lastrowid, cursor.rowcount)

        return await self.run(final)

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self.run(lambda raw: raw.execute(sql, params).fetchall())

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = list(rows)
        await self.run(lambda raw: raw.executemany(sql, rows))

    async def commit(self) -> None:
        """Send what is held and COMMIT (``captured`` is complete afterwards)."""
        if not self.finished:
            await self.run(lambda raw: raw.execute("COMMIT"))
            self.finished = True

    def discard(self) -> None:
        """Forget held writes (the transaction is being rolled back)."""
        self._pending = []
        self.finished = True


async def write_later(conn: Conn, sql: str, params: Sequence[Any] = ()) -> None:
    """A write whose result is not needed: held inside a :class:`Tx`, else run now."""
    if isinstance(conn, Tx):
        conn.later(sql, params)
    else:
        await conn.execute(sql, params)
