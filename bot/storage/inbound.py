"""The inbound message log: every message received, unique on the provider's message id.

Storing one is how the engine deduplicates a provider's retries: it is stored in the same
transaction as the answers, state and replies it causes.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from bot.models import Address, iso
from bot.storage.conn import Conn
from bot.storage.tx import Tx, write_later


async def set_inbound_panellist(conn: Conn, inbound_id: int, panellist_id: int | None) -> None:
    await write_later(
        conn,
        "UPDATE inbound_messages SET panellist_id = ? WHERE id = ?",
        (panellist_id, inbound_id),
    )


async def open_turns(
    tx: Tx, messages: list[tuple[Address, str, str, datetime]]
) -> list[tuple[sqlite3.Row | None, int | None]]:
    """Begin inbound messages' work in one round trip: (address, provider id, text, time).

    For each, in order, reads the sender (panellist, open session, last inbound time: see
    ``TURN_SQL``) and stores the inbound message, unique on the provider's id. Returns the
    sender's row and the new inbound id, or None for the id when the provider sent that
    message before.
    """

    def work(raw: sqlite3.Connection) -> list[tuple[sqlite3.Row | None, int | None]]:
        out = []
        for address, provider_message_id, text, received_at in messages:
            row = raw.execute(TURN_SQL, (address.channel, address.id)).fetchone()
            cursor = raw.execute(
                "INSERT OR IGNORE INTO inbound_messages (channel, provider_message_id, "
                "panellist_id, text, received_at) VALUES (?, ?, ?, ?, ?)",
                (
                    address.channel,
                    provider_message_id,
                    row["id"] if row else None,
                    text,
                    iso(received_at),
                ),
            )
            out.append((row, cursor.lastrowid if cursor.rowcount == 1 else None))
        return out

    return await tx.run(work)


TURN_SQL = (
    "SELECT p.id, p.status, p.locale, p.demographics, p.consent_at, p.stage, p.created_at,"
    " a.last_inbound_at, s.id AS s_id, s.wave_id, s.survey_row_id, s.state,"
    " s.current_question, s.misses, s.answered "
    "FROM addresses a JOIN panellists p ON p.id = a.panellist_id "
    "LEFT JOIN survey_sessions s ON s.panellist_id = p.id AND s.state = 'active' "
    "WHERE a.channel = ? AND a.address = ?"
)
