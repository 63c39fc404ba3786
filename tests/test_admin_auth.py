"""The staff dashboard's login, sessions, CSRF, roles and lockout, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot import staff as staff_rules
from bot.app import Bot
from bot.plugin_api import Route, hookimpl, public_route
from bot.web.admin import auth
from tests.staff_login import PASSWORDS, csrf_of, sign_in
from tests.webserver import serving

ADMIN = ("admin@example.org", PASSWORDS["admin"])
VIEWER = ("viewer@example.org", PASSWORDS["viewer"])


class _PluginPages:
    """A plugin adding one gated page, one gated POST and one public page."""

    @hookimpl
    def panelbot_register_routes(self, bot):
        from starlette.responses import PlainTextResponse

        async def private(request):
            return PlainTextResponse("private plugin page")

        async def change(request):
            return PlainTextResponse("changed")

        async def open_page(request):
            return PlainTextResponse("public plugin page")

        secret = Route("/plugin/admins", private, methods=["GET"])
        secret.panelbot_admin_only = True
        return [
            secret,
            Route("/plugin/private", private, methods=["GET"]),
            Route("/plugin/change", change, methods=["POST"]),
            public_route(Route("/plugin/public", open_page, methods=["GET"])),
        ]


@pytest.fixture
async def base(bot: Bot) -> AsyncIterator[str]:
    await staff_rules.add(bot.db, *ADMIN[:1], "admin", ADMIN[1])
    await staff_rules.add(bot.db, *VIEWER[:1], "viewer", VIEWER[1])
    bot.plugins.pm.register(_PluginPages(), name="test-pages")
    async with serving(bot, start_bot=False) as url:
        yield url


@pytest.fixture
async def client(base: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base) as c:
        yield c


async def test_no_session_sends_a_page_to_the_login_form(client: httpx.AsyncClient) -> None:
    answer = await client.get("/admin?since=3")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/login?next=/admin%3Fsince%3D3"
    login = await client.get(answer.headers["location"])
    assert login.status_code == 200
    assert '<form method="post" action="/admin/login"' in login.text
    assert 'name="next" value="/admin?since=3"' in login.text


async def test_sign_in_and_out(client: httpx.AsyncClient, bot: Bot) -> None:
    answer = await sign_in(client, *ADMIN)
    assert answer.status_code == 303 and answer.headers["location"] == "/admin"
    cookie = answer.headers["set-cookie"]
    assert "panelbot_staff=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    overview = await client.get("/admin")
    assert overview.status_code == 200 and "<main" in overview.text
    token = csrf_of(overview.text)
    # Logout without the token is refused; with it the session ends.
    assert (await client.post("/admin/logout")).status_code == 403
    assert (await client.post("/admin/logout", data={"csrf_token": "nope"})).status_code == 403
    out = await client.post("/admin/logout", data={"csrf_token": token})
    assert out.status_code == 303
    assert (await client.get("/admin")).status_code == 303
    actions = [r["action"] for r in await bot.db.fetchall("SELECT action FROM audit_log")]
    assert "staff.login" in actions and "staff.logout" in actions


async def test_the_login_form_needs_its_csrf_cookie(client: httpx.AsyncClient) -> None:
    page = await client.get("/admin/login")
    token = csrf_of(page.text)
    client.cookies.clear()
    answer = await client.post(
        "/admin/login", data={"email": ADMIN[0], "password": ADMIN[1], "csrf_token": token}
    )
    assert answer.status_code == 403
    assert "panelbot_staff" not in answer.headers.get("set-cookie", "")


async def test_next_takes_only_local_paths(client: httpx.AsyncClient) -> None:
    for bad in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        page = await client.get("/admin/login", params={"next": bad})
        answer = await client.post(
            "/admin/login",
            data={
                "email": ADMIN[0],
                "password": ADMIN[1],
                "next": bad,
                "csrf_token": csrf_of(page.text),
            },
        )
        assert answer.headers["location"] == "/admin"
        client.cookies.clear()


async def test_viewer_reads_but_cannot_post(client: httpx.AsyncClient) -> None:
    assert (await sign_in(client, *VIEWER)).status_code == 303
    page = await client.get("/admin")
    assert page.status_code == 200
    token = csrf_of(page.text)
    refused = await client.post("/plugin/change", data={"csrf_token": token})
    assert refused.status_code == 403
    assert (await client.get("/plugin/admins")).status_code == 403
    assert (await client.get("/plugin/private")).status_code == 200
    # A viewer may still sign out.
    assert (await client.post("/admin/logout", data={"csrf_token": token})).status_code == 303


async def test_plugin_routes_are_behind_the_login_unless_public(client: httpx.AsyncClient) -> None:
    assert (await client.get("/plugin/private")).status_code == 303
    assert (await client.post("/plugin/change")).status_code == 403
    public = await client.get("/plugin/public")
    assert public.status_code == 200 and public.text == "public plugin page"
    await sign_in(client, *ADMIN)
    assert (await client.get("/plugin/private")).text == "private plugin page"
    assert (await client.get("/plugin/admins")).text == "private plugin page"
    token = csrf_of((await client.get("/admin")).text)
    assert (await client.post("/plugin/change")).status_code == 403
    changed = await client.post("/plugin/change", data={"csrf_token": token})
    assert changed.status_code == 200 and changed.text == "changed"
    by_header = await client.post("/plugin/change", headers={"X-CSRF-Token": token})
    assert by_header.status_code == 200


async def test_ten_wrong_passwords_lock_the_account(client: httpx.AsyncClient, bot: Bot) -> None:
    for _ in range(staff_rules.MAX_FAILURES):
        answer = await sign_in(client, ADMIN[0], "wrong password here")
        assert answer.status_code == 401
        assert staff_rules_generic(answer.text)
    # Now even the right password is refused, with the same message.
    locked = await sign_in(client, *ADMIN)
    assert locked.status_code == 401 and staff_rules_generic(locked.text)
    unknown = await sign_in(client, "nobody@example.org", "whatever password")
    assert unknown.status_code == 401 and staff_rules_generic(unknown.text)
    actions = [r["action"] for r in await bot.db.fetchall("SELECT action FROM audit_log")]
    assert actions.count("staff.locked") == 1 and "staff.login_refused" in actions
    # Fifteen minutes later (moved back in the database) the right password works again.
    await bot.db.execute_write("UPDATE staff SET locked_until = '2000-01-01T00:00:00+00:00'")
    assert (await sign_in(client, *ADMIN)).status_code == 303


def staff_rules_generic(html: str) -> bool:
    return "do not match an account that can sign in now" in html


async def test_static_files_are_served_without_path_traversal(client: httpx.AsyncClient) -> None:
    css = await client.get("/admin/static/admin.css")
    assert css.status_code == 200 and "skip-link" in css.text
    for path in (
        "/admin/static/../auth.py",
        "/admin/static/%2e%2e/auth.py",
        "/admin/static/..%2fauth.py",
        "/admin/static/%2e%2e%2f%2e%2e%2fstaff.py",
        "/admin/static//etc/passwd",
    ):
        answer = await client.get(path)
        assert answer.status_code == 404, path
        assert "import" not in answer.text


def test_the_key_file_is_made_once_and_owner_only(bot: Bot) -> None:
    first = auth.signing_key(bot)
    path = auth.key_path(Path(bot.settings.bot.database))
    assert path.stat().st_mode & 0o777 == 0o600
    assert auth.signing_key(bot) == first


async def test_without_accounts_the_login_page_says_how_to_make_one(bot: Bot) -> None:
    async with serving(bot, start_bot=False) as base, httpx.AsyncClient(base_url=base) as client:
        page = await client.get("/admin/login")
        assert "panelbot staff add EMAIL --role admin" in page.text
        await staff_rules.add(bot.db, *ADMIN[:1], "admin", ADMIN[1])
        assert "panelbot staff add" not in (await client.get("/admin/login")).text


async def test_sessions_are_kept_hashed_and_end_when_idle(
    client: httpx.AsyncClient, bot: Bot
) -> None:
    answer = await sign_in(client, *ADMIN)
    cookie = client.cookies["panelbot_staff"]
    token = cookie.rsplit(".", 1)[0]  # itsdangerous: value.signature
    [row] = await bot.db.fetchall("SELECT token_hash, expires_at FROM staff_sessions")
    assert row["token_hash"] == staff_rules.token_hash(token) and token not in row["token_hash"]
    assert answer.status_code == 303 and (await client.get("/admin")).status_code == 200
    # A forged signature is no session at all.
    client.cookies.set("panelbot_staff", token + ".forged")
    assert (await client.get("/admin")).status_code == 303
    client.cookies.set("panelbot_staff", cookie)
    assert (await client.get("/admin")).status_code == 200
    # Twelve hours without a request (moved back in the database) and it is over.
    await bot.db.execute_write("UPDATE staff_sessions SET expires_at = '2000-01-01T00:00:00+00:00'")
    assert (await client.get("/admin")).status_code == 303


async def test_cookies_are_secure_behind_https(tmp_path: Path) -> None:
    from bot.config import settings_from_dict
    from tests.conftest import FIELDS

    settings = settings_from_dict(
        {
            "bot": {"database": "panel.db", "public_base_url": "https://panel.example.org"},
            "panel": {"fields": FIELDS},
        },
        base_dir=tmp_path,
    )
    bot = await Bot.create(settings)
    try:
        await staff_rules.add(bot.db, *ADMIN[:1], "admin", ADMIN[1])
        async with serving(bot, start_bot=False) as base:
            async with httpx.AsyncClient(base_url=base) as client:
                form = await client.get("/admin/login")
                assert "; secure" in form.headers["set-cookie"].lower()
                token = csrf_of(form.text)
                # httpx keeps Secure cookies for https only: hand the CSRF cookie over.
                login_cookie = form.headers["set-cookie"].split(";", 1)[0]
                answer = await client.post(
                    "/admin/login",
                    data={"email": ADMIN[0], "password": ADMIN[1], "csrf_token": token},
                    headers={"cookie": login_cookie},
                )
                assert answer.status_code == 303
                session = answer.headers["set-cookie"].lower()
                assert "panelbot_staff=" in session and "; secure" in session
                assert "httponly" in session and "samesite=lax" in session
    finally:
        await bot.stop()


async def test_sign_in_attempts_are_limited_per_address(client: httpx.AsyncClient) -> None:
    from bot.web.admin.login import MAX_ATTEMPTS

    # Each attempt counts, even one refused for its CSRF token (no argon2 work spent then).
    for _ in range(MAX_ATTEMPTS):
        answer = await client.post("/admin/login", data={"email": ADMIN[0], "password": "x"})
        assert answer.status_code == 403
    limited = await sign_in(client, *ADMIN)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "60"
    assert "panelbot_staff" not in limited.headers.get("set-cookie", "")
