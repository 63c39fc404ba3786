"""Who is signed in, and the gate every dashboard and plugin route passes through.

The session cookie carries a random token signed with itsdangerous; the database keeps only
the token's SHA-256 (``staff_sessions``). The signing key is ``[web] secret_key`` when the
config sets one (``{ env = "..." }``), else a random key made once and kept owner-only
(0600) beside the database, in ``<database>.web-key``, so that web processes share it.

:func:`gate` wraps a route so that:

- without a live session a GET is redirected to ``/admin/login?next=<path>`` and anything
  else is refused with 403;
- a request that may change something (POST, PUT, PATCH, DELETE) needs the session's CSRF
  token, in the form field ``csrf_token`` or the header ``X-CSRF-Token`` (403 without it),
  and an admin (403 for a viewer);
- the handler finds the staff member with :func:`current_staff` (``request.state.staff``).

Routes marked public (``route.panelbot_public = True``) are not wrapped.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

from itsdangerous import BadSignature, Signer
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bot import staff as staff_rules
from bot.staff import StaffMember

if TYPE_CHECKING:
    from bot.app import Bot

logger = logging.getLogger(__name__)

SESSION_COOKIE = "panelbot_staff"
LOGIN_CSRF_COOKIE = "panelbot_login_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOGIN_PATH = "/admin/login"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
KEY_SUFFIX = ".web-key"
MAX_FIELDS = 200

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


# --- the signing key -------------------------------------------------------------------------


def key_path(database: Path) -> Path:
    return database.with_name(database.name + KEY_SUFFIX)


def signing_key(bot: Bot) -> bytes:
    """``[web] secret_key``, else the key file beside the database (made once, 0600)."""
    configured = bot.settings.web.secret_key
    if configured:
        return configured.encode()
    path = key_path(Path(bot.settings.bot.database))
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    # Written whole under another name, then linked into place: a web process starting at
    # the same moment either links first or reads the winner's complete key.
    key = os.urandom(32).hex().encode()
    temporary = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(key)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return _read_key(path)
    finally:
        os.unlink(temporary)
    return key


def _read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if len(key) < 32:
        raise RuntimeError(f"{path}: the dashboard's key file is too short; delete it")
    return key


class Keys:
    """The signers for the session cookie and the login form's CSRF cookie."""

    def __init__(self, key: bytes, secure: bool) -> None:
        self.session = Signer(key, salt="panelbot.staff-session")
        self.login = Signer(key, salt="panelbot.login-csrf")
        self.secure = secure

    @classmethod
    def for_bot(cls, bot: Bot) -> Keys:
        base = bot.settings.bot.public_base_url or ""
        return cls(signing_key(bot), secure=base.lower().startswith("https://"))

    def unsign(self, signer: Signer, value: str | None) -> str | None:
        if not value or len(value) > 200:
            return None
        try:
            return signer.unsign(value).decode()
        except (BadSignature, UnicodeDecodeError):
            return None


def keys_of(request: Request) -> Keys:
    keys: Keys | None = getattr(request.app.state, "admin_keys", None)
    if keys is None:
        keys = Keys.for_bot(request.app.state.bot)
        request.app.state.admin_keys = keys
    return keys


def set_cookie(response: Response, keys: Keys, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(
        name, value, max_age=max_age, path="/", httponly=True, samesite="lax", secure=keys.secure
    )


# --- who is signed in --------------------------------------------------------------------------


def current_staff(request: Request) -> StaffMember:
    """The signed-in staff member (every gated route has one; 403 if somehow not)."""
    staff = getattr(request.state, "staff", None)
    if staff is None:
        raise HTTPException(403, "sign in first")
    return staff


def require_admin(request: Request) -> StaffMember:
    """The signed-in staff member if an admin; 403 for a viewer."""
    staff = current_staff(request)
    if not staff.is_admin:
        raise HTTPException(403, "viewers cannot change anything")
    return staff


async def session_of(request: Request) -> tuple[StaffMember, str, str] | None:
    """(staff, CSRF token, session token) of the request's session cookie, if live."""
    keys = keys_of(request)
    token = keys.unsign(keys.session, request.cookies.get(SESSION_COOKIE))
    if token is None:
        return None
    found = await staff_rules.session(request.app.state.bot.db, token)
    if found is None:
        return None
    return found[0], found[1], token


# --- CSRF ----------------------------------------------------------------------------------


def csrf_matches(expected: str | None, given: Any) -> bool:
    if not expected or not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


async def read_form(request: Request) -> FormData:
    """The request's url-encoded form (blank values kept; at most MAX_FIELDS fields).

    Dashboard forms are url-encoded (no file uploads); any other body reads as no fields.
    Starlette's own ``request.form()`` needs python-multipart, which panelbot does not use.
    """
    cached = getattr(request.state, "panelbot_form", None)
    if cached is not None:
        return cached
    form = FormData()
    if request.headers.get("content-type", "").startswith(_FORM_TYPES[0]):
        body = await request.body()
        try:
            pairs = parse_qsl(
                body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS
            )
        except (UnicodeDecodeError, ValueError):
            raise HTTPException(400, "the form is not valid url-encoded UTF-8") from None
        form = FormData(pairs)
    request.state.panelbot_form = form
    return form


async def check_csrf(request: Request, form: FormData | None = None) -> None:
    """403 unless the request carries the session's CSRF token (form field or header).

    The gate already checks it for every unsafe method; calling this again costs nothing.
    """
    expected = getattr(request.state, "csrf_token", None)
    given: Any = request.headers.get(CSRF_HEADER)
    if not given:
        if form is None:
            form = await read_form(request)
        given = form.get(CSRF_FIELD)
    if not csrf_matches(expected, given):
        raise HTTPException(403, "missing or wrong csrf_token")


# --- the gate ------------------------------------------------------------------------------


def local_next(value: str | None, default: str = "/admin") -> str:
    """``value`` if it is a path on this site (no scheme, no host, no ``//``), else default."""
    if not value or len(value) > 2000:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith(("//", "/\\")):
        return default
    if any(ch in value for ch in "\\\r\n\t") or any(ord(ch) < 32 for ch in value):
        return default
    return value


def login_redirect(request: Request) -> Response:
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return RedirectResponse(f"{LOGIN_PATH}?next={quote(local_next(target), safe='/')}", 303)


def _replay(body: bytes) -> Callable[[], Awaitable[dict[str, Any]]]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def gate(app: ASGIApp, *, admin_only: bool = False, viewers_may_post: bool = False) -> ASGIApp:
    """``app`` behind the staff login (see the module's docstring).

    ``admin_only``: viewers may not even read it (403). ``viewers_may_post``: a viewer's
    POST passes too (signing out); the CSRF token is still needed.
    """

    async def gated(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        request = Request(scope, receive)
        found = await session_of(request)
        if found is None:
            if scope["method"] in ("GET", "HEAD"):
                await login_redirect(request)(scope, receive, send)
            else:
                raise HTTPException(403, "sign in first")
            return
        staff, csrf, token = found
        state = scope.setdefault("state", {})
        state["staff"] = staff
        state["csrf_token"] = csrf
        state["session_token"] = token
        if scope["method"] in UNSAFE_METHODS:
            # Read the body once (the Guard middleware has capped it) and hand it on.
            body = await request.body()
            checked = Request(scope, _replay(body))
            await check_csrf(checked)
            if not staff.is_admin and not viewers_may_post:
                raise HTTPException(403, "viewers cannot change anything")
            receive = _replay(body)
        elif admin_only and not staff.is_admin:
            raise HTTPException(403, "only admins can see this page")
        await app(scope, receive, send)

    return gated


def protect(route: Any) -> Any:
    """Put ``route`` behind the gate unless it is marked public; returns the route.

    Attributes a route may carry: ``panelbot_public`` (no gate), ``panelbot_admin_only``
    (viewers get 403 even for GET), ``panelbot_viewers_may_post`` (see :func:`gate`).
    """
    if getattr(route, "panelbot_public", False) or getattr(route, "panelbot_gated", False):
        return route
    if not hasattr(route, "app"):
        raise TypeError(f"cannot put {route!r} behind the staff login (it has no .app)")
    route.app = gate(
        route.app,
        admin_only=getattr(route, "panelbot_admin_only", False),
        viewers_may_post=getattr(route, "panelbot_viewers_may_post", False),
    )
    route.panelbot_gated = True
    return route


def admin_only(route: Any) -> Any:
    """Mark ``route`` as for admins only (viewers get 403 even for GET); returns it."""
    route.panelbot_admin_only = True
    return route
