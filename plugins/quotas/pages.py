"""``GET /admin/population``: the panel against its population targets, on the dashboard.

For each field with targets, a grouped bar chart of each value's share of the active panel
beside its target share, with the same figures as a table (the chart's text equivalent),
then the rows of ``panelbot quotas report`` (:func:`plugins.quotas.report.build`, not
computed again here): the gap in percentage points, flagged in words when it is beyond the
tolerance, how many more people each group needs, and how many wait.

A gap is *beyond tolerance* when the group's panel share is further from its target share
than ``tolerance`` times that target share: the same margin that makes a group full
(``ceil(share x panel_size_target x (1 + tolerance))``), applied to shares so that a panel
still growing towards its target size is judged by its make-up, not its size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.plugin_api import Route, grouped_bar_chart, nav_link, panel_counts, render_page
from plugins.quotas.report import UNKNOWN, build
from plugins.quotas.targets import check_config, load

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from bot.plugin_api import Bot

TEMPLATES = Path(__file__).parent / "templates"
PATH = "/admin/population"
UNDER, OVER, WITHIN = "under target", "over target", "within tolerance"
# A share of 0 is a value with no population figure ("prefer not to say"): never a gap.
NO_TARGET = "no target"


def flag(target_share: float, panel_share: float, tolerance: float, *, empty: bool) -> str:
    """``under target``, ``over target``, ``within tolerance`` or ``no target`` (words,
    not a colour)."""
    if target_share == 0:
        return NO_TARGET
    if empty:
        return UNDER
    margin = tolerance * target_share
    # Shares are rounded to 4 places by the report: compare at that precision.
    if round(panel_share - target_share, 4) < -round(margin, 4):
        return UNDER
    if round(panel_share - target_share, 4) > round(margin, 4):
        return OVER
    return WITHIN


def sections(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per field: its chart and its table rows, each row with its flag."""
    out = []
    empty = report["active"] == 0
    for field, rows in report["fields"].items():
        known = [r for r in rows if r["value"] is not None]
        for row in known:
            row["flag"] = flag(
                row["target_share"], row["panel_share"], report["tolerance"], empty=empty
            )
            row["full"] = row["cap"] is not None and row["active"] >= row["cap"]
        top = max([r["panel_share"] for r in known] + [r["target_share"] for r in known])
        chart = grouped_bar_chart(
            f"{field}: share of the panel against the population target",
            [r["value"] for r in known],
            [
                ("Panel", [100 * r["panel_share"] for r in known]),
                ("Target", [100 * r["target_share"] for r in known]),
            ],
            unit="%",
            max_value=100 * max(top, 0.01),
        )
        flagged = [r for r in known if r["flag"] in (UNDER, OVER)]
        out.append(
            {
                "field": field,
                "chart": chart,
                "rows": rows,
                "flagged": flagged,
                "unknown_label": UNKNOWN,
            }
        )
    return out


async def population_page(request: Request) -> Response:
    bot: Bot = request.app.state.bot
    settings = bot.settings
    problems = check_config(settings)
    targets = load(settings)
    if not targets.population:
        return render_page(
            request, "population.html", templates=TEMPLATES, report=None, problems=problems
        )
    counts = {field: await panel_counts(bot.db.conn, field) for field in targets.population}
    report = build(targets, counts)
    return render_page(
        request,
        "population.html",
        templates=TEMPLATES,
        report=report,
        sections=sections(report),
        problems=problems,
    )


def routes(bot: Bot) -> list[Any]:
    """The page and its menu entry (behind the staff login, as every plugin route is)."""
    return [nav_link(Route(PATH, population_page, methods=["GET"]), "Population")]
