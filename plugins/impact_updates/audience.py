"""Who an update reaches, and what it will cost: ``panelbot impact preview``.

The audience is resolved in SQL by ``bot.plugin_api.broadcast_audience`` (active panellists
with an address: never opted-out, erased, unreachable or waitlisted people). The preview
renders the text exactly as the update will (same template, same values), measures it as
SMS (the Twilio channel's sanitising applied when it is on) and prices each recipient by
the channel their message goes to: SMS per segment, WhatsApp per message, Telegram and the
simulator free.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from bot.plugin_api import sanitise, sms_info, survey_participants_count
from plugins.impact_updates import decisions, updates

if TYPE_CHECKING:
    from bot.plugin_api import Bot


def sms_text(bot: Bot, text: str) -> str:
    """The text as the SMS provider will be given it."""
    return sanitise(text) if bot.settings.channels.twilio.sanitize else text


async def preview(
    bot: Bot,
    decision_id: int,
    *,
    locale: str | None = None,
    audience: str | None = None,
    feedback: bool | None = None,
) -> dict[str, Any]:
    """Per locale: the text, its encoding and segments, who gets it by channel; and the
    estimated cost across the whole audience. Uses the decision's waiting update's audience
    and options when there is one, else participants (the panel without linked surveys)."""
    decision = await decisions.get(bot.db.conn, decision_id)
    if decision is None:
        raise updates.UpdateError(f"no decision {decision_id} (see panelbot decision list)")
    if locale is not None and locale not in bot.locales:
        raise updates.UpdateError(
            f"--locale: {locale!r} is not a language of this panel ({', '.join(bot.locales)})"
        )
    waiting = await updates.waiting_for(bot.db.conn, decision_id)
    base: dict[str, Any] = (
        dict(waiting[0])
        if waiting
        else {
            "audience": "participants" if decision["surveys"] else "panel",
            "audience_field": None,
            "audience_value": None,
            "feedback": 1,
        }
    )
    if audience is not None:
        chosen = updates.parse_audience(bot, audience)
        base.update(audience=chosen.kind, audience_field=chosen.field, audience_value=chosen.value)
    if base["audience"] == "participants" and not decision["surveys"]:
        raise updates.UpdateError(
            f"decision {decision_id} has no linked survey, so it has no participants"
        )
    if feedback is not None:
        base["feedback"] = 1 if feedback else 0
    base["participants"] = await survey_participants_count(
        bot.db.conn, updates.survey_ids_of(decision)
    )
    members = await updates.resolve_audience(bot, base, decision, bot.db.conn)
    default = bot.settings.bot.default_locale
    renderer = updates.Renderer(bot, base, decision, await updates.option_labels(bot, decision))
    twilio = bot.settings.channels.twilio
    groups: Counter[tuple[str, bool, str]] = Counter(
        (m.locale or default, m.took_part, m.channel) for m in members
    )
    shown = [locale] if locale else sorted({k[0] for k in groups} or {default})
    per_locale: dict[str, dict[str, Any]] = {
        loc: {
            "locale": loc,
            "people": 0,
            "channels": {},
            "segments": 0,
            "cost": 0.0,
        }
        for loc in shown
    }
    total_cost = 0.0
    total_segments = 0
    for (loc, took_part, channel), count in groups.items():
        text = renderer.text(loc, took_part)
        if channel == "sms":
            segments = sms_info(sms_text(bot, text)).segments
            cost = count * segments * twilio.sms_price_per_segment
            total_segments += count * segments
        elif channel == "whatsapp":
            segments = 0
            cost = count * twilio.whatsapp_price_per_message
        else:
            segments = 0
            cost = 0.0
        total_cost += cost
        entry = per_locale.get(loc)
        if entry is not None:
            entry["people"] += count
            entry["channels"][channel] = entry["channels"].get(channel, 0) + count
            entry["segments"] += count * segments
            entry["cost"] += cost
    for loc, entry in per_locale.items():
        # The text participants get when there are any, else the text for the others.
        took_part = any(k[0] == loc and k[1] for k in groups) or (
            base["audience"] == "participants"
        )
        text = renderer.text(loc, took_part)
        info = sms_info(sms_text(bot, text))
        entry.update(
            text=text,
            encoding=info.encoding,
            characters=len(text),
            sms_segments_each=info.segments,
            over_cap=info.over_cap,
            cost=round(entry["cost"], 4),
        )
    whatsapp = sum(n for (_, _, ch), n in groups.items() if ch == "whatsapp")
    notes = []
    if whatsapp and "impact_update" not in twilio.whatsapp_templates:
        notes.append(
            f"{whatsapp} WhatsApp recipient(s): without [channels.twilio.whatsapp_templates] "
            "impact_update, those who have not written in the last 24 hours are held, not sent"
        )
    return {
        "decision": decision_id,
        "audience": updates.Audience(
            base["audience"], base["audience_field"], base["audience_value"]
        ).describe(),
        "people": len(members),
        "participants": base["participants"],
        "sms_segments": total_segments,
        "sms_price_per_segment": twilio.sms_price_per_segment,
        "whatsapp_price_per_message": twilio.whatsapp_price_per_message,
        "estimated_cost": round(total_cost, 4),
        "currency": "GBP",
        "locales": list(per_locale.values()),
        "notes": notes,
    }
