"""Survey review links and the comments reviewers leave through them (tables from 0004).

A link carries a random token (256 bits, URL-safe); only its SHA-256 is stored, so a copy of
the database opens no review. :func:`find` looks the hash up and compares it again in
constant time. Comments are capped in length and in number per link and per ten minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.models import iso, parse_iso, utcnow
from bot.storage.conn import Conn, ReadConn
from bot.storage.db import fetch_all, fetch_one

TOKEN_BYTES = 32
MAX_BODY = 2000
MAX_REVIEWER = 80
MAX_LABEL = 120
MAX_COMMENTS_PER_LINK = 500
# How many comments one link takes in RATE_WINDOW: a reviewer types far fewer.
RATE_LIMIT = 30
RATE_WINDOW = timedelta(minutes=10)


class ShareError(ValueError):
    """A comment or link refused, with the reason in words."""


@dataclass(frozen=True, slots=True)
class Share:
    id: int
    survey_id: str
    label: str | None
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def usable(self, now: datetime | None = None) -> bool:
        """Neither revoked nor past its expiry."""
        return self.revoked_at is None and (now or utcnow()) < self.expires_at


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _share(row: Any) -> Share:
    return Share(
        id=row["id"],
        survey_id=row["survey_id"],
        label=row["label"],
        created_by=row["created_by"],
        created_at=parse_iso(row["created_at"]),
        expires_at=parse_iso(row["expires_at"]),
        revoked_at=parse_iso(row["revoked_at"]) if row["revoked_at"] else None,
    )


_COLUMNS = "id, survey_id, token_hash, label, created_by, created_at, expires_at, revoked_at"


# Line and paragraph separators; bidi embeddings, overrides and isolates.
_BAD_LABEL = re.compile(r"[\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def check_label(label: str) -> None:
    """Refuse a label the dashboard and ``survey share`` (both create through here) cannot show
    as it is: shown on pages and in terminal tables, it is one line without control characters
    (NUL, CR, LF, ESC, C1, line/paragraph separators) or bidirectional overrides."""
    if any(_BAD_LABEL.fullmatch(c) or unicodedata.category(c) == "Cc" for c in label):
        raise ShareError("--label: one line, without control characters")


async def create(
    conn: Conn, survey_id: str, *, expires_in: timedelta, created_by: str, label: str | None
) -> tuple[Share, str]:
    """A new link for ``survey_id``; returns it and its token (shown once, never stored)."""
    if label is not None and len(label) > MAX_LABEL:
        raise ShareError(f"--label: at most {MAX_LABEL} characters")
    if label is not None:
        check_label(label)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    now = utcnow()
    result = await conn.execute(
        "INSERT INTO survey_shares (survey_id, token_hash, label, created_by, created_at, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?)",
        (survey_id, token_hash(token), label, created_by, iso(now), iso(now + expires_in)),
    )
    share = Share(
        id=int(result.lastrowid or 0),
        survey_id=survey_id,
        label=label,
        created_by=created_by,
        created_at=now,
        expires_at=now + expires_in,
        revoked_at=None,
    )
    return share, token


async def find(conn: ReadConn, token: str) -> Share | None:
    """The link ``token`` opens, usable or not; None when there is none."""
    if not token or len(token) > 200:
        return None
    wanted = token_hash(token)
    row = await fetch_one(
        conn, f"SELECT {_COLUMNS} FROM survey_shares WHERE token_hash = ?", (wanted,)
    )
    if row is None or not hmac.compare_digest(row["token_hash"], wanted):
        return None
    return _share(row)


async def get(conn: ReadConn, share_id: int) -> Share | None:
    row = await fetch_one(conn, f"SELECT {_COLUMNS} FROM survey_shares WHERE id = ?", (share_id,))
    return _share(row) if row else None


async def of_survey(conn: ReadConn, survey_id: str) -> list[Share]:
    rows = await fetch_all(
        conn,
        f"SELECT {_COLUMNS} FROM survey_shares WHERE survey_id = ? ORDER BY id DESC",
        (survey_id,),
    )
    return [_share(r) for r in rows]


async def revoke(conn: Conn, share_id: int) -> bool:
    """Revoke a link; False when there is none or it was revoked already."""
    result = await conn.execute(
        "UPDATE survey_shares SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (iso(utcnow()), share_id),
    )
    return bool(result.rowcount)


def clean_comment(body: str, reviewer: str | None) -> tuple[str, str | None]:
    """The comment and name as stored (trimmed), or :class:`ShareError` saying what is wrong."""
    body = body.replace("\r\n", "\n").strip()
    reviewer = (reviewer or "").strip() or None
    if not body:
        raise ShareError("the comment is empty")
    if len(body) > MAX_BODY:
        raise ShareError(f"a comment has at most {MAX_BODY} characters")
    if reviewer is not None and len(reviewer) > MAX_REVIEWER:
        raise ShareError(f"a name has at most {MAX_REVIEWER} characters")
    if "\x00" in body or (reviewer and "\x00" in reviewer):
        raise ShareError("the comment holds a character that cannot be stored")
    return body, reviewer


async def add_comment(
    conn: Conn,
    share: Share,
    *,
    question_id: str | None,
    locale: str | None,
    reviewer: str | None,
    body: str,
) -> int:
    """Store a reviewer's comment; :class:`ShareError` when capped or rate-limited."""
    body, reviewer = clean_comment(body, reviewer)
    now = utcnow()
    row = await fetch_one(
        conn,
        "SELECT COUNT(*) AS n, SUM(created_at >= ?) AS recent FROM survey_share_comments "
        "WHERE share_id = ?",
        (iso(now - RATE_WINDOW), share.id),
    )
    total, recent = (row["n"] or 0, row["recent"] or 0) if row else (0, 0)
    if total >= MAX_COMMENTS_PER_LINK:
        raise ShareError(f"this link has taken its {MAX_COMMENTS_PER_LINK} comments")
    if recent >= RATE_LIMIT:
        raise ShareError("too many comments just now; wait a few minutes and send it again")
    result = await conn.execute(
        "INSERT INTO survey_share_comments (share_id, question_id, locale, reviewer, body, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (share.id, question_id, locale, reviewer, body, iso(now)),
    )
    return int(result.lastrowid or 0)


async def comments_of_survey(conn: ReadConn, survey_id: str) -> list[dict[str, Any]]:
    """Every comment left on ``survey_id``'s links, oldest first, with the link's label."""
    rows = await fetch_all(
        conn,
        "SELECT c.id, c.share_id, s.label, c.question_id, c.locale, c.reviewer, c.body, "
        "c.created_at FROM survey_share_comments c JOIN survey_shares s ON s.id = c.share_id "
        "WHERE s.survey_id = ? ORDER BY c.id",
        (survey_id,),
    )
    return [dict(r) for r in rows]


async def comments_of_share(conn: ReadConn, share_id: int) -> list[dict[str, Any]]:
    rows = await fetch_all(
        conn,
        "SELECT id, question_id, locale, reviewer, body, created_at FROM survey_share_comments "
        "WHERE share_id = ? ORDER BY id",
        (share_id,),
    )
    return [dict(r) for r in rows]
