"""What a plugin's broadcast reads and writes in the core's tables, in bulk.

A broadcast (an impact update, say) goes to many people at once: its audience is resolved
in SQL, its messages are queued many to a statement, and its delivery is counted from the
outbox by the shared prefix of their idempotency keys (``"impact:7:"``). Only active
panellists with an address are ever in an audience: never opted-out, erased, unreachable,
pending or waitlisted people. ``bot.plugin_api`` wraps these for plugins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.models import MessageKind, iso, utcnow
from bot.storage.conn import Conn, ReadConn
from bot.storage.db import fetch_all

# SQLite's limit on bound parameters per statement is 32766 in current builds; stay well under.
_CHUNK = 900

# The address a message goes to: the one the person wrote from last, else the oldest one
# (the order panellists.addresses_of uses).
_BEST_ADDRESS = (
    "SELECT a.id FROM addresses a WHERE a.panellist_id = p.id "
    "ORDER BY a.last_inbound_at IS NULL, a.last_inbound_at DESC, a.id LIMIT 1"
)


@dataclass(frozen=True, slots=True)
class AudienceMember:
    """One person a broadcast may reach: no name, no address, only what sending needs."""

    panellist_id: int
    locale: str | None
    #: The channel of the address the message would go to (``"sms"``, ``"telegram"``...).
    channel: str
    #: True when they answered a question of one of the surveys asked about.
    took_part: bool


@dataclass(frozen=True, slots=True)
class BroadcastMessage:
    """One message to queue: the address is chosen in SQL when it is queued."""

    key: str
    panellist_id: int
    text: str
    locale: str | None = None
    extra: dict[str, Any] | None = None


def _participants_sql(survey_ids: Sequence[str]) -> tuple[str, list[Any]]:
    marks = ",".join("?" * len(survey_ids))
    sql = (
        "SELECT DISTINCT s.panellist_id FROM survey_sessions s "
        "JOIN surveys v ON v.id = s.survey_row_id "
        f"WHERE v.survey_id IN ({marks}) AND s.panellist_id IS NOT NULL "
        "AND (s.state = 'completed' OR EXISTS (SELECT 1 FROM answers x WHERE x.session_id = s.id))"
    )
    return sql, list(survey_ids)


async def participants_count(conn: ReadConn, survey_ids: Sequence[str]) -> int:
    """How many people answered at least one question of these surveys (erased ones too)."""
    if not survey_ids:
        return 0
    marks = ",".join("?" * len(survey_ids))
    # Erased people's sessions are kept detached (no panellist): each still counts once.
    rows = await fetch_all(
        conn,
        "SELECT COUNT(DISTINCT COALESCE(s.panellist_id, -s.id)) AS n FROM survey_sessions s "
        "JOIN surveys v ON v.id = s.survey_row_id "
        f"WHERE v.survey_id IN ({marks}) AND (s.state = 'completed' "
        "OR EXISTS (SELECT 1 FROM answers x WHERE x.session_id = s.id))",
        list(survey_ids),
    )
    return int(rows[0]["n"])


async def audience(
    conn: ReadConn,
    *,
    survey_ids: Sequence[str] = (),
    only_participants: bool = False,
    field: str | None = None,
    value: str | None = None,
) -> list[AudienceMember]:
    """Active panellists with an address, by id, optionally narrowed.

    ``survey_ids`` marks who answered those surveys (``took_part``); ``only_participants``
    keeps only them; ``field``/``value`` keeps those whose demographics say so.
    """
    params: list[Any] = []
    if survey_ids:
        inner, inner_params = _participants_sql(survey_ids)
        took_part = f"p.id IN ({inner})"
        params.extend(inner_params)
    else:
        took_part = "0"
    sql = (
        f"SELECT p.id, p.locale, ({took_part}) AS took_part, "
        f"(SELECT a.channel FROM addresses a WHERE a.id = ({_BEST_ADDRESS})) AS channel "
        "FROM panellists p WHERE p.status = 'active' "
        "AND EXISTS (SELECT 1 FROM addresses a WHERE a.panellist_id = p.id)"
    )
    if field is not None:
        sql += " AND json_extract(p.demographics, ?) = ?"
        params.extend([f'$."{field}"', value])
    if only_participants:
        if not survey_ids:
            return []
        sql = f"SELECT * FROM ({sql}) WHERE took_part = 1"
    sql += " ORDER BY id" if only_participants else " ORDER BY p.id"
    rows = await fetch_all(conn, sql, params)
    return [AudienceMember(r["id"], r["locale"], r["channel"], bool(r["took_part"])) for r in rows]


_QUEUE_SQL = (
    "INSERT OR IGNORE INTO outbox (idempotency_key, panellist_id, channel, address, text, "
    "kind, priority, template, extra, status, next_attempt_at, created_at, updated_at) "
    "SELECT ?, p.id, a.channel, a.address, ?, ?, ?, ?, ?, 'queued', ?, ?, ? "
    f"FROM panellists p JOIN addresses a ON a.id = ({_BEST_ADDRESS}) "
    "WHERE p.id = ? AND p.status = 'active'"
)


async def queue_many(
    tx: Conn,
    messages: Iterable[BroadcastMessage],
    *,
    kind: MessageKind,
    template: str | None,
) -> dict[str, int]:
    """Queue each message to its panellist's best address, once per key (INSERT OR IGNORE);
    the outbox id of each message queued now, by key.

    A person no longer active (opted out, erased, unreachable) since the audience was read
    gets nothing: the check is in the same statement as the insert. A key already in the
    outbox is left as it is (and is not in the answer).
    """
    now = iso(utcnow())
    kind_value, priority = kind.value, kind.priority
    # A broadcast's messages share a handful of extras (one per locale): encode each once.
    encoded: dict[tuple[int, str | None], str] = {}
    kept: list[Any] = []  # the extras cached by id stay alive, so no id is reused meanwhile
    rows = []
    for m in messages:
        cache_key = (id(m.extra), m.locale)
        extra_json = encoded.get(cache_key)
        if extra_json is None:
            extra = dict(m.extra or {})
            if m.locale:
                extra.setdefault("locale", m.locale)
            extra_json = encoded[cache_key] = json.dumps(extra, ensure_ascii=False)
            kept.append(m.extra)
        rows.append(
            (
                m.key,
                m.text,
                kind_value,
                priority,
                template,
                extra_json,
                now,
                now,
                now,
                m.panellist_id,
            )
        )
    if not rows:
        return {}
    # Inside the transaction nobody else writes: the rows added are those past the last id.
    [last] = await tx.execute_fetchall("SELECT COALESCE(MAX(id), 0) AS id FROM outbox")
    await tx.executemany(_QUEUE_SQL, rows)
    added = await fetch_all(
        tx, "SELECT id, idempotency_key FROM outbox WHERE id > ?", (last["id"],)
    )
    return {r["idempotency_key"]: r["id"] for r in added}


def _prefix_range(prefix: str) -> tuple[str, str]:
    # Keys starting with prefix sort between prefix and prefix with its last character
    # bumped: a range the outbox's unique index on idempotency_key answers directly.
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def queued_ids(conn: ReadConn, keys: Sequence[str]) -> dict[str, int]:
    """The outbox id of each of these idempotency keys that is queued (any status)."""
    found: dict[str, int] = {}
    for start in range(0, len(keys), _CHUNK):
        chunk = keys[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = await fetch_all(
            conn,
            f"SELECT id, idempotency_key FROM outbox WHERE idempotency_key IN ({marks})",
            chunk,
        )
        found.update({r["idempotency_key"]: r["id"] for r in rows})
    return found


async def status_counts(conn: ReadConn, key_prefix: str) -> dict[str, int]:
    """Messages whose idempotency key starts with ``key_prefix``, counted by outbox status."""
    low, high = _prefix_range(key_prefix)
    rows = await fetch_all(
        conn,
        "SELECT status, COUNT(*) AS n FROM outbox "
        "WHERE idempotency_key >= ? AND idempotency_key < ? GROUP BY status",
        (low, high),
    )
    return {r["status"]: r["n"] for r in rows}


async def queued_texts(conn: ReadConn, key_prefix: str) -> list[tuple[str, str, str]]:
    """``(channel, status, text)`` of each message under ``key_prefix`` (texts may be pruned)."""
    low, high = _prefix_range(key_prefix)
    rows = await fetch_all(
        conn,
        "SELECT channel, status, COALESCE(text, '') AS text FROM outbox "
        "WHERE idempotency_key >= ? AND idempotency_key < ?",
        (low, high),
    )
    return [(r["channel"], r["status"], r["text"]) for r in rows]


async def cancel_queued(tx: Conn, key_prefix: str) -> int:
    """Cancel the messages under ``key_prefix`` not yet handed to a provider; how many."""
    low, high = _prefix_range(key_prefix)
    result = await tx.execute(
        "UPDATE outbox SET status = 'cancelled', updated_at = ? "
        "WHERE idempotency_key >= ? AND idempotency_key < ? AND status IN ('queued', 'held')",
        (iso(utcnow()), low, high),
    )
    return int(result.rowcount)


async def known_surveys(conn: ReadConn, survey_ids: Sequence[str]) -> set[str]:
    """Which of these survey text ids have at least one stored version."""
    if not survey_ids:
        return set()
    marks = ",".join("?" * len(survey_ids))
    rows = await fetch_all(
        conn, f"SELECT DISTINCT survey_id FROM surveys WHERE survey_id IN ({marks})", survey_ids
    )
    return {r["survey_id"] for r in rows}


async def option_texts(
    conn: ReadConn, survey_id: str, question_id: str
) -> dict[str, dict[str, str]]:
    """``{option id: {locale: text}}`` of a choice or multi question, from the survey's
    latest version; empty for an unknown survey or question, or one without options."""
    from bot.storage.surveys import latest_version

    stored = await latest_version(conn, survey_id)
    if stored is None:
        return {}
    for question in stored.survey.questions:
        if question.id == question_id:
            return {o.id: dict(o.text) for o in question.options}
    return {}
