"""What waves cost and who answered them: the reads behind ``bot.wave_report``.

Every function here reads committed rows; none writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.models import parse_iso
from bot.storage.conn import ReadConn
from bot.storage.db import fetch_all, fetch_one

# An outbox row that reached the provider (these are what a provider charges for).
SENT_STATUSES = ("sent", "delivered")


@dataclass(frozen=True, slots=True)
class InvitationRecord:
    """One invitation that was sent: to whom, when, and whether it was completed."""

    panellist_id: int
    wave_id: int
    invited_at: datetime
    completed: bool
    #: True when the wave has closed, so the outcome is final.
    wave_closed: bool
    demographics: dict[str, str]


@dataclass(frozen=True, slots=True)
class WaveMessage:
    """One outbox row counted for a wave."""

    channel: str
    kind: str
    status: str
    text: str | None


def _demographics(raw: str | None) -> dict[str, str]:
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        return {}
    return (
        {str(k): str(v) for k, v in data.items() if v is not None} if isinstance(data, dict) else {}
    )


async def invitation_history(
    conn: ReadConn, *, exclude_wave: int | None = None
) -> list[InvitationRecord]:
    """Every invitation ever sent (``sent_at`` set), with the person's current demographics.

    People erased since keep their invitations with empty demographics; rows whose person
    was deleted outright are left out. A person's records share one demographics dict
    (read it, never change it).
    """
    people = {
        r["id"]: _demographics(r["demographics"])
        for r in await fetch_all(
            conn,
            "SELECT id, demographics FROM panellists WHERE id IN"
            " (SELECT panellist_id FROM invitations WHERE sent_at IS NOT NULL)",
        )
    }
    rows = await fetch_all(
        conn,
        "SELECT i.panellist_id, i.wave_id, i.sent_at, i.status, w.status AS wave_status"
        " FROM invitations i JOIN waves w ON w.id = i.wave_id"
        " WHERE i.sent_at IS NOT NULL AND i.wave_id IS NOT ? ORDER BY i.wave_id, i.id",
        (exclude_wave,),
    )
    return [
        InvitationRecord(
            panellist_id=r["panellist_id"],
            wave_id=r["wave_id"],
            invited_at=parse_iso(r["sent_at"]),
            completed=r["status"] == "completed",
            wave_closed=r["wave_status"] == "closed",
            demographics=people[r["panellist_id"]],
        )
        for r in rows
        if r["panellist_id"] in people
    ]


async def wave_invitations(conn: ReadConn, wave_id: int) -> list[tuple[bool, dict[str, str]]]:
    """(completed, demographics) of each invitation of the wave that was sent."""
    rows = await fetch_all(
        conn,
        "SELECT i.status, p.demographics FROM invitations i"
        " LEFT JOIN panellists p ON p.id = i.panellist_id"
        " WHERE i.wave_id = ? AND i.sent_at IS NOT NULL",
        (wave_id,),
    )
    return [(r["status"] == "completed", _demographics(r["demographics"])) for r in rows]


# The reply rows' keys are ``in:<channel>:<inbound id>:<n>``; the inbound id is the number
# after the second colon (CAST stops at the third).
_INBOUND_ID = (
    "CAST(substr(o.idempotency_key, 4 + instr(substr(o.idempotency_key, 4), ':')) AS INTEGER)"
)


async def wave_messages(conn: ReadConn, wave_id: int) -> list[WaveMessage]:
    """The outbox rows a wave caused: its invitations and reminders (keys ``wave:<id>:...``),
    and every reply (questions, re-asks, thanks) to a message that arrived while the person's
    session of this wave was open (from its start to its end, inclusive).
    """
    rows = await fetch_all(
        conn,
        "SELECT o.channel, o.kind, o.status, o.text FROM outbox o"
        # A range rather than LIKE, so the key's unique index is used (";" follows ":").
        " WHERE o.idempotency_key >= ? AND o.idempotency_key < ?"
        " UNION ALL "
        "SELECT o.channel, o.kind, o.status, o.text FROM survey_sessions s"
        " JOIN outbox o ON o.panellist_id = s.panellist_id AND o.idempotency_key LIKE 'in:%'"
        f" JOIN inbound_messages m ON m.id = {_INBOUND_ID}"
        " WHERE s.wave_id = ? AND m.received_at >= s.started_at"
        " AND (s.finished_at IS NULL OR m.received_at <= s.finished_at)",
        (f"wave:{wave_id}:", f"wave:{wave_id};", wave_id),
    )
    return [WaveMessage(r["channel"], r["kind"], r["status"], r["text"]) for r in rows]


async def sample_report(conn: ReadConn, wave_id: int) -> dict[str, Any] | None:
    """The account of how a wave's sample was drawn (audit ``wave.sample``), or None."""
    row = await fetch_one(
        conn,
        "SELECT detail FROM audit_log WHERE action = 'wave.sample'"
        " AND json_extract(detail, '$.wave') = ? ORDER BY id DESC LIMIT 1",
        (wave_id,),
    )
    return json.loads(row["detail"]) if row else None


async def refusal(conn: ReadConn, wave_id: int) -> str | None:
    """Why a wave was closed without opening (audit ``wave.refused``), or None."""
    row = await fetch_one(
        conn,
        "SELECT json_extract(detail, '$.reason') AS reason FROM audit_log"
        " WHERE action = 'wave.refused' AND json_extract(detail, '$.wave') = ?"
        " ORDER BY id DESC LIMIT 1",
        (wave_id,),
    )
    return row["reason"] if row else None
