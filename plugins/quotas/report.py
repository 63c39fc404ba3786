"""``panelbot quotas report``: the panel against its population targets.

For each field with targets and each of its values: the target share, the active
panellists and their share of the panel, the gap in percentage points, how many more
people the group needs to reach its share of ``panel_size_target`` and how many to reach
its share of the panel at its current size (adding them grows the panel, which is counted),
and how many of the group wait on the waiting list.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bot.plugin_api import (
    CliContext,
    UserError,
    format_option,
    panel_counts,
    pass_cli,
    table_lines,
    with_bot,
)
from plugins.quotas.targets import Targets, check_config, load

if TYPE_CHECKING:
    from bot.plugin_api import Bot

UNKNOWN = "(not known)"


@click.group("quotas")
def quotas_group() -> None:
    """Population targets ([plugins.quotas]) and how the panel compares."""


def needed_at_size(share: float, count: int, size: int) -> int:
    """People of the group to add so that it reaches ``share`` of a panel of ``size``
    that grows by each one added: the least x with (count + x) / (size + x) >= share."""
    if share >= 1:
        return 0 if count >= size else size - count
    return max(0, math.ceil(round((share * size - count) / (1 - share), 9)))


def build(targets: Targets, counts: dict[str, dict[str | None, dict[str, int]]]) -> dict[str, Any]:
    """The report as data (what ``--format json`` prints)."""
    size = targets.panel_size_target or 0
    fields: dict[str, list[dict[str, Any]]] = {}
    totals: dict[str, int] = {"active": 0, "waitlisted": 0}
    for field, shares in targets.population.items():
        found = counts.get(field, {})
        active = sum(c["active"] for c in found.values())
        totals = {
            "active": active,
            "waitlisted": sum(c["waitlisted"] for c in found.values()),
        }
        rows = []
        for value, share in shares.items():
            count = found.get(value, {}).get("active", 0)
            panel_share = count / active if active else 0.0
            target = share * size
            rows.append(
                {
                    "value": value,
                    "target_share": share,
                    "target_count": round(target, 2),
                    "cap": targets.cap(field, value),
                    "active": count,
                    "panel_share": round(panel_share, 4),
                    "gap_pp": round((panel_share - share) * 100, 1),
                    "needed_for_target": max(0, math.ceil(round(target, 9)) - count),
                    "needed_at_current_size": needed_at_size(share, count, active),
                    "waitlisted": found.get(value, {}).get("waitlisted", 0),
                }
            )
        others = {v: c for v, c in found.items() if v not in shares}
        if others:
            rows.append(
                {
                    "value": None,
                    "target_share": None,
                    "active": sum(c["active"] for c in others.values()),
                    "waitlisted": sum(c["waitlisted"] for c in others.values()),
                    "note": "value not known, or not one the targets name",
                }
            )
        fields[field] = rows
    return {
        "panel_size_target": targets.panel_size_target,
        "tolerance": targets.tolerance,
        "active": totals["active"],
        "waitlisted": totals["waitlisted"],
        "fields": fields,
    }


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.1f}%"


def render_table(report: dict[str, Any]) -> str:
    size = report["panel_size_target"]
    lines = [
        f"Panel: {report['active']} active of a target of {size}; "
        f"{report['waitlisted']} waitlisted (tolerance {report['tolerance']:.0%} over a "
        "group's target before it is full)",
        "need (target): more people for the group's share of the target size; "
        "need (now): more for its share of the panel as it is (each added grows the panel)",
    ]
    header = (
        "value",
        "target",
        "panel",
        "share",
        "gap pp",
        "need (target)",
        "need (now)",
        "waiting",
    )
    for field, rows in report["fields"].items():
        table = []
        for row in rows:
            if row["value"] is None:
                table.append(
                    (UNKNOWN, "", str(row["active"]), "", "", "", "", str(row["waitlisted"]))
                )
                continue
            full = row["cap"] is not None and row["active"] >= row["cap"]
            table.append(
                (
                    row["value"],
                    _pct(row["target_share"]),
                    str(row["active"]) + (" (full)" if full else ""),
                    _pct(row["panel_share"]),
                    f"{row['gap_pp']:+.1f}",
                    str(row["needed_for_target"]),
                    str(row["needed_at_current_size"]),
                    str(row["waitlisted"]),
                )
            )
        lines += ["", field]
        lines += table_lines(header, table, right=range(1, len(header)), indent="  ")
    return "\n".join(lines)


@quotas_group.command("report")
@format_option("table", "json", help="table for people, json for scripts.")
@pass_cli
def report_command(cli_ctx: CliContext, fmt: str) -> None:
    """For each field and value: target share, active panellists and their share, the gap in
    percentage points, how many more each group needs, and how many wait.

    Targets come from [plugins.quotas] (panel_size_target, tolerance) and
    [plugins.quotas.population.<field>] tables in the config.
    """
    settings = cli_ctx.settings
    problems = check_config(settings)
    if problems:
        key, message = problems[0]
        raise UserError(f"{key}: {message} (run panelbot config check)")
    targets = load(settings)
    if not targets.population:
        raise UserError(
            "no population targets configured: add [plugins.quotas] panel_size_target and "
            "[plugins.quotas.population.<field>] tables of value = share (see config.example.toml)"
        )
    database = Path(settings.bot.database)
    if str(database) != ":memory:" and not database.exists():
        raise UserError(f"no database at {database}; point at the panel's config with -c")

    async def work(bot: Bot) -> dict[str, Any]:
        counts = {field: await panel_counts(bot.db.conn, field) for field in targets.population}
        return build(targets, counts)

    report = with_bot(cli_ctx, work)
    if fmt == "json":
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        click.echo(render_table(report))
