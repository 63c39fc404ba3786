"""``GET/POST /admin/login`` and ``POST /admin/logout``.

The login form has no session yet, so its CSRF token is a double-submit cookie: a random
value, signed, in an HttpOnly cookie, and the same value (unsigned) in the form's hidden
``csrf_token``; a POST whose two do not match is refused with 403.
"""

from __future__ import annotations

import secrets
import time
from collections import deque

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bot import staff as staff_rules
from bot.storage import staff as staff_store
from bot.web.admin import auth
from bot.web.admin.templating import render

GENERIC_FAILURE = "That email and password do not match an account that can sign in now."
# The login form's CSRF cookie lasts as long as someone may take to fill the form in.
LOGIN_CSRF_AGE = 2 * 3600
MAX_FIELD = 2000
# Sign-in attempts a minute from one network address (per web process), and how many
# addresses are remembered before the quiet ones are forgotten.
MAX_ATTEMPTS = 30
MAX_ADDRESSES = 10_000


def _login_page(
    request: Request,
    *,
    error: str = "",
    email: str = "",
    next_path: str = "/admin",
    status_code: int = 200,
    no_accounts: bool = False,
) -> Response:
    keys = auth.keys_of(request)
    token = keys.unsign(keys.login, request.cookies.get(auth.LOGIN_CSRF_COOKIE))
    fresh = token is None
    if fresh:
        token = secrets.token_urlsafe(32)
    request.state.csrf_token = token
    response = render(
        request,
        "admin/login.html",
        status_code=status_code,
        error=error,
        email=email,
        next=next_path,
        no_accounts=no_accounts,
    )
    if fresh:
        auth.set_cookie(
            response, keys, auth.LOGIN_CSRF_COOKIE, keys.login.sign(token).decode(), LOGIN_CSRF_AGE
        )
    return response


async def login_form(request: Request) -> Response:
    next_path = auth.local_next(request.query_params.get("next"))
    if await auth.session_of(request) is not None:
        return RedirectResponse(next_path, 303)
    bot = request.app.state.bot
    no_accounts = await staff_store.count(bot.db.conn) == 0
    return _login_page(request, next_path=next_path, no_accounts=no_accounts)


class Attempts:
    """Sign-in attempts per network address in the last minute, in this web process.

    Each attempt costs an argon2 check (tens of milliseconds of CPU, by design): past
    ``MAX_ATTEMPTS`` a minute from one address the form answers 429 before checking.
    """

    def __init__(self, limit: int = MAX_ATTEMPTS, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self.seen: dict[str, deque[float]] = {}

    def allow(self, host: str) -> bool:
        now = time.monotonic()
        if len(self.seen) > MAX_ADDRESSES:
            self.seen = {h: q for h, q in self.seen.items() if q and now - q[-1] < self.window}
        times = self.seen.setdefault(host, deque())
        while times and now - times[0] >= self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True


def _attempts(request: Request) -> Attempts:
    attempts = getattr(request.app.state, "admin_login_attempts", None)
    if attempts is None:
        attempts = request.app.state.admin_login_attempts = Attempts()
    return attempts


async def login(request: Request) -> Response:
    host = request.client.host if request.client else "unknown"
    if not _attempts(request).allow(host):
        raise HTTPException(
            429, "too many sign-in attempts; wait a minute", headers={"Retry-After": "60"}
        )
    form = await auth.read_form(request)
    keys = auth.keys_of(request)
    expected = keys.unsign(keys.login, request.cookies.get(auth.LOGIN_CSRF_COOKIE))
    if not auth.csrf_matches(expected, form.get(auth.CSRF_FIELD)):
        raise HTTPException(403, "missing or wrong csrf_token")
    email = form.get("email")
    password = form.get("password")
    next_path = auth.local_next(form.get("next") if isinstance(form.get("next"), str) else None)
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        return _login_page(
            request,
            error="Enter your email and password.",
            next_path=next_path,
            email=email if isinstance(email, str) else "",
            status_code=400,
        )
    email = email[:MAX_FIELD]
    signed = await staff_rules.sign_in(request.app.state.bot.db, email, password[:MAX_FIELD])
    if signed is None:
        return _login_page(
            request, error=GENERIC_FAILURE, email=email[:254], next_path=next_path, status_code=401
        )
    response = RedirectResponse(next_path, 303)
    auth.set_cookie(
        response, keys, auth.SESSION_COOKIE, keys.session.sign(signed.token).decode(), None
    )
    response.delete_cookie(auth.LOGIN_CSRF_COOKIE, path="/")
    return response


async def logout(request: Request) -> Response:
    staff = auth.current_staff(request)
    await staff_rules.sign_out(request.app.state.bot.db, request.state.session_token, staff)
    response = RedirectResponse(auth.LOGIN_PATH, 303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


def routes() -> list[BaseRoute]:
    login_get = Route(auth.LOGIN_PATH, login_form, methods=["GET"])
    login_post = Route(auth.LOGIN_PATH, login, methods=["POST"])
    login_get.panelbot_public = True  # type: ignore[attr-defined]
    login_post.panelbot_public = True  # type: ignore[attr-defined]
    # Logout is gated: a session and its CSRF token are needed, as for any POST. Viewers
    # may sign out too, so the gate's admin-only rule for POST is lifted here.
    logout_post = Route("/admin/logout", logout, methods=["POST"])
    logout_post.panelbot_viewers_may_post = True  # type: ignore[attr-defined]
    return [login_get, login_post, logout_post]
