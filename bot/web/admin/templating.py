"""Jinja2 for dashboard pages: the layout, ``render()``, and the template globals.

Every template is found as ``admin/<name>`` (the core's folder is
``bot/web/admin/templates``) and pages extend ``admin/base.html``. A plugin renders its own
templates (from its own folder, searched first) inside the same layout with
:func:`render_page`; its templates extend ``admin/base.html`` too.

Autoescape is on for every template. Globals: ``csrf_field()`` (the hidden input every form
carries), ``staff`` (the signed-in member, or None), ``nav`` (the menu), ``request``.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader, pass_context
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import HTMLResponse

TEMPLATES = Path(__file__).parent / "templates"
# Pages must not be cached (they hold personal data) and must not be framed; the app's
# Guard middleware adds the CSP and the rest.
PAGE_HEADERS = {"Cache-Control": "no-store"}


@pass_context
def csrf_field(context: Any) -> Markup:
    """``<input type="hidden" name="csrf_token" value="...">`` for the page's session."""
    token = context.get("csrf_token") or ""
    return Markup('<input type="hidden" name="csrf_token" value="%s">') % escape(token)


def _environment(loader: Any) -> Environment:
    env = Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.globals["csrf_field"] = csrf_field
    return env


_CORE_LOADER = PrefixLoader({"admin": FileSystemLoader(TEMPLATES)})


@lru_cache(maxsize=1)
def core_environment() -> Environment:
    return _environment(_CORE_LOADER)


@lru_cache(maxsize=64)
def plugin_environment(folder: str) -> Environment:
    """A plugin's templates (searched first) with the core's ``admin/...`` beside them."""
    return _environment(ChoiceLoader([FileSystemLoader(folder), _CORE_LOADER]))


def page_context(request: Request) -> dict[str, Any]:
    """What every page's template is given besides its own context."""
    state = request.state
    return {
        "request": request,
        "staff": getattr(state, "staff", None),
        "csrf_token": getattr(state, "csrf_token", None),
        "nav": getattr(request.app.state, "admin_nav", []),
        "current_path": request.url.path,
    }


def _respond(
    env: Environment, request: Request, template: str, status_code: int, context: dict[str, Any]
) -> HTMLResponse:
    html = env.get_template(template).render({**page_context(request), **context})
    return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


def render(
    request: Request, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A core dashboard template (``"admin/overview.html"``) as an HTML response."""
    return _respond(core_environment(), request, template, status_code, context)


def render_page(
    request: Request,
    template: str,
    *,
    templates: str | Path,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A plugin's template from its folder ``templates``, inside the dashboard layout."""
    return _respond(plugin_environment(str(templates)), request, template, status_code, context)


_HEADINGS = {
    400: "That request was not understood",
    401: "Please sign in",
    403: "You cannot do that",
    404: "Page not found",
    405: "That cannot be done here",
    413: "That was too large",
    429: "Too many attempts",
    500: "Something went wrong",
}


def admin_error_page(
    request: Request, status_code: int, message: str, headers: Mapping[str, str] | None = None
) -> HTMLResponse:
    """An HTTP error as a dashboard page (the layout, a heading and the one-line reason)."""
    heading = _HEADINGS.get(status_code, "That did not work")
    response = render(
        request, "admin/error.html", status_code=status_code, heading=heading, message=message
    )
    response.headers.update(headers or {})
    return response


def csrf_field_for(request: Request) -> Markup:
    """The hidden ``csrf_token`` input for the request's session (for HTML built in Python;
    templates call ``{{ csrf_field() }}``)."""
    token = getattr(request.state, "csrf_token", None) or ""
    return Markup('<input type="hidden" name="csrf_token" value="%s">') % escape(token)
