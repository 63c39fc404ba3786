"""Counts for ``GET /metrics``, read from the database at scrape time (so they hold across
web processes and restarts)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.storage.conn import ReadConn
from bot.storage.db import fetch_all


async def inbound_by_channel(conn: ReadConn) -> dict[str, int]:
    rows = await fetch_all(conn, "SELECT channel, count(*) FROM inbound_messages GROUP BY channel")
    return {r[0]: r[1] for r in rows}


async def outbound_by_channel_status(conn: ReadConn) -> dict[tuple[str, str], int]:
    rows = await fetch_all(
        conn, "SELECT channel, status, count(*) FROM outbox GROUP BY channel, status"
    )
    return {(r[0], r[1]): r[2] for r in rows}


async def panellists_by_status(conn: ReadConn) -> dict[str, int]:
    rows = await fetch_all(conn, "SELECT status, count(*) FROM panellists GROUP BY status")
    return {r[0]: r[1] for r in rows}


async def send_latency(
    conn: ReadConn, buckets: Sequence[float]
) -> dict[tuple[str, int], tuple[list[int], int, float]]:
    """Seconds from queued to accepted by the provider, per (channel, priority): the count
    at or under each bucket's bound (cumulative), the count and the sum."""
    under = ", ".join(f"sum(d <= {float(b)!r})" for b in buckets)
    rows = await fetch_all(
        conn,
        f"SELECT channel, priority, {under}, count(*), total(d) FROM ("
        "  SELECT channel, priority,"
        "    max(0.0, (julianday(sent_at) - julianday(created_at)) * 86400.0) AS d"
        "  FROM outbox WHERE sent_at IS NOT NULL"
        ") GROUP BY channel, priority",
    )
    out: dict[tuple[str, int], tuple[list[int], int, float]] = {}
    n = len(buckets)
    for r in rows:
        values: list[Any] = list(r)
        out[(values[0], values[1])] = (
            [int(v or 0) for v in values[2 : 2 + n]],
            int(values[2 + n]),
            float(values[3 + n]),
        )
    return out
