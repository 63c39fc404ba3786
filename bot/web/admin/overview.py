"""``GET /admin``: the panel at a glance."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bot.web.admin.templating import render

NAV = [("Overview", "/admin")]


async def overview(request: Request) -> Response:
    return render(request, "admin/overview.html")


def routes() -> list[BaseRoute]:
    return [Route("/admin", overview, methods=["GET"])]
