"""What the dashboard's overview shows: the panel by status, sign-ups by week, open waves and
the messages sent since a given time. Read-only; counts only, no personal data."""

from __future__ import annotations

from dataclasses import dataclass

from bot.storage.conn import ReadConn
from bot.storage.db import fetch_all

# A pending panellist parked by a plugin (the quotas plugin) until there is room.
WAITLISTED_STAGE = "waitlisted"


async def status_counts(conn: ReadConn) -> dict[str, int]:
    """Panellists by status, with waitlisted (pending, parked) apart from signing up."""
    rows = await fetch_all(
        conn,
        "SELECT CASE WHEN status = 'pending' AND stage = ? THEN 'waitlisted' ELSE status END"
        " AS s, COUNT(*) AS n FROM panellists GROUP BY s",
        (WAITLISTED_STAGE,),
    )
    counts = {s: 0 for s in ("active", "pending", "waitlisted", "opted_out", "unreachable")}
    counts["erased"] = 0
    for row in rows:
        counts[row["s"]] = row["n"]
    return counts


async def signups_by_day(conn: ReadConn, since: str) -> list[tuple[str, int]]:
    """(UTC day, people who consented that day) from ``since`` (ISO), days with none absent.

    People erased since are left out (their consent date is gone with them)."""
    rows = await fetch_all(
        conn,
        "SELECT substr(consent_at, 1, 10) AS day, COUNT(*) AS n FROM panellists"
        " WHERE consent_at IS NOT NULL AND consent_at >= ? GROUP BY day ORDER BY day",
        (since,),
    )
    return [(row["day"], row["n"]) for row in rows]


async def consented_before(conn: ReadConn, before: str) -> int:
    row = await fetch_all(
        conn,
        "SELECT COUNT(*) AS n FROM panellists WHERE consent_at IS NOT NULL AND consent_at < ?",
        (before,),
    )
    return int(row[0]["n"]) if row else 0


@dataclass(frozen=True, slots=True)
class OpenWave:
    wave_id: int
    survey_id: str
    title: str
    opened_at: str | None
    closes_at: str
    invited: int
    completed: int


async def open_waves(conn: ReadConn) -> list[OpenWave]:
    rows = await fetch_all(
        conn,
        "SELECT w.id, s.survey_id, s.title, w.opened_at, w.closes_at,"
        " (SELECT COUNT(*) FROM invitations i WHERE i.wave_id = w.id) AS invited,"
        " (SELECT COUNT(*) FROM invitations i WHERE i.wave_id = w.id"
        "  AND i.status = 'completed') AS completed"
        " FROM waves w JOIN surveys s ON s.id = w.survey_row_id"
        " WHERE w.status = 'open' ORDER BY w.closes_at, w.id",
    )
    return [
        OpenWave(
            r["id"],
            r["survey_id"],
            r["title"],
            r["opened_at"],
            r["closes_at"],
            r["invited"],
            r["completed"],
        )
        for r in rows
    ]


async def sent_texts(conn: ReadConn, since: str) -> list[tuple[str, str | None, int]]:
    """(channel, text, how many) of messages a provider accepted since ``since`` (ISO).

    The same text sent to many people (a broadcast) is one row, so measuring segments
    costs one pass per distinct text."""
    rows = await fetch_all(
        conn,
        "SELECT channel, text, COUNT(*) AS n FROM outbox"
        " WHERE status IN ('sent', 'delivered') AND sent_at >= ? GROUP BY channel, text",
        (since,),
    )
    return [(r["channel"], r["text"], r["n"]) for r in rows]
