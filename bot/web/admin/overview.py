"""``GET /admin``: the panel at a glance.

Panel size and who is active, signing up, waitlisted, opted out or unreachable; sign-ups
per week over the last twelve weeks (a chart with its figures as a table); the waves open
now; the messages providers accepted this calendar month (in the panel's time zone) and
what they cost at the configured prices.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from bot.models import iso, parse_iso, utcnow
from bot.sms import encode_info, sanitise
from bot.storage import overview as store
from bot.web import charts
from bot.web.admin.templating import render

if TYPE_CHECKING:
    from bot.app import Bot

NAV = [("Overview", "/admin")]
WEEKS = 12
CHANNEL_NAMES = {
    "sms": "SMS",
    "whatsapp": "WhatsApp",
    "telegram": "Telegram",
    "sim": "Simulator",
}


def _month_start(now: datetime, zone: ZoneInfo) -> datetime:
    local = now.astimezone(zone)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _week_start(now: datetime, zone: ZoneInfo) -> datetime:
    local = now.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    return local - timedelta(days=local.weekday())


async def signups_chart(bot: Bot, now: datetime, zone: ZoneInfo) -> tuple[Any, list[Any]]:
    """The weekly sign-ups chart and its rows ``(week start, joined, panel in total)``."""
    first = _week_start(now, zone) - timedelta(weeks=WEEKS - 1)
    conn = bot.db.conn
    days = await store.signups_by_day(conn, iso(first))
    total = await store.consented_before(conn, iso(first))
    weeks = [first + timedelta(weeks=i) for i in range(WEEKS)]
    joined = [0] * WEEKS
    for day, count in days:
        when = parse_iso(day + "T12:00:00+00:00").astimezone(zone)
        index = min(max((when - first).days // 7, 0), WEEKS - 1)
        joined[index] += count
    rows = []
    for week, count in zip(weeks, joined, strict=True):
        total += count
        rows.append((week, count, total))
    labels = [week.strftime("%d %b") for week in weeks]
    chart = charts.line_chart(
        f"Sign-ups per week, last {WEEKS} weeks",
        labels,
        [("Joined that week", joined)],
        step=False,
        desc=(
            f"{sum(joined)} people joined in the last {WEEKS} weeks; "
            f"{max(joined)} in the busiest week."
        ),
    )
    return chart, rows


def message_costs(bot: Bot, texts: list[tuple[str, str | None, int]]) -> list[dict[str, Any]]:
    """Messages, SMS segments and cost per channel, at the configured prices (GBP)."""
    twilio = bot.settings.channels.twilio
    sms_price = twilio.sms_price_per_segment
    whatsapp_price = float(getattr(twilio, "whatsapp_price_per_message", 0.0))
    by_channel: dict[str, dict[str, Any]] = {}
    for channel, text, count in texts:
        entry = by_channel.setdefault(
            channel,
            {
                "channel": CHANNEL_NAMES.get(channel, channel),
                "messages": 0,
                "segments": 0,
                "cost": 0.0,
            },
        )
        entry["messages"] += count
        if channel == "sms":
            body = sanitise(text or "") if twilio.sanitize else (text or "")
            segments = max(encode_info(body).segments, 1) * count
            entry["segments"] += segments
            entry["cost"] += segments * sms_price
        elif channel == "whatsapp":
            entry["cost"] += count * whatsapp_price
    return sorted(by_channel.values(), key=lambda e: -e["messages"])


async def overview(request: Request) -> Response:
    bot: Bot = request.app.state.bot
    zone = ZoneInfo(bot.settings.bot.timezone)
    now = utcnow()
    counts = await store.status_counts(bot.db.conn)
    chart, weeks = await signups_chart(bot, now, zone)
    month = _month_start(now, zone)
    costs = message_costs(bot, await store.sent_texts(bot.db.conn, iso(month)))
    waves = await store.open_waves(bot.db.conn)
    return render(
        request,
        "admin/overview.html",
        panel_name=bot.settings.bot.name,
        counts=counts,
        chart=chart,
        weeks=weeks,
        waves=waves,
        costs=costs,
        month=month.strftime("%B %Y"),
        total_messages=sum(c["messages"] for c in costs),
        total_cost=sum(c["cost"] for c in costs),
        zone=zone,
    )


def routes() -> list[BaseRoute]:
    return [Route("/admin", overview, methods=["GET"])]
