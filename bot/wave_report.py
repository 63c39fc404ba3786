"""Cost and response per wave: what each wave of a survey cost, and who answered it.

What counts as a wave's messages (``bot.storage.wave_stats.wave_messages``): its invitations
and its reminder (outbox keys ``wave:<id>:...``), and every reply the bot sent to a message
that arrived while that person's session of the wave was open (the questions, re-asks, the
thanks at the end, a STOP confirmation). Sign-up chat and other surveys' messages are not
counted; a reply that both ends one survey and carries the invitation to the next counts for
the survey it ended.

Only messages a provider accepted (status ``sent`` or ``delivered``) are priced; queued and
failed ones are counted apart. SMS segments are those of the text as the Twilio channel
sends it (sanitised when ``[channels.twilio] sanitize`` is on, capped at the longest SMS);
a text erased since (``panel erase``) counts as one segment. The estimate is
``segments x sms_price_per_segment`` plus ``WhatsApp messages x whatsapp_price_per_message``
(both in ``[channels.twilio]``, GBP); Telegram and the simulator cost nothing. Cost per
completed response divides by the wave's completed invitations.

Response per group: for each panel field and value (and "(unknown)"), invitations sent,
completed and the rate, and the representativeness gap: respondents' share minus the
population share in percentage points when the plugins give population targets for the
field (``panelbot_population_targets``), else minus the group's share of those invited.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from bot.sms import prepare
from bot.storage import surveys as survey_store
from bot.storage import wave_stats

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.storage.surveys import Wave

UNKNOWN_GROUP = "(unknown)"
PAID_CHANNELS = ("sms", "whatsapp")
PENDING_STATUSES = ("queued", "sending", "held")


def population_targets(bot: Bot) -> dict[str, dict[str, float]] | None:
    """The population's shares per field and value from the plugins, or None."""
    for _plugin, found in bot.plugins.call_each_sync(
        "panelbot_population_targets", settings=bot.settings
    ):
        if found:
            return dict(found)
    return None


async def survey_wave_reports(bot: Bot, survey_id: str) -> list[dict[str, Any]]:
    """Cost and response for every wave of the survey, oldest first."""
    targets = population_targets(bot) or {}
    waves = await survey_store.waves_of_survey(bot.db.conn, survey_id)
    return [await wave_report(bot, wave, targets) for wave in waves]


async def add_wave_reports(bot: Bot, results: dict[str, Any]) -> dict[str, Any]:
    """Put each wave's cost and response into ``results["waves"]`` (by wave id)."""
    reports = {r["id"]: r for r in await survey_wave_reports(bot, results["survey"])}
    merged = []
    for wave in results.get("waves", []):
        merged.append({**wave, **reports.pop(wave["id"], {})})
    merged.extend(reports.values())
    results["waves"] = merged
    return results


def _sms_segments(text: str | None, sanitise_text: bool) -> int:
    if text is None:
        return 1  # erased since: at least one segment was sent
    return prepare(text, sanitise_text=sanitise_text)[1].segments


async def wave_report(bot: Bot, wave: Wave, targets: dict[str, dict[str, float]]) -> dict[str, Any]:
    """One wave's messages, segments and cost by channel, and its response per group."""
    conn = bot.db.conn
    twilio = bot.settings.channels.twilio
    prices = {"sms": twilio.sms_price_per_segment, "whatsapp": twilio.whatsapp_price_per_message}
    channels: dict[str, dict[str, Any]] = {}
    pending = failed = 0
    for m in await wave_stats.wave_messages(conn, wave.id):
        if m.status in PENDING_STATUSES:
            pending += 1
            continue
        if m.status == "failed":
            failed += 1
            continue
        if m.status not in wave_stats.SENT_STATUSES:
            continue  # cancelled: never sent
        entry = channels.setdefault(m.channel, {"messages": 0, "segments": 0, "cost": 0.0})
        entry["messages"] += 1
        if m.channel == "sms":
            segments = _sms_segments(m.text, twilio.sanitize)
            entry["segments"] += segments
            entry["cost"] += segments * prices["sms"]
        elif m.channel == "whatsapp":
            entry["cost"] += prices["whatsapp"]
    by_channel = [
        {
            "channel": name,
            "messages": entry["messages"],
            "segments": entry["segments"] if name == "sms" else None,
            "cost": round(entry["cost"], 4),
        }
        for name, entry in sorted(channels.items())
    ]
    invitations = await wave_stats.wave_invitations(conn, wave.id)
    invited = len(invitations)
    completed = sum(1 for done, _ in invitations if done)
    cost = sum(entry["cost"] for entry in channels.values())
    return {
        "id": wave.id,
        "invited": invited,
        "completed": completed,
        "response_rate": _pct(completed, invited),
        "stratify_by": wave.stratify_by,
        # How the sample was drawn, when a plugin said (audit log ``wave.sample``).
        "sample": await wave_stats.sample_report(conn, wave.id),
        "messages": {
            "sent": sum(c["messages"] for c in by_channel),
            "sms_segments": channels.get("sms", {}).get("segments", 0),
            "pending": pending,
            "failed": failed,
            "by_channel": by_channel,
        },
        "cost": {
            "currency": "GBP",
            "total": round(cost, 4),
            "per_completed": round(cost / completed, 4) if completed else None,
            "sms_price_per_segment": prices["sms"],
            "whatsapp_price_per_message": prices["whatsapp"],
        },
        "groups": _groups(bot, invitations, targets),
    }


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole else 0.0


def _groups(
    bot: Bot,
    invitations: list[tuple[bool, dict[str, str]]],
    targets: dict[str, dict[str, float]],
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    respondents = sum(1 for done, _ in invitations if done)
    for panel_field in bot.settings.panel.fields:
        name = panel_field.name
        tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for done, demographics in invitations:
            value = demographics.get(name)
            group = value if value in panel_field.values else UNKNOWN_GROUP
            tally[group][0] += 1
            tally[group][1] += int(done)
        shares = targets.get(name)
        rows = []
        for group in [*panel_field.values, UNKNOWN_GROUP]:
            group_invited, group_completed = tally.get(group, (0, 0))
            if group == UNKNOWN_GROUP and not group_invited:
                continue
            if shares is not None:
                basis, base_share = "population", shares.get(group, 0.0)
            else:
                basis = "invited"
                base_share = group_invited / len(invitations) if invitations else 0.0
            respondent_share = group_completed / respondents if respondents else None
            rows.append(
                {
                    "group": group,
                    "invited": group_invited,
                    "completed": group_completed,
                    "response_rate": _pct(group_completed, group_invited),
                    "respondent_share": (
                        None if respondent_share is None else round(100 * respondent_share, 1)
                    ),
                    "gap_points": (
                        None
                        if respondent_share is None
                        else round(100 * (respondent_share - base_share), 1)
                    ),
                    "gap_vs": basis,
                }
            )
        out[name] = rows
    return out
