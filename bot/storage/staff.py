"""Dashboard accounts and their signed-in sessions (tables ``staff`` and ``staff_sessions``).

Only SQL lives here; the rules (hashing, lockout, expiry) are in ``bot.staff``. Times are
UTC ISO-8601 strings, which sort as text.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from bot.storage.conn import Conn, ReadConn
from bot.storage.db import fetch_all, fetch_one


@dataclass(frozen=True, slots=True)
class StaffRow:
    id: int
    email: str
    role: str
    password_hash: str
    failed_logins: int
    locked_until: str | None
    disabled: bool
    created_at: str
    last_login_at: str | None


_COLUMNS = (
    "id, email, role, password_hash, failed_logins, locked_until, disabled, created_at, "
    "last_login_at"
)


def _row(row: sqlite3.Row) -> StaffRow:
    return StaffRow(
        id=row["id"],
        email=row["email"],
        role=row["role"],
        password_hash=row["password_hash"],
        failed_logins=row["failed_logins"],
        locked_until=row["locked_until"],
        disabled=bool(row["disabled"]),
        created_at=row["created_at"],
        last_login_at=row["last_login_at"],
    )


async def by_email(conn: ReadConn, email: str) -> StaffRow | None:
    row = await fetch_one(conn, f"SELECT {_COLUMNS} FROM staff WHERE email = ?", (email,))
    return _row(row) if row else None


async def by_id(conn: ReadConn, staff_id: int) -> StaffRow | None:
    row = await fetch_one(conn, f"SELECT {_COLUMNS} FROM staff WHERE id = ?", (staff_id,))
    return _row(row) if row else None


async def all_staff(conn: ReadConn) -> list[StaffRow]:
    return [_row(r) for r in await fetch_all(conn, f"SELECT {_COLUMNS} FROM staff ORDER BY id")]


async def count(conn: ReadConn) -> int:
    row = await fetch_one(conn, "SELECT COUNT(*) AS n FROM staff WHERE disabled = 0")
    return int(row["n"]) if row else 0


async def insert(conn: Conn, email: str, role: str, password_hash: str, now: str) -> int:
    result = await conn.execute(
        "INSERT INTO staff (email, role, password_hash, created_at) VALUES (?, ?, ?, ?)",
        (email, role, password_hash, now),
    )
    return int(result.lastrowid or 0)


async def set_password(conn: Conn, staff_id: int, password_hash: str, role: str) -> None:
    """A new password (and role); the lockout is lifted and every session ends."""
    await conn.execute(
        "UPDATE staff SET password_hash = ?, role = ?, failed_logins = 0, locked_until = NULL,"
        " disabled = 0 WHERE id = ?",
        (password_hash, role, staff_id),
    )
    await conn.execute("DELETE FROM staff_sessions WHERE staff_id = ?", (staff_id,))


async def delete(conn: Conn, staff_id: int) -> None:
    await conn.execute("DELETE FROM staff_sessions WHERE staff_id = ?", (staff_id,))
    await conn.execute("DELETE FROM staff WHERE id = ?", (staff_id,))


async def record_failure(conn: Conn, staff_id: int, limit: int, locked_until: str) -> bool:
    """One more wrong password; at ``limit`` in a row the account is locked. True if locked now."""
    await conn.execute(
        "UPDATE staff SET failed_logins = failed_logins + 1 WHERE id = ?", (staff_id,)
    )
    row = await fetch_one(conn, "SELECT failed_logins FROM staff WHERE id = ?", (staff_id,))
    if row is not None and row["failed_logins"] >= limit:
        await conn.execute(
            "UPDATE staff SET failed_logins = 0, locked_until = ? WHERE id = ?",
            (locked_until, staff_id),
        )
        return True
    return False


async def record_success(conn: Conn, staff_id: int, now: str) -> None:
    await conn.execute(
        "UPDATE staff SET failed_logins = 0, locked_until = NULL, last_login_at = ? WHERE id = ?",
        (now, staff_id),
    )


async def add_session(
    conn: Conn, token_hash: str, staff_id: int, csrf_token: str, now: str, expires_at: str
) -> None:
    await conn.execute(
        "INSERT INTO staff_sessions (token_hash, staff_id, csrf_token, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (token_hash, staff_id, csrf_token, now, expires_at),
    )
    # Sessions that ran out are forgotten whenever someone signs in.
    await conn.execute("DELETE FROM staff_sessions WHERE expires_at <= ?", (now,))


async def session(conn: ReadConn, token_hash: str, now: str) -> sqlite3.Row | None:
    """The live session with this token hash, joined to its (enabled) account."""
    return await fetch_one(
        conn,
        "SELECT s.staff_id, s.csrf_token, s.expires_at, st.email, st.role"
        " FROM staff_sessions s JOIN staff st ON st.id = s.staff_id"
        " WHERE s.token_hash = ? AND s.expires_at > ? AND st.disabled = 0",
        (token_hash, now),
    )


async def extend_session(conn: Conn, token_hash: str, expires_at: str) -> None:
    await conn.execute(
        "UPDATE staff_sessions SET expires_at = ? WHERE token_hash = ?", (expires_at, token_hash)
    )


async def end_session(conn: Conn, token_hash: str) -> None:
    await conn.execute("DELETE FROM staff_sessions WHERE token_hash = ?", (token_hash,))


async def audit_page(
    conn: ReadConn,
    *,
    limit: int,
    offset: int,
    action: str | None = None,
    actor: str | None = None,
) -> tuple[list[sqlite3.Row], int]:
    """Audit log rows, newest first, optionally of one action or actor; and how many match."""
    where, params = [], []
    if action:
        where.append("action = ?")
        params.append(action)
    if actor:
        where.append("actor = ?")
        params.append(actor)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = await fetch_all(
        conn,
        f"SELECT id, at, actor, action, panellist_id, detail FROM audit_log{clause}"
        " ORDER BY id DESC LIMIT ? OFFSET ?",
        (*params, limit, offset),
    )
    total = await fetch_one(conn, f"SELECT COUNT(*) AS n FROM audit_log{clause}", params)
    return rows, int(total["n"]) if total else 0


async def audit_actions(conn: ReadConn) -> list[str]:
    rows = await fetch_all(conn, "SELECT DISTINCT action FROM audit_log ORDER BY action")
    return [r["action"] for r in rows]
