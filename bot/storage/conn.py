"""What storage functions accept: a connection to read through, or one to write through.

A storage function that only reads takes a :class:`ReadConn`; both the read connections
(``db.reader``, and ``db.conn`` outside a transaction) and a write transaction
(:class:`~bot.storage.tx.Tx`) are one. A function that writes takes a :class:`Conn`, which
only a transaction is: writes never run outside one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Result:
    """What a write reports: the new row id and how many rows changed."""

    lastrowid: int | None
    rowcount: int


@runtime_checkable
class ReadConn(Protocol):
    """Something to run queries on."""

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]: ...


@runtime_checkable
class Conn(ReadConn, Protocol):
    """Something to read and write through: a write transaction."""

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Result: ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
