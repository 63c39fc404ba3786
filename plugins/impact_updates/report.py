"""The register with its figures: ``panelbot impact report`` and the public page's data.

Per decision: the register (title, what the panel said with the finding quoted and its n,
what was done, by which body, the accountable owner, status, dates, link, the surveys
that informed it) and, per update about it, delivery (from the outbox rows), feedback
("Was this useful?") and the impact-loop figure: the next wave's response rate for people
who received the update against people who did not, with counts and a 95% interval for
the difference (:mod:`.stats`: Newcombe's hybrid score interval). With a hold-out the two
groups are the randomised treatment and hold-out groups, compared by assignment (labelled
"randomised (hold-out)"); without one, those the update reached against every other
invitee of that wave ("observational": they differ in more than the update).

Nothing here names a panellist or shows an address: counts only.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import jinja2

from bot.plugin_api import UserError, pass_cli, safe_cell, with_bot
from plugins.impact_updates.loop import next_wave
from plugins.impact_updates.stats import METHOD, newcombe

if TYPE_CHECKING:
    from bot.plugin_api import Bot, CliContext, Database

TEMPLATES = Path(__file__).parent / "templates"
RANDOMISED = "randomised (hold-out)"
OBSERVATIONAL = "observational"
# Outbox states, as the register counts them.
_OUTBOX_GROUP = {
    "queued": "queued",
    "sending": "queued",
    "held": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "failed": "failed",
    "cancelled": "cancelled",
}
REACHED = ("sent", "delivered")


def environment() -> jinja2.Environment:
    """Our own templates, every value autoescaped."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )


# -- gathering ------------------------------------------------------------------------------


async def register(bot: Bot, *, public: bool = False) -> list[dict[str, Any]]:
    """Every decision with its figures, oldest first. ``public``: decided and implemented
    decisions only, without the per-update figures (the public page shows none)."""
    db = bot.db
    where = "WHERE status IN ('decided', 'implemented')" if public else ""
    decisions = await db.fetchall(f"SELECT * FROM impact_decisions {where} ORDER BY id")
    out = []
    for row in decisions:
        out.append(await _decision(db, row, figures=not public))
    return out


async def _decision(db: Database, row: Any, *, figures: bool = True) -> dict[str, Any]:
    links = await db.fetchall(
        "SELECT survey_id, role FROM impact_decision_surveys WHERE decision_id = ? "
        "ORDER BY survey_id",
        (row["id"],),
    )
    findings = await db.fetchall(
        "SELECT survey_id, question_id, option_id, option_text, count, n, share, quote "
        "FROM impact_findings WHERE decision_id = ? ORDER BY id",
        (row["id"],),
    )
    updates = (
        await db.fetchall(
            "SELECT * FROM impact_updates WHERE decision_id = ? ORDER BY id", (row["id"],)
        )
        if figures
        else []
    )
    told = await db.fetchone(
        "SELECT count(DISTINCT coalesce(r.panellist_id, -r.id)) AS n FROM impact_recipients r "
        "JOIN impact_updates u ON u.id = r.update_id LEFT JOIN outbox o ON o.id = r.outbox_id "
        "WHERE u.decision_id = ? AND r.state = 'queued' "
        "AND (o.id IS NULL OR o.status IN ('sent', 'delivered'))",
        (row["id"],),
    )
    return {
        "id": row["id"],
        "title": row["title"],
        "you_said": row["you_said"],
        "findings": [
            {
                "survey_id": f["survey_id"],
                "question_id": f["question_id"],
                "option": f["option_text"] or f["option_id"],
                "count": f["count"],
                "n": f["n"],
                "share": f["share"],
                "quote": f["quote"],
            }
            for f in findings
        ],
        "we_did": row["we_did"],
        "decided_by": row["decided_by"],
        "owner": row["owner"],
        "status": row["status"],
        "decided_on": row["decided_on"],
        "recorded_at": row["created_at"],
        "updated_at": row["updated_at"],
        "link": row["link"],
        "surveys": [r["survey_id"] for r in links if r["role"] == "informed"],
        "follow_up_surveys": [r["survey_id"] for r in links if r["role"] == "follow_up"],
        "panellists_told": told["n"] if told else 0,
        "updates": [await _update(db, u) for u in updates],
    }


async def _update(db: Database, update: Any) -> dict[str, Any]:
    return {
        "id": update["id"],
        "status": update["status"],
        "due_at": update["due_at"],
        "sent_at": update["finished_at"] or update["started_at"],
        "audience": _audience(update),
        "audience_size": update["audience_size"],
        "holdout_share": update["holdout_share"],
        "holdout_released_at": update["holdout_released_at"],
        "delivery": await delivery(db, update["id"]),
        "feedback": await feedback(db, update["id"]) if update["feedback"] else None,
        "impact_loop": await impact_loop(db, update),
        "follow_up": await follow_up(db, update),
    }


def _audience(update: Any) -> str:
    if update["audience"] == "field":
        return f"{update['audience_field']}={update['audience_value']}"
    return str(update["audience"])


async def delivery(db: Database, update_id: int) -> dict[str, int]:
    """Recipients by what became of their message: queued, sent, delivered, failed, and the
    hold-out still waiting, skipped (no longer reachable) and cancelled."""
    counts = dict.fromkeys(
        ("queued", "sent", "delivered", "failed", "waiting", "skipped", "cancelled"), 0
    )
    rows = await db.fetchall(
        "SELECT r.state, o.id AS outbox, o.status, count(*) AS n FROM impact_recipients r "
        "LEFT JOIN outbox o ON o.id = r.outbox_id WHERE r.update_id = ? "
        "GROUP BY r.state, o.id IS NULL, o.status",
        (update_id,),
    )
    for r in rows:
        if r["state"] == "queued":
            # A queued row whose outbox row retention has since removed was sent.
            key = _OUTBOX_GROUP.get(r["status"], "sent") if r["outbox"] else "sent"
        elif r["state"] == "pending":
            key = "queued"
        else:
            key = r["state"]
        counts[key] += r["n"]
    return counts


async def feedback(db: Database, update_id: int) -> dict[str, Any]:
    row = await db.fetchone(
        "SELECT coalesce(sum(useful), 0) AS yes, count(*) AS n FROM impact_feedback "
        "WHERE update_id = ?",
        (update_id,),
    )
    yes, n = (row["yes"], row["n"]) if row else (0, 0)
    return {"yes": yes, "no": n - yes, "n": n, "useful_share": yes / n if n else None}


async def impact_loop(db: Database, update: Any) -> dict[str, Any]:
    """The next wave's response rate: received vs not (or treatment vs hold-out)."""
    randomised = bool(update["holdout_share"])
    design = RANDOMISED if randomised else OBSERVATIONAL
    result: dict[str, Any] = {"design": design, "method": METHOD, "wave_id": None}
    if update["status"] not in ("sent",) or not (update["started_at"] or update["due_at"]):
        result["note"] = "the update has not gone out"
        return result
    wave = await next_wave(db, update)
    if wave is None:
        result["note"] = "no survey wave has opened since the update went out"
        return result
    result.update(wave_id=wave["id"], survey_id=wave["survey_id"], wave_status=wave["status"])
    invited = await db.fetchall(
        "SELECT panellist_id, status FROM invitations WHERE wave_id = ? "
        "AND panellist_id IS NOT NULL",
        (wave["id"],),
    )
    recipients = await db.fetchall(
        "SELECT r.panellist_id, r.grp, r.state, o.id AS outbox, o.status FROM impact_recipients r "
        "LEFT JOIN outbox o ON o.id = r.outbox_id "
        "WHERE r.update_id = ? AND r.panellist_id IS NOT NULL",
        (update["id"],),
    )
    if randomised:
        # By assignment (intention to treat): what was randomised is who was held back.
        groups = {r["panellist_id"]: r["grp"] == "treatment" for r in recipients}
        labels = ("treatment (sent the update)", "hold-out (not yet sent)")
    else:
        reached = {
            r["panellist_id"]
            for r in recipients
            if r["state"] == "queued" and (r["outbox"] is None or r["status"] in REACHED)
        }
        groups = {r["panellist_id"]: r["panellist_id"] in reached for r in invited}
        labels = ("received the update", "did not receive it")
    tally = {True: [0, 0], False: [0, 0]}  # group -> [responded, invited]
    for inv in invited:
        group = groups.get(inv["panellist_id"])
        if group is None:
            continue  # randomised: not in this update's audience
        tally[group][1] += 1
        tally[group][0] += inv["status"] == "completed"
    (x1, n1), (x2, n2) = tally[True], tally[False]
    result["received"] = {"label": labels[0], "invited": n1, "responded": x1}
    result["not_received"] = {"label": labels[1], "invited": n2, "responded": x2}
    result["provisional"] = wave["status"] != "closed"
    if n1 and n2:
        d = newcombe(x1, n1, x2, n2)
        result["received"]["rate"] = d.p1
        result["not_received"]["rate"] = d.p2
        result["difference"] = d.difference
        result["ci95"] = [d.low, d.high]
    else:
        result["note"] = "one of the two groups had nobody invited to that wave"
    return result


async def follow_up(db: Database, update: Any) -> dict[str, Any] | None:
    if not update["follow_up_survey_id"]:
        return None
    wave_id = update["follow_up_wave_id"]
    result: dict[str, Any] = {"survey_id": update["follow_up_survey_id"], "wave_id": wave_id}
    if wave_id is None:
        result["note"] = "not opened yet"
        return result
    counts = await db.fetchone(
        "SELECT count(*) AS invited, coalesce(sum(status = 'completed'), 0) AS completed "
        "FROM invitations WHERE wave_id = ?",
        (wave_id,),
    )
    result["invited"], result["completed"] = counts["invited"], counts["completed"]
    result["headline"] = await _headline(db, wave_id)
    return result


async def _headline(db: Database, wave_id: int) -> str | None:
    """The first question's most given answer in the wave: 'Q: label 62% (n=13)'."""
    row = await db.fetchone(
        "SELECT s.definition FROM waves w JOIN surveys s ON s.id = w.survey_row_id WHERE w.id = ?",
        (wave_id,),
    )
    if row is None:
        return None
    definition = json.loads(row["definition"])
    questions = definition.get("questions") or []
    if not questions:
        return None
    question = questions[0]
    answers = await db.fetchall(
        "SELECT value FROM answers WHERE wave_id = ? AND question_id = ?",
        (wave_id, question.get("id")),
    )
    if not answers:
        return None
    counts = Counter(_answer_key(json.loads(a["value"])) for a in answers)
    value, count = counts.most_common(1)[0]
    n = sum(counts.values())
    label = value
    for option in question.get("options") or []:
        if str(option.get("id")) == value:
            label = _text(option.get("text")) or value
    return f"{_text(question.get('text'))}: {label} {round(100 * count / n)}% (n={n})"


def _answer_key(value: Any) -> str:
    if isinstance(value, list):
        return " + ".join(str(v) for v in value)
    return str(value)


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("en") or next(iter(value.values()), ""))
    return str(value or "")


# -- formats --------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def loop_line(loop: dict[str, Any]) -> str:
    """One line for the impact-loop figure."""
    if "difference" not in loop:
        return f"{loop['design']}: {loop.get('note', 'no figure')}"
    a, b = loop["received"], loop["not_received"]
    low, high = loop["ci95"]
    provisional = " (wave still open: provisional)" if loop.get("provisional") else ""
    return (
        f"{loop['design']}, wave {loop['wave_id']} ({loop['survey_id']}): "
        f"{a['label']} {a['responded']}/{a['invited']} ({_pct(a['rate'])}) vs "
        f"{b['label']} {b['responded']}/{b['invited']} ({_pct(b['rate'])}); difference "
        f"{_points(loop['difference'])} percentage points, 95% CI {_points(low)} to {_points(high)}"
        f"{provisional}"
    )


def as_json(data: list[dict[str, Any]]) -> str:
    return json.dumps({"method": METHOD, "decisions": data}, indent=2, ensure_ascii=False)


CSV_COLUMNS = [
    "decision_id",
    "title",
    "status",
    "decided_on",
    "decided_by",
    "owner",
    "you_said",
    "finding",
    "finding_n",
    "we_did",
    "link",
    "surveys",
    "panellists_told",
    "update_id",
    "update_status",
    "audience",
    "holdout_share",
    "queued",
    "sent",
    "delivered",
    "failed",
    "holdout_waiting",
    "feedback_yes",
    "feedback_no",
    "feedback_n",
    "loop_design",
    "loop_wave_id",
    "received_invited",
    "received_responded",
    "not_received_invited",
    "not_received_responded",
    "difference",
    "ci95_low",
    "ci95_high",
    "loop_note",
    "follow_up_survey",
    "follow_up_invited",
    "follow_up_completed",
    "follow_up_headline",
]


def as_csv(data: list[dict[str, Any]]) -> str:
    """One row per update (a decision without updates has one row of its own)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for d in data:
        base = {
            "decision_id": d["id"],
            "title": d["title"],
            "status": d["status"],
            "decided_on": d["decided_on"] or "",
            "decided_by": d["decided_by"] or "",
            "owner": d["owner"] or "",
            "you_said": d["you_said"],
            "finding": " | ".join(f["quote"] for f in d["findings"]),
            "finding_n": " | ".join(str(f["n"]) for f in d["findings"]),
            "we_did": d["we_did"],
            "link": d["link"] or "",
            "surveys": " ".join(d["surveys"]),
            "panellists_told": d["panellists_told"],
        }
        if not d["updates"]:
            writer.writerow(_safe(base))
        for u in d["updates"]:
            loop, fb, fu = u["impact_loop"], u["feedback"] or {}, u["follow_up"] or {}
            received, other = loop.get("received", {}), loop.get("not_received", {})
            ci = loop.get("ci95") or ["", ""]
            writer.writerow(
                _safe(
                    {
                        **base,
                        "update_id": u["id"],
                        "update_status": u["status"],
                        "audience": u["audience"],
                        "holdout_share": u["holdout_share"],
                        **{k: u["delivery"][k] for k in ("queued", "sent", "delivered", "failed")},
                        "holdout_waiting": u["delivery"]["waiting"],
                        "feedback_yes": fb.get("yes", ""),
                        "feedback_no": fb.get("no", ""),
                        "feedback_n": fb.get("n", ""),
                        "loop_design": loop["design"],
                        "loop_wave_id": loop.get("wave_id") or "",
                        "received_invited": received.get("invited", ""),
                        "received_responded": received.get("responded", ""),
                        "not_received_invited": other.get("invited", ""),
                        "not_received_responded": other.get("responded", ""),
                        "difference": _round(loop.get("difference")),
                        "ci95_low": _round(ci[0]),
                        "ci95_high": _round(ci[1]),
                        "loop_note": loop.get("note", ""),
                        "follow_up_survey": fu.get("survey_id", ""),
                        "follow_up_invited": fu.get("invited", ""),
                        "follow_up_completed": fu.get("completed", ""),
                        "follow_up_headline": fu.get("headline") or "",
                    }
                )
            )
    return out.getvalue()


def _safe(row: dict[str, Any]) -> dict[str, Any]:
    """Free text (a title, a quote, a headline) a spreadsheet would run as a formula is defused."""
    return {k: safe_cell(v) for k, v in row.items()}


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else ("" if value is None else value)


def as_table(data: list[dict[str, Any]]) -> str:
    if not data:
        return "No decisions in the register yet (panelbot decision add)."
    lines: list[str] = []
    for d in data:
        lines.append(f"#{d['id']} {d['title']} [{d['status']}]")
        for f in d["findings"]:
            lines.append(f"  You said:  {f['quote']}")
        if not d["findings"]:
            lines.append(f"  You said:  {d['you_said']}")
        lines.append(f"  We did:    {d['we_did']}")
        who = ", ".join(x for x in (d["decided_by"], d["owner"]) if x) or "-"
        lines.append(f"  By:        {who}; decided {d['decided_on'] or '-'}")
        if d["surveys"]:
            lines.append(f"  Surveys:   {', '.join(d['surveys'])}")
        if d["link"]:
            lines.append(f"  Link:      {d['link']}")
        lines.append(f"  Told:      {d['panellists_told']} panellists")
        for u in d["updates"]:
            dl = u["delivery"]
            holdout = f", hold-out {u['holdout_share']:.0%}" if u["holdout_share"] else ""
            if u["status"] == "sent" and u["sent_at"]:
                state = f"sent {u['sent_at'][:10]}"
            else:
                state = f"{u['status']}, due {u['due_at'][:16].replace('T', ' ')} UTC"
            if u["holdout_released_at"]:
                holdout += f" (sent {u['holdout_released_at'][:10]})"
            lines.append(f"  Update {u['id']} ({state}, to {u['audience']}{holdout}):")
            lines.append(
                f"    delivery: queued {dl['queued']}, sent {dl['sent']}, delivered "
                f"{dl['delivered']}, failed {dl['failed']}"
                + (f", hold-out waiting {dl['waiting']}" if dl["waiting"] else "")
            )
            fb = u["feedback"]
            if fb is not None:
                lines.append(
                    f"    useful?: yes {fb['yes']}, no {fb['no']} (n={fb['n']}, "
                    f"{_pct(fb['useful_share'])} yes)"
                )
            lines.append(f"    impact loop: {loop_line(u['impact_loop'])}")
            fu = u["follow_up"]
            if fu is not None:
                if fu["wave_id"] is None:
                    lines.append(f"    follow-up {fu['survey_id']}: {fu['note']}")
                else:
                    lines.append(
                        f"    follow-up {fu['survey_id']} (wave {fu['wave_id']}): "
                        f"{fu['completed']}/{fu['invited']} completed"
                        + (f"; {fu['headline']}" if fu.get("headline") else "")
                    )
        lines.append("")
    lines.append(f"Intervals: {METHOD}.")
    return "\n".join(lines)


def as_html(data: list[dict[str, Any]], panel_name: str) -> str:
    template = environment().get_template("report.html.j2")
    return template.render(
        decisions=data,
        panel_name=panel_name,
        generated=datetime.now(UTC).strftime("%d %B %Y, %H:%M UTC"),
        method=METHOD,
        loop_line=loop_line,
        pct=_pct,
        points=_points,
    )


FORMATS = ("table", "csv", "json", "html")


@click.command("report")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file instead of the screen.",
)
@pass_cli
def report_cmd(ctx: CliContext, fmt: str, output: Path | None) -> None:
    """The register with delivery, feedback and the impact-loop figure.

    Per decision: what the panel said (the finding quoted, with n), what was done, by whom,
    status, dates, link, surveys; per update: delivery (queued, sent, delivered, failed),
    "Was this useful?" answers, and the next wave's response rate for people who received
    the update vs those who did not, with a 95% interval for the difference (Newcombe's
    hybrid score interval). With --holdout the comparison is randomised (hold-out), else
    observational. --format html writes one self-contained page for board papers.
    """

    database = Path(ctx.settings.bot.database)
    if str(database) != ":memory:" and not database.exists():
        # A report reads the register: never create an empty database to report on.
        raise UserError(
            f"no database at {database} (config: {ctx.config_source()}); point at the "
            "panel's config, e.g. panelbot -c demo-data/panelbot.toml impact report"
        )

    async def work(bot: Bot) -> list[dict[str, Any]]:
        return await register(bot)

    data = with_bot(ctx, work)
    if fmt == "json":
        text = as_json(data)
    elif fmt == "csv":
        text = as_csv(data)
    elif fmt == "html":
        text = as_html(data, ctx.settings.bot.name)
    else:
        text = as_table(data)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    try:
        output.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from exc
    click.echo(f"wrote {output} ({fmt})")
