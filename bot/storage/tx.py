"""A write transaction that reaches SQLite in as few thread hops as it can.

aiosqlite runs every call on its own thread; the hop there and back, not the SQL, is the main
cost of a small statement (bench/inbound.py measures it). Inside a transaction most writes
return nothing anyone reads (an UPDATE of a session, an audit row), so :meth:`Tx.later`
holds them and sends them with the next statement whose result is needed, or with COMMIT.
``BEGIN IMMEDIATE`` itself travels with the first statement. The order of statements is
kept, and the transaction is still all-or-nothing: a held write that fails raises from the
flush that carries it, and the transaction rolls back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from bot.storage.db import Database

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Result:
    """What a write reports: the new row id and how many rows changed."""

    lastrowid: int | None
    rowcount: int


class Tx:
    """Handed out by :meth:`Database.transaction`; storage functions take it as ``conn``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pending: list[tuple[str, Sequence[Any]]] = [("BEGIN IMMEDIATE", ())]
        self.begun = False
        self.finished = False

    def later(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Hold a write whose result nobody reads; it goes with the next flush."""
        self._pending.append((sql, params))

    async def run(self, final: Callable[[sqlite3.Connection], T]) -> T:
        """Send the held statements, then ``final(raw_connection)``, in one hop."""
        pending, self._pending = self._pending, []
        if pending and pending[0][0] == "BEGIN IMMEDIATE":
            self.begun = True

        def work(raw: sqlite3.Connection) -> T:
            for sql, params in pending:
                raw.execute(sql, params)
            return final(raw)

        return await self._db.run(work)

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

    async def fetch_and_commit(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The held writes, one last query and COMMIT, in one hop."""

        def final(raw: sqlite3.Connection) -> list[sqlite3.Row]:
            rows = raw.execute(sql, params).fetchall()
            raw.execute("COMMIT")
            return rows

        rows = await self.run(final)
        self.finished = True
        return rows

    async def commit(self) -> None:
        if not self.finished:
            await self.run(lambda raw: raw.execute("COMMIT"))
            self.finished = True

    def discard(self) -> None:
        """Forget held writes (the transaction is being rolled back)."""
        self._pending = []
        self.finished = True


async def write_later(conn: Any, sql: str, params: Sequence[Any] = ()) -> None:
    """A write whose result is not needed: held inside a :class:`Tx`, else run now."""
    if isinstance(conn, Tx):
        conn.later(sql, params)
    else:
        await conn.execute(sql, params)
