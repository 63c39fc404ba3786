"""``GET /admin/messages``: the translation completeness matrix of ``panelbot messages check``.

One row per message English has, one column per locale: present, falling back to its base
language, missing (the panellist would get English) or broken, with the SMS segments of a
typical rendering; then each locale's summary line. Behind the staff login, as every plugin
route is; computed when the page is asked for (a second or so for a dozen locales), in a
thread so the bot's loop carries on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.plugin_api import Route, core_messages_dir, language_name, nav_link, render_page
from plugins.translations.check import BROKEN, FALLS_BACK, MISSING, PRESENT, check_catalogs

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from bot.plugin_api import Bot

TEMPLATES = Path(__file__).parent / "templates"
LABELS = {PRESENT: "present", FALLS_BACK: "falls back", MISSING: "missing", BROKEN: "broken"}


def matrix(report: Any) -> dict[str, Any]:
    """The report as rows of cells: ``{"locales": [...], "rows": [(name, [cell, ...])]}``."""
    locales = [loc.locale for loc in report.locales]
    names: list[str] = []
    cells: dict[tuple[str, str], Any] = {}
    for loc in report.locales:
        for m in loc.messages:
            if m.name not in names:
                names.append(m.name)
            cells[(m.name, loc.locale)] = m
    rows = []
    for name in names:
        row = []
        for locale in locales:
            m = cells.get((name, locale))
            if m is None:
                row.append({"status": MISSING, "label": "not checked", "detail": ""})
                continue
            label = LABELS.get(m.status, m.status)
            if m.status == FALLS_BACK and m.used_locale:
                label = f"falls back to {m.used_locale}"
            detail = ""
            if m.segments is not None:
                detail = f"{m.segments} segment{'s' if m.segments != 1 else ''}"
                if m.encoding == "UCS-2":
                    detail += ", UCS-2"
            if m.error:
                detail = m.error[:120]
            row.append({"status": m.status, "label": label, "detail": detail, "long": m.long})
        rows.append((name, row))
    return {"locales": locales, "rows": rows}


def routes(bot: Bot) -> list[Any]:
    async def messages_page(request: Request) -> Response:
        settings = bot.settings
        report = await asyncio.to_thread(
            check_catalogs,
            [core_messages_dir()],
            None,
            price_per_segment=settings.channels.twilio.sms_price_per_segment,
            panel_name=settings.bot.name,
            contact=settings.bot.contact,
            timezone=settings.bot.timezone,
            sanitise_sms=settings.channels.twilio.sanitize,
            menu_locales=settings.bot.locales if len(settings.bot.locales) > 1 else None,
        )
        table = matrix(report)
        return render_page(
            request,
            "messages.html",
            templates=TEMPLATES,
            ok=report.ok,
            failure=None if report.ok else report.failure_line(),
            locales=[
                {
                    "code": loc.locale,
                    "name": language_name(loc.locale),
                    "summary": loc.summary(),
                    "rtl": loc.direction == "rtl",
                }
                for loc in report.locales
            ],
            matrix=table,
            price=report.price_per_segment,
        )

    return [nav_link(Route("/admin/messages", messages_page, methods=["GET"]), "Messages")]
