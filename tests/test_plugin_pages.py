"""The plugins' dashboard pages over real HTTP: /admin/population (quotas) and
/admin/decisions (impact updates), on a real SQLite file, the real Starlette app under
uvicorn, signed in through the real login form (tests/staff_login.py)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path

import httpx
import pytest

from bot.app import Bot
from plugins.quotas import pages as population_pages
from tests.conftest import Chat, make_settings
from tests.staff_login import signed_in
from tests.webserver import serving

QUOTAS = {
    "panel_size_target": 10,
    "tolerance": 0.1,
    "population": {
        "sex": {"female": 0.5, "male": 0.5, "other": 0.0, "prefer_not_to_say": 0.0},
    },
}


def text_of(html: str) -> str:
    """The page's text, tags dropped and spaces squeezed."""
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def rows_of(html: str, table_id: str) -> list[list[str]]:
    """The body rows of the table with this id, as cell texts."""
    table = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    body = table.split("<tbody>", 1)[1]
    return [
        [text_of(c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


@pytest.fixture
async def quota_bot(tmp_path: Path) -> AsyncIterator[Bot]:
    instance = await Bot.create(make_settings(tmp_path, plugins={"quotas": QUOTAS}))
    try:
        yield instance
    finally:
        await instance.stop()


async def client_for(bot: Bot) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(bot, start_bot=False) as url, httpx.AsyncClient(base_url=url) as c:
        yield c


@pytest.fixture
async def quota_client(quota_bot: Bot) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(quota_bot):
        yield c


# -- /admin/population ---------------------------------------------------------------------


async def test_population_needs_a_login(quota_client: httpx.AsyncClient) -> None:
    answer = await quota_client.get("/admin/population")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/admin/login?next=/admin/population")


async def test_population_chart_table_flags_and_recruitment(
    quota_bot: Bot, quota_client: httpx.AsyncClient
) -> None:
    chat = Chat(quota_bot)
    # Three women and one man: female over its half, male under it.
    for i, sex in enumerate(["1", "1", "1", "2"]):
        await chat.join(f"sim:p{i}", ("1", sex))
    await signed_in(quota_client, quota_bot.db, "viewer")
    page = await quota_client.get("/admin/population")
    assert page.status_code == 200
    html = page.text
    assert 'aria-current="page"' in html.split("Population</a>")[0][-200:]
    # The chart: an SVG with its title, and its text equivalent as a table.
    assert "<svg" in html and "sex: share of the panel against the population target" in html
    rows = {r[0]: r for r in rows_of(html, "population-sex")}
    # value, target share, active, panel share, gap, flag, needed for target, now, waiting
    assert rows["female"] == [
        "female",
        "50.0%",
        "3",
        "75.0%",
        "+25.0",
        "over target",
        "2",
        "0",
        "0",
    ]
    assert rows["male"] == ["male", "50.0%", "1", "25.0%", "-25.0", "under target", "4", "2", "0"]
    assert rows["other"][5] == "within tolerance"
    # The flags are said in words above the chart too, not only by colour.
    assert "Beyond tolerance: female (over target, +25.0 points); male (under target" in (
        text_of(html)
    )


async def test_population_figures_are_the_reports(quota_bot: Bot) -> None:
    """The page's rows are plugins.quotas.report.build's, with a flag added."""
    from plugins.quotas.report import build
    from plugins.quotas.targets import load

    targets = load(quota_bot.settings)
    counts = {
        "sex": {"female": {"active": 5, "waitlisted": 1}, "male": {"active": 5, "waitlisted": 0}}
    }
    found = population_pages.sections(build(targets, counts))
    assert [r["flag"] for r in found[0]["rows"]] == ["within tolerance"] * 4
    assert found[0]["rows"][0]["waitlisted"] == 1


def test_flag_is_beyond_tolerance_of_the_target_share() -> None:
    flag = population_pages.flag
    assert flag(0.5, 0.55, 0.1, empty=False) == "within tolerance"
    assert flag(0.5, 0.5501, 0.1, empty=False) == "over target"
    assert flag(0.5, 0.45, 0.1, empty=False) == "within tolerance"
    assert flag(0.5, 0.4499, 0.1, empty=False) == "under target"
    assert flag(0.2, 0.0, 0.0, empty=True) == "under target"
    assert flag(0.0, 0.0, 0.0, empty=True) == "within tolerance"


async def test_population_without_targets_says_so(bot: Bot) -> None:
    async for client in client_for(bot):
        await signed_in(client, bot.db, "admin")
        page = await client.get("/admin/population")
        assert page.status_code == 200
        assert "No population targets are configured" in page.text
        assert "<svg" not in page.text
