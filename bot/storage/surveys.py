"""Survey definitions (versioned), waves, invitations, survey sessions and answers."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.models import Address, Panellist, iso, parse_iso, utcnow
from bot.storage.conn import Conn, ReadConn
from bot.storage.db import fetch_all, fetch_one
from bot.storage.panellists import panellist_row
from bot.storage.tx import write_later
from bot.surveys.model import Survey


@dataclass(frozen=True, slots=True)
class StoredSurvey:
    row_id: int
    version: int
    survey: Survey
    created_at: datetime


@dataclass(slots=True)
class Wave:
    id: int
    survey_row_id: int
    status: str
    sample_size: int | None
    include_new: bool
    opens_at: datetime
    closes_at: datetime
    reminder_at: datetime | None
    reminded_at: datetime | None
    #: The panel fields the sample is stratified by (``survey launch --stratify-by``), or None.
    stratify_by: list[str] | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Wave:
        def t(name: str) -> datetime | None:
            return parse_iso(row[name]) if row[name] else None

        return cls(
            id=row["id"],
            survey_row_id=row["survey_row_id"],
            status=row["status"],
            sample_size=row["sample_size"],
            include_new=bool(row["include_new"]),
            opens_at=parse_iso(row["opens_at"]),
            closes_at=parse_iso(row["closes_at"]),
            reminder_at=t("reminder_at"),
            reminded_at=t("reminded_at"),
            stratify_by=json.loads(row["stratify_by"]) if row["stratify_by"] else None,
        )


@dataclass(slots=True)
class Session:
    id: int
    wave_id: int
    survey_row_id: int
    panellist_id: int | None
    state: str
    current_question: str | None
    misses: int
    answered: int


# -- surveys ----------------------------------------------------------------------------


async def add(conn: Conn, survey: Survey) -> tuple[StoredSurvey, bool]:
    """Store a definition; an unchanged one is not duplicated, a changed one is a new version."""
    content_hash = survey.content_hash()
    latest = await latest_version(conn, survey.id)
    if latest and latest.survey.content_hash() == content_hash:
        return latest, False
    version = (latest.version + 1) if latest else 1
    now = utcnow()
    cursor = await conn.execute(
        "INSERT INTO surveys (survey_id, version, title, definition, content_hash, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (
            survey.id,
            version,
            json.dumps(survey.title, ensure_ascii=False),
            json.dumps(survey.to_dict(), ensure_ascii=False),
            content_hash,
            iso(now),
        ),
    )
    return StoredSurvey(int(cursor.lastrowid or 0), version, survey, now), True


def _stored(row: sqlite3.Row) -> StoredSurvey:
    return StoredSurvey(
        row["id"],
        row["version"],
        Survey.from_dict(json.loads(row["definition"])),
        parse_iso(row["created_at"]),
    )


async def latest_version(conn: ReadConn, survey_id: str) -> StoredSurvey | None:
    row = await fetch_one(
        conn,
        "SELECT * FROM surveys WHERE survey_id = ? ORDER BY version DESC LIMIT 1",
        (survey_id,),
    )
    return _stored(row) if row else None


async def by_row_id(conn: ReadConn, row_id: int) -> StoredSurvey | None:
    row = await fetch_one(conn, "SELECT * FROM surveys WHERE id = ?", (row_id,))
    return _stored(row) if row else None


async def summary(conn: ReadConn) -> list[dict[str, Any]]:
    """Each survey's latest version with its waves and invitation/completion counts."""
    rows = await fetch_all(
        conn,
        """
        SELECT s.survey_id, MAX(s.version) AS version, s.title,
               (SELECT COUNT(*) FROM waves w JOIN surveys s2 ON s2.id = w.survey_row_id
                 WHERE s2.survey_id = s.survey_id) AS waves,
               (SELECT COUNT(*) FROM waves w JOIN surveys s2 ON s2.id = w.survey_row_id
                 WHERE s2.survey_id = s.survey_id AND w.status = 'open') AS open_waves,
               (SELECT COUNT(*) FROM invitations i JOIN waves w ON w.id = i.wave_id
                 JOIN surveys s2 ON s2.id = w.survey_row_id
                 WHERE s2.survey_id = s.survey_id) AS invited,
               (SELECT COUNT(*) FROM survey_sessions ss JOIN surveys s2 ON s2.id = ss.survey_row_id
                 WHERE s2.survey_id = s.survey_id AND ss.state = 'completed') AS completed
        FROM surveys s GROUP BY s.survey_id ORDER BY s.survey_id
        """,
    )
    out = []
    for r in rows:
        title = json.loads(r["title"])
        out.append(
            {
                "id": r["survey_id"],
                "version": r["version"],
                "title": title.get("en") or next(iter(title.values()), ""),
                "waves": r["waves"],
                "open_waves": r["open_waves"],
                "invited": r["invited"],
                "completed": r["completed"],
            }
        )
    return out


# -- waves ------------------------------------------------------------------------------


async def create_wave(
    conn: Conn,
    *,
    survey_row_id: int,
    opens_at: datetime,
    closes_at: datetime,
    reminder_at: datetime | None,
    sample_size: int | None,
    include_new: bool,
    stratify_by: list[str] | None = None,
) -> int:
    cursor = await conn.execute(
        "INSERT INTO waves (survey_row_id, status, sample_size, include_new, opens_at, closes_at,"
        " reminder_at, created_at, stratify_by) VALUES (?, 'scheduled', ?, ?, ?, ?, ?, ?, ?)",
        (
            survey_row_id,
            sample_size,
            int(include_new),
            iso(opens_at),
            iso(closes_at),
            iso(reminder_at) if reminder_at else None,
            iso(utcnow()),
            json.dumps(stratify_by) if stratify_by else None,
        ),
    )
    return int(cursor.lastrowid or 0)


async def wave(conn: ReadConn, wave_id: int) -> Wave | None:
    row = await fetch_one(conn, "SELECT * FROM waves WHERE id = ?", (wave_id,))
    return Wave.from_row(row) if row else None


async def waves(conn: ReadConn, *, status: str | None = None) -> list[Wave]:
    if status:
        rows = await fetch_all(conn, "SELECT * FROM waves WHERE status = ? ORDER BY id", (status,))
    else:
        rows = await fetch_all(conn, "SELECT * FROM waves ORDER BY id")
    return [Wave.from_row(r) for r in rows]


async def waves_of_survey(conn: ReadConn, survey_id: str) -> list[Wave]:
    rows = await fetch_all(
        conn,
        "SELECT w.* FROM waves w JOIN surveys s ON s.id = w.survey_row_id "
        "WHERE s.survey_id = ? ORDER BY w.id",
        (survey_id,),
    )
    return [Wave.from_row(r) for r in rows]


async def set_wave(conn: Conn, wave_id: int, **fields: Any) -> None:
    allowed = {"status", "opened_at", "closed_at", "reminded_at"}
    if set(fields) - allowed:
        raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
    sets = ", ".join(f"{k} = ?" for k in fields)
    values = [iso(v) if isinstance(v, datetime) else v for v in fields.values()]
    await write_later(conn, f"UPDATE waves SET {sets} WHERE id = ?", (*values, wave_id))


# -- sessions and answers ---------------------------------------------------------------


def _session(
    row: sqlite3.Row, *, id_column: str = "id", panellist_column: str = "panellist_id"
) -> Session:
    return Session(
        id=row[id_column],
        wave_id=row["wave_id"],
        survey_row_id=row["survey_row_id"],
        panellist_id=row[panellist_column],
        state=row["state"],
        current_question=row["current_question"],
        misses=row["misses"],
        answered=row["answered"],
    )


def turn_from_row(
    row: sqlite3.Row | None, address: Address
) -> tuple[Panellist | None, Session | None, datetime | None]:
    """Split an ``inbound.TURN_SQL`` row: the panellist, their open session, last inbound."""
    if row is None:
        return None, None, None
    panellist = panellist_row(row, [address])
    session = None
    if row["s_id"] is not None:
        session = _session(row, id_column="s_id", panellist_column="id")
    last = parse_iso(row["last_inbound_at"]) if row["last_inbound_at"] else None
    return panellist, session, last


async def active_session(conn: ReadConn, panellist_id: int) -> Session | None:
    row = await fetch_one(
        conn,
        "SELECT * FROM survey_sessions WHERE panellist_id = ? AND state = 'active'",
        (panellist_id,),
    )
    return _session(row) if row else None


async def latest_session(conn: ReadConn, panellist_id: int) -> Session | None:
    row = await fetch_one(
        conn,
        "SELECT * FROM survey_sessions WHERE panellist_id = ? ORDER BY id DESC LIMIT 1",
        (panellist_id,),
    )
    return _session(row) if row else None


async def start_session(
    conn: Conn,
    *,
    wave_id: int,
    survey_row_id: int,
    panellist_id: int,
    first_question: str,
) -> int:
    cursor = await conn.execute(
        "INSERT INTO survey_sessions (wave_id, survey_row_id, panellist_id, state, "
        "current_question, started_at) VALUES (?, ?, ?, 'active', ?, ?)",
        (wave_id, survey_row_id, panellist_id, first_question, iso(utcnow())),
    )
    return int(cursor.lastrowid or 0)


async def advance_session(
    conn: Conn, session_id: int, *, question: str | None, answered: bool
) -> None:
    await write_later(
        conn,
        "UPDATE survey_sessions SET current_question = ?, misses = 0, "
        "answered = answered + ? WHERE id = ?",
        (question, int(answered), session_id),
    )


async def count_miss(conn: Conn, session_id: int) -> None:
    await write_later(
        conn, "UPDATE survey_sessions SET misses = misses + 1 WHERE id = ?", (session_id,)
    )


async def finish_session(conn: Conn, session_id: int, state: str) -> None:
    await write_later(
        conn,
        "UPDATE survey_sessions SET state = ?, current_question = NULL, finished_at = ? "
        "WHERE id = ?",
        (state, iso(utcnow()), session_id),
    )


async def record_answer(conn: Conn, session: Session, question_id: str, value: Any) -> None:
    await write_later(
        conn,
        "INSERT INTO answers (session_id, wave_id, survey_row_id, question_id, value, answered_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (session_id, question_id) DO UPDATE SET "
        "value = excluded.value, answered_at = excluded.answered_at",
        (
            session.id,
            session.wave_id,
            session.survey_row_id,
            question_id,
            json.dumps(value, ensure_ascii=False),
            iso(utcnow()),
        ),
    )


async def session_answers(conn: ReadConn, session_id: int) -> dict[str, Any]:
    rows = await fetch_all(
        conn, "SELECT question_id, value FROM answers WHERE session_id = ?", (session_id,)
    )
    return {r["question_id"]: json.loads(r["value"]) for r in rows}


# -- invitations ------------------------------------------------------------------------


async def add_invitation(conn: Conn, wave_id: int, panellist_id: int, status: str) -> bool:
    """Record an invitation; False when this person was already invited to this wave."""
    now = iso(utcnow())
    cursor = await conn.execute(
        "INSERT OR IGNORE INTO invitations (wave_id, panellist_id, status, created_at, sent_at) "
        "VALUES (?, ?, ?, ?, ?)",
        (wave_id, panellist_id, status, now, now if status == "sent" else None),
    )
    return cursor.rowcount == 1


async def set_invitation(conn: Conn, wave_id: int, panellist_id: int, status: str) -> None:
    extra = ", sent_at = ?" if status == "sent" else ""
    params: tuple[Any, ...] = (status,)
    if status == "sent":
        params += (iso(utcnow()),)
    await write_later(
        conn,
        f"UPDATE invitations SET status = ?{extra} WHERE wave_id = ? AND panellist_id = ?",
        (*params, wave_id, panellist_id),
    )


async def next_waiting_invitation(conn: ReadConn, panellist_id: int) -> tuple[int, int] | None:
    """(wave id, survey row id) of the oldest waiting invitation to a wave still open."""
    row = await fetch_one(
        conn,
        "SELECT w.id, w.survey_row_id FROM invitations i JOIN waves w ON w.id = i.wave_id "
        "WHERE i.panellist_id = ? AND i.status = 'waiting' AND w.status = 'open' "
        "ORDER BY i.id LIMIT 1",
        (panellist_id,),
    )
    return (row[0], row[1]) if row else None


async def unfinished_sessions(conn: ReadConn, wave_id: int) -> list[tuple[int, int, str | None]]:
    """(session, panellist, current question) for open sessions of a wave not yet reminded."""
    rows = await fetch_all(
        conn,
        "SELECT s.id, s.panellist_id, s.current_question FROM survey_sessions s "
        "JOIN invitations i ON i.wave_id = s.wave_id AND i.panellist_id = s.panellist_id "
        "WHERE s.wave_id = ? AND s.state = 'active' AND i.reminded_at IS NULL "
        "AND s.panellist_id IS NOT NULL ORDER BY s.id",
        (wave_id,),
    )
    return [(r[0], r[1], r[2]) for r in rows]


async def mark_reminded(conn: Conn, wave_id: int, panellist_id: int) -> None:
    await write_later(
        conn,
        "UPDATE invitations SET reminded_at = ? WHERE wave_id = ? AND panellist_id = ?",
        (iso(utcnow()), wave_id, panellist_id),
    )


async def close_sessions(conn: Conn, wave_id: int) -> list[int]:
    """End a wave's open sessions; returns the panellists whose session closed."""
    rows = await fetch_all(
        conn,
        "SELECT panellist_id FROM survey_sessions WHERE wave_id = ? AND state = 'active' "
        "AND panellist_id IS NOT NULL",
        (wave_id,),
    )
    await conn.execute(
        "UPDATE survey_sessions SET state = 'closed', finished_at = ? "
        "WHERE wave_id = ? AND state = 'active'",
        (iso(utcnow()), wave_id),
    )
    await conn.execute(
        "UPDATE invitations SET status = 'expired' WHERE wave_id = ? AND status = 'sent'",
        (wave_id,),
    )
    return [r[0] for r in rows]


# -- results ----------------------------------------------------------------------------


async def response_counts(conn: ReadConn, survey_id: str) -> dict[str, int]:
    """Invited, started (at least one answer) and completed, over every wave of the survey."""
    row = await fetch_one(
        conn,
        """
        SELECT
          (SELECT COUNT(*) FROM invitations i JOIN waves w ON w.id = i.wave_id
             JOIN surveys s ON s.id = w.survey_row_id WHERE s.survey_id = :sid) AS invited,
          (SELECT COUNT(*) FROM survey_sessions ss JOIN surveys s ON s.id = ss.survey_row_id
             WHERE s.survey_id = :sid AND (ss.answered > 0 OR ss.state = 'completed')) AS started,
          (SELECT COUNT(*) FROM survey_sessions ss JOIN surveys s ON s.id = ss.survey_row_id
             WHERE s.survey_id = :sid AND ss.state = 'completed') AS completed
        """,
        {"sid": survey_id},
    )
    assert row is not None
    return {"invited": row["invited"], "started": row["started"], "completed": row["completed"]}


async def answers_of_survey(
    conn: ReadConn, survey_id: str
) -> list[tuple[int, int | None, str, Any]]:
    """(session id, panellist id or None once erased, question id, value) for every answer."""
    rows = await fetch_all(
        conn,
        "SELECT a.session_id, ss.panellist_id, a.question_id, a.value FROM answers a "
        "JOIN surveys s ON s.id = a.survey_row_id "
        "JOIN survey_sessions ss ON ss.id = a.session_id "
        "WHERE s.survey_id = ? ORDER BY a.id",
        (survey_id,),
    )
    return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


async def expire_waiting(
    conn: Conn, *, panellist_id: int | None = None, wave_id: int | None = None
) -> None:
    """Waiting invitations that will never start: the person left, or the wave closed."""
    if panellist_id is not None:
        await conn.execute(
            "UPDATE invitations SET status = 'expired' WHERE panellist_id = ? "
            "AND status = 'waiting'",
            (panellist_id,),
        )
    if wave_id is not None:
        await conn.execute(
            "UPDATE invitations SET status = 'expired' WHERE wave_id = ? AND status = 'waiting'",
            (wave_id,),
        )
