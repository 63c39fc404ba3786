"""Dashboard staff accounts: adding them, checking passwords, locking after failures, sessions.

Passwords are hashed with argon2id (``argon2-cffi``'s defaults). Ten wrong passwords in a
row lock an account for fifteen minutes; a sign-in attempt for an email nobody has still
costs one argon2 verification, so the answer's timing does not tell who has an account.
Sessions are random tokens; the database keeps only their SHA-256, so a copy of it signs
nobody in. Every change and every sign-in goes to ``audit_log`` with actor ``staff:<id>``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bot.models import iso, parse_iso, utcnow
from bot.storage import audit
from bot.storage import staff as store
from bot.storage.db import Database

ROLES = ("admin", "viewer")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
MAX_FAILURES = 10
LOCKOUT = timedelta(minutes=15)
# A session ends after this long without a request.
SESSION_IDLE = timedelta(hours=12)
# A session's expiry is pushed back at most this often (one write per request is too many).
SESSION_TOUCH = timedelta(minutes=5)
MAX_EMAIL = 254
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = re.compile(rf"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})+")

_hasher = PasswordHasher()
# Verified against when the email is unknown, so that answer costs what a real one does.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class StaffError(ValueError):
    """A one-line reason an account could not be added or changed."""


@dataclass(frozen=True, slots=True)
class StaffMember:
    """The signed-in staff member a dashboard page serves."""

    id: int
    email: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        """How the audit log names them."""
        return f"staff:{self.id}"


def check_email(email: str) -> str:
    """The email, trimmed; StaffError when it is not one."""
    email = email.strip()
    if len(email) > MAX_EMAIL or not _EMAIL.fullmatch(email):
        raise StaffError(f"not an email address: {email[:80]!r}")
    return email


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise StaffError(f"the password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise StaffError(f"the password must be at most {MAX_PASSWORD} characters")
    if password.strip() == "":
        raise StaffError("the password must not be only spaces")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise StaffError(f"role must be admin or viewer, not {role!r}")
    return role


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def add(
    db: Database, email: str, role: str, password: str, *, reset: bool = False, actor: str = "cli"
) -> tuple[int, bool]:
    """Add an account (or, with ``reset``, give an existing one a new password and role).

    Returns ``(id, created)``. StaffError for a bad email, role or password, or an email
    that already has an account (without ``reset``).
    """
    email = check_email(email)
    check_role(role)
    check_password(password)
    hashed = await asyncio.to_thread(hash_password, password)
    now = iso(utcnow())
    async with db.transaction() as tx:
        found = await store.by_email(tx, email)
        if found is not None:
            if not reset:
                raise StaffError(
                    f"{email} already has an account; use --reset-password to set a new password"
                )
            await store.set_password(tx, found.id, hashed, role)
            await audit.record(
                tx,
                "staff.password_reset",
                detail={"staff_id": found.id, "role": role},
                actor=actor,
            )
            return found.id, False
        if reset:
            raise StaffError(f"{email} has no account to reset")
        staff_id = await store.insert(tx, email, role, hashed, now)
        await audit.record(
            tx, "staff.added", detail={"staff_id": staff_id, "role": role}, actor=actor
        )
        return staff_id, True


async def remove(db: Database, email: str, *, actor: str = "cli") -> int:
    """Delete an account and its sessions; StaffError when there is none."""
    async with db.transaction() as tx:
        found = await store.by_email(tx, email.strip())
        if found is None:
            raise StaffError(f"no account for {email.strip()[:80]!r}")
        await store.delete(tx, found.id)
        await audit.record(tx, "staff.removed", detail={"staff_id": found.id}, actor=actor)
        return found.id


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class SignIn:
    """A successful sign-in: who, the session token for the cookie and its CSRF token."""

    staff: StaffMember
    token: str
    csrf_token: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def sign_in(db: Database, email: str, password: str) -> SignIn | None:
    """A new session for the right email and password; None otherwise (and for a locked
    or disabled account), with no hint which. Failures count towards the lockout."""
    email = email.strip()[:MAX_EMAIL]
    password = password[:MAX_PASSWORD]
    found = await store.by_email(db.conn, email) if email else None
    if found is None:
        await asyncio.to_thread(_verify, _DUMMY_HASH, password)
        async with db.transaction() as tx:
            await audit.record(
                tx, "staff.login_failed", detail={"reason": "unknown account"}, actor="anonymous"
            )
        return None
    ok = await asyncio.to_thread(_verify, found.password_hash, password)
    now = utcnow()
    actor = f"staff:{found.id}"
    async with db.transaction() as tx:
        # Read again inside the transaction: another process may have counted a failure.
        current = await store.by_id(tx, found.id)
        if current is None or current.disabled:
            return None
        if current.locked_until and parse_iso(current.locked_until) > now:
            await audit.record(tx, "staff.login_refused", detail={"reason": "locked"}, actor=actor)
            return None
        if not ok:
            locked = await store.record_failure(tx, found.id, MAX_FAILURES, iso(now + LOCKOUT))
            await audit.record(tx, "staff.login_failed", detail={"reason": "password"}, actor=actor)
            if locked:
                await audit.record(
                    tx, "staff.locked", detail={"minutes": LOCKOUT.seconds // 60}, actor=actor
                )
            return None
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        await store.record_success(tx, found.id, iso(now))
        await store.add_session(
            tx, token_hash(token), found.id, csrf, iso(now), iso(now + SESSION_IDLE)
        )
        await audit.record(tx, "staff.login", actor=actor)
    return SignIn(StaffMember(found.id, found.email, current.role), token, csrf)


async def session(db: Database, token: str) -> tuple[StaffMember, str] | None:
    """The staff member and CSRF token of a live session, its idle expiry pushed back."""
    hashed = token_hash(token)
    now = utcnow()
    row = await store.session(db.conn, hashed, iso(now))
    if row is None:
        return None
    if parse_iso(row["expires_at"]) - now < SESSION_IDLE - SESSION_TOUCH:
        async with db.transaction() as tx:
            await store.extend_session(tx, hashed, iso(now + SESSION_IDLE))
    return StaffMember(row["staff_id"], row["email"], row["role"]), row["csrf_token"]


async def sign_out(db: Database, token: str, staff: StaffMember) -> None:
    async with db.transaction() as tx:
        await store.end_session(tx, token_hash(token))
        await audit.record(tx, "staff.logout", actor=staff.actor)


async def record(
    db: Database,
    staff: StaffMember,
    action: str,
    panellist_id: int | None = None,
    detail: dict | None = None,
) -> None:
    """One staff action in the audit log (pages call this for what they change or export)."""
    async with db.transaction() as tx:
        await audit.record(tx, action, panellist_id, detail, actor=staff.actor)
