"""Reads behind the dashboard's survey pages: a wave's progress over time, and free-text
answers searched and paged in SQL. Every function reads committed rows; none writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.models import parse_iso
from bot.storage.conn import ReadConn
from bot.storage.db import fetch_all, fetch_one


@dataclass(frozen=True, slots=True)
class WaveEvents:
    """When each invitation was made, each session started (first answer or later) and each
    completed, as sorted lists of UTC times."""

    invited: list[datetime]
    started: list[datetime]
    completed: list[datetime]


async def wave_events(conn: ReadConn, wave_id: int) -> WaveEvents:
    invited = await fetch_all(
        conn,
        "SELECT COALESCE(sent_at, created_at) AS at FROM invitations WHERE wave_id = ? ORDER BY at",
        (wave_id,),
    )
    # Started: a session with at least one answer; its first answer's time.
    started = await fetch_all(
        conn,
        "SELECT MIN(a.answered_at) AS at FROM answers a WHERE a.wave_id = ? "
        "GROUP BY a.session_id ORDER BY at",
        (wave_id,),
    )
    completed = await fetch_all(
        conn,
        "SELECT finished_at AS at FROM survey_sessions WHERE wave_id = ? "
        "AND state = 'completed' AND finished_at IS NOT NULL ORDER BY finished_at",
        (wave_id,),
    )
    return WaveEvents(
        invited=[parse_iso(r["at"]) for r in invited if r["at"]],
        started=[parse_iso(r["at"]) for r in started if r["at"]],
        completed=[parse_iso(r["at"]) for r in completed if r["at"]],
    )


def _like(text: str) -> str:
    r"""A LIKE pattern for ``text`` as it appears inside a stored JSON string (quotes and
    backslashes escaped by JSON), with LIKE's own wildcards escaped by ``\``."""
    inner = json.dumps(text, ensure_ascii=False)[1:-1]
    escaped = inner.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def text_answers(
    conn: ReadConn,
    survey_id: str,
    question_id: str,
    *,
    search: str = "",
    limit: int = 20,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """One page of free-text answers to a question (newest first) containing ``search``
    (case-insensitive for ASCII letters), and how many match in all. No one's name or
    number: the wave and the time only."""
    where = "s.survey_id = ? AND a.question_id = ?"
    params: list[Any] = [survey_id, question_id]
    if search:
        where += " AND a.value LIKE ? ESCAPE '\\'"
        params.append(_like(search))
    total = await fetch_one(
        conn,
        f"SELECT COUNT(*) AS n FROM answers a JOIN surveys s ON s.id = a.survey_row_id "
        f"WHERE {where}",
        params,
    )
    rows = await fetch_all(
        conn,
        f"SELECT a.value, a.wave_id, a.answered_at FROM answers a "
        f"JOIN surveys s ON s.id = a.survey_row_id WHERE {where} "
        f"ORDER BY a.answered_at DESC, a.id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    found = []
    for r in rows:
        value = json.loads(r["value"])
        if isinstance(value, str):
            found.append(
                {"text": value, "wave": r["wave_id"], "answered_at": parse_iso(r["answered_at"])}
            )
    return found, int(total["n"]) if total else 0
