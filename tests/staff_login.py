"""Helpers for tests of dashboard pages: staff accounts and signing in over real HTTP."""

from __future__ import annotations

import re

import httpx

from bot import staff as staff_rules
from bot.storage import Database

PASSWORDS = {"admin": "correct horse battery", "viewer": "viewer password 123"}
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The csrf_token hidden field of a page."""
    found = _CSRF.search(html)
    assert found, "the page has no csrf_token field"
    return found.group(1)


async def add_staff(db: Database, role: str = "admin", email: str | None = None) -> str:
    """An account with the role's test password; returns its email."""
    email = email or f"{role}@example.org"
    await staff_rules.add(db, email, role, PASSWORDS[role])
    return email


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    """GET the login form, then POST it with its CSRF token."""
    page = await client.get("/admin/login")
    assert page.status_code == 200
    return await client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": csrf_of(page.text)},
    )


async def signed_in(client: httpx.AsyncClient, db: Database, role: str = "admin") -> str:
    """Add an account with ``role``, sign ``client`` in; the session's CSRF token."""
    email = await add_staff(db, role)
    answer = await sign_in(client, email, PASSWORDS[role])
    assert answer.status_code == 303, answer.text
    return csrf_of((await client.get("/admin")).text)
