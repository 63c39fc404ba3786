"""The staff dashboard under ``/admin``: server-rendered pages behind a login.

Each page module in :data:`PAGES` defines ``routes() -> list[BaseRoute]`` (full paths,
``/admin/...``) and may define ``NAV``, a list of ``(label, path)`` menu entries (``(label,
path, "admin")`` for a page only admins may open). A module
not written yet is skipped. :func:`routes` gathers them, puts every route behind the staff
login (:func:`bot.web.admin.auth.protect`; the login page itself is public) and adds the
static files at ``/admin/static/``.

Plugins add pages through ``panelbot_register_routes``; ``bot.web.app`` puts those behind
the same login unless a route is marked public (``bot.plugin_api.public_route``), and adds
a menu entry for a route marked with ``bot.plugin_api.nav_link``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from bot.web.admin.auth import protect

STATIC = Path(__file__).parent / "static"

# Page modules in menu order; each has routes() and may have NAV.
PAGES = (
    "bot.web.admin.login",
    "bot.web.admin.overview",
    "bot.web.admin.panellists",
    "bot.web.admin.surveys",
    "bot.web.admin.audit",
)


def _modules() -> list[Any]:
    found = []
    for name in PAGES:
        try:
            found.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return found


def routes() -> list[BaseRoute]:
    """Every core dashboard route, gated, and ``/admin/static/``."""
    gathered: list[BaseRoute] = []
    for module in _modules():
        gathered.extend(protect(route) for route in module.routes())
    gathered.append(Mount("/admin/static", StaticFiles(directory=STATIC), name="admin-static"))
    return gathered


def nav() -> list[dict[str, Any]]:
    """The core pages' menu entries, in order. A ``NAV`` entry may have a third item,
    ``"admin"``: the entry is shown to admins only (the page answers viewers 403)."""
    return [
        {"label": entry[0], "path": entry[1], "admin_only": entry[2:] == ("admin",)}
        for module in _modules()
        for entry in getattr(module, "NAV", ())
    ]
