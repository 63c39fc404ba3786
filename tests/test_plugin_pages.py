"""The plugins' dashboard pages over real HTTP: /admin/population (quotas) and
/admin/decisions (impact updates), on a real SQLite file, the real Starlette app under
uvicorn, signed in through the real login form (tests/staff_login.py)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import Bot
from bot.engine.waves import launch
from bot.hookspecs import hookimpl
from plugins.impact_updates import decisions, pages, updates
from plugins.quotas import pages as population_pages
from tests.conftest import REPO, Chat, add_survey, make_settings
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
    assert rows["other"][5] == "no target"
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
    assert [r["flag"] for r in found[0]["rows"]] == ["within tolerance"] * 2 + ["no target"] * 2
    assert found[0]["rows"][0]["waitlisted"] == 1


def test_flag_is_beyond_tolerance_of_the_target_share() -> None:
    flag = population_pages.flag
    assert flag(0.5, 0.55, 0.1, empty=False) == "within tolerance"
    assert flag(0.5, 0.5501, 0.1, empty=False) == "over target"
    assert flag(0.5, 0.45, 0.1, empty=False) == "within tolerance"
    assert flag(0.5, 0.4499, 0.1, empty=False) == "under target"
    assert flag(0.2, 0.0, 0.0, empty=True) == "under target"
    # A share of 0 (no population figure, "prefer not to say") is never a gap.
    assert flag(0.0, 0.0, 0.0, empty=True) == "no target"
    assert flag(0.0, 0.3, 0.0, empty=False) == "no target"


async def test_population_without_targets_says_so(bot: Bot) -> None:
    async for client in client_for(bot):
        await signed_in(client, bot.db, "admin")
        page = await client.get("/admin/population")
        assert page.status_code == 200
        assert "No population targets are configured" in page.text
        assert "<svg" not in page.text


# -- /admin/decisions ----------------------------------------------------------------------

SURVEY = REPO / "tests" / "data" / "every-type.toml"


class Recorder:
    """A plugin that keeps what panelbot_decision_recorded was handed."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @hookimpl
    def panelbot_decision_recorded(self, decision: dict[str, Any]) -> None:
        self.seen.append(decision)


@pytest.fixture
async def impact_bot(tmp_path: Path) -> AsyncIterator[Bot]:
    """A panel in English and Welsh; three people (one reads Welsh), the two English readers
    answered every-type."""
    instance = await Bot.create(make_settings(tmp_path, bot={"locales": ["en", "cy"]}))
    try:
        chat = Chat(instance)
        for i, language in enumerate(["1", "1", "2"]):  # English, English, Cymraeg
            for text in ("Hello", language, "yes", "1", "1"):
                await chat.say(f"sim:p{i}", text)
        await add_survey(instance, SURVEY)
        await launch(instance, "every-type")
        for i in range(2):
            await chat.say(f"sim:p{i}", "1")
        yield instance
    finally:
        await instance.stop()


@pytest.fixture
async def recorder(impact_bot: Bot) -> Recorder:
    found = Recorder()
    impact_bot.plugins.pm.register(found, name="test-recorder")
    return found


@pytest.fixture
async def impact_client(impact_bot: Bot, recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    async for c in client_for(impact_bot):
        yield c


DECISION = {
    "title": "Evening phone lines",
    "you_said": "Booking by phone is hard in working hours.",
    "we_did": "The booking line now opens until 8pm on weekdays.",
    "surveys": "every-type",
    "finding": "ease",
    "status": "decided",
    "decided_on": "2026-11-30",
    "decided_by": "Trust board",
    "owner": "Director of operations",
    "link": "https://example.org/phones",
}


async def audit_rows(bot: Bot, action: str) -> list[dict[str, Any]]:
    rows = await bot.db.fetchall(
        "SELECT actor, action, detail FROM audit_log WHERE action = ? ORDER BY id", (action,)
    )
    return [dict(r) for r in rows]


async def add_one(bot: Bot, **changes: Any) -> int:
    fields = {k: v for k, v in DECISION.items() if k != "finding"}
    fields.update(changes)
    return int((await decisions.add_decision(bot, **fields))["id"])


@pytest.mark.parametrize("path", ["/admin/decisions", "/admin/decisions/1", "/admin/population"])
async def test_decision_pages_need_a_login(impact_client: httpx.AsyncClient, path: str) -> None:
    answer = await impact_client.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/admin/login")
    # A POST without a session is refused outright.
    assert (await impact_client.post("/admin/decisions", data=DECISION)).status_code == 403


async def test_admin_records_a_decision_linked_to_a_survey(
    impact_bot: Bot, impact_client: httpx.AsyncClient, recorder: Recorder
) -> None:
    csrf = await signed_in(impact_client, impact_bot.db, "admin")
    page = await impact_client.get("/admin/decisions")
    assert page.status_code == 200
    assert "No decisions recorded yet." in page.text
    # The survey multi-select lists the surveys that exist.
    assert '<option value="every-type">every-type: Every question type</option>' in page.text
    answer = await impact_client.post("/admin/decisions", data={**DECISION, "csrf_token": csrf})
    assert answer.status_code == 303, re.findall('role="alert"[^<]*<', answer.text)
    assert answer.headers["location"] == "/admin/decisions/1?done=added"
    stored = await decisions.get(impact_bot.db.conn, 1)
    assert stored is not None
    assert stored["title"] == DECISION["title"]
    assert stored["surveys"] == ["every-type"]
    assert stored["decided_by"] == "Trust board" and stored["owner"] == DECISION["owner"]
    assert stored["finding"]["n"] == 2
    # The hook fired once, for the addition.
    assert [(d["id"], d["change"]) for d in recorder.seen] == [(1, "added")]
    [audit] = await audit_rows(impact_bot, "decision.added")
    assert audit["actor"].startswith("staff:")
    assert '"decision": 1' in audit["detail"]
    # The register lists it, with who decided, the owner and its survey.
    register = (await impact_client.get("/admin/decisions")).text
    # Each linked survey is a link to its page.
    assert '<a href="/admin/surveys/every-type">every-type</a>' in register
    assert (await impact_client.get("/admin/surveys/every-type")).status_code == 200
    listed = text_of(register)
    assert "Evening phone lines (#1) decided Trust board Director of operations every-type" in (
        listed
    )


async def test_a_second_survey_choice_and_none(
    impact_bot: Bot, impact_client: httpx.AsyncClient
) -> None:
    csrf = await signed_in(impact_client, impact_bot.db, "admin")
    data = {**DECISION, "csrf_token": csrf}
    data.pop("surveys")
    data.pop("finding")
    answer = await impact_client.post("/admin/decisions", data=data)
    assert answer.status_code == 303
    stored = await decisions.get(impact_bot.db.conn, 1)
    assert stored is not None and stored["surveys"] == []


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"title": "  "}, "Title: must not be empty"),
        ({"we_did": ""}, "We did: must not be empty"),
        ({"title": "x" * 121}, "Title: at most 120 characters (got 121)"),
        ({"surveys": "nope"}, "Surveys: no survey &#39;nope&#39;"),
        ({"surveys": "a,b"}, "Surveys: choose from the list"),
        ({"decided_on": "30/11/2026"}, "Decided on: &#39;30/11/2026&#39; is not a date"),
        ({"link": "javascript:alert(1)"}, "Link: must be an http:// or https:// address"),
        ({"status": "maybe"}, "Status: one of proposed, decided, implemented"),
        ({"finding": "no_such_question"}, "Finding"),
    ],
)
async def test_bad_decision_input_is_a_400_page_with_the_reason(
    impact_bot: Bot,
    impact_client: httpx.AsyncClient,
    recorder: Recorder,
    change: dict[str, str],
    reason: str,
) -> None:
    csrf = await signed_in(impact_client, impact_bot.db, "admin")
    answer = await impact_client.post(
        "/admin/decisions", data={**DECISION, **change, "csrf_token": csrf}
    )
    assert answer.status_code == 400
    assert 'role="alert"' in answer.text and reason in answer.text
    # What was typed is kept in the form; nothing was stored or announced.
    assert "Booking by phone is hard in working hours." in answer.text
    assert await decisions.all_decisions(impact_bot.db.conn) == []
    assert recorder.seen == []


async def test_viewer_reads_but_cannot_change(
    impact_bot: Bot, impact_client: httpx.AsyncClient
) -> None:
    decision_id = await add_one(impact_bot)
    csrf = await signed_in(impact_client, impact_bot.db, "viewer")
    page = await impact_client.get("/admin/decisions")
    assert page.status_code == 200
    assert "Evening phone lines" in page.text
    assert 'id="decision-form"' not in page.text
    detail = await impact_client.get(f"/admin/decisions/{decision_id}")
    assert detail.status_code == 200 and 'id="schedule-form"' not in detail.text
    for path, data in [
        ("/admin/decisions", DECISION),
        (f"/admin/decisions/{decision_id}/schedule", {"when": "now"}),
        (f"/admin/decisions/{decision_id}/status", {"status": "implemented"}),
    ]:
        answer = await impact_client.post(path, data={**data, "csrf_token": csrf})
        assert answer.status_code == 403
    [stored] = await decisions.all_decisions(impact_bot.db.conn)
    assert stored["status"] == "decided"
    assert await updates.all_updates(impact_bot.db.conn) == []


async def test_post_without_csrf_is_refused(
    impact_bot: Bot, impact_client: httpx.AsyncClient
) -> None:
    await signed_in(impact_client, impact_bot.db, "admin")
    answer = await impact_client.post("/admin/decisions", data=DECISION)
    assert answer.status_code == 403
    assert await decisions.all_decisions(impact_bot.db.conn) == []


async def test_preview_in_every_locale_with_segments_and_cost(
    impact_bot: Bot, impact_client: httpx.AsyncClient
) -> None:
    decision_id = await add_one(impact_bot)
    await signed_in(impact_client, impact_bot.db, "viewer")
    page = await impact_client.get(f"/admin/decisions/{decision_id}")
    assert page.status_code == 200
    text = text_of(page.text)
    # Participants (the two who answered) read English; Welsh is shown too.
    assert "2 people would get it (2 answered its surveys)" in text
    assert "English (en)" in text and "Cymraeg (cy)" in text
    assert re.search(r"GSM-7, \d+ characters, \d+ SMS segments? each", text)
    assert "Estimated cost: £0.00" in text  # the simulator is free
    assert DECISION["we_did"] in page.text
    # Another audience, by the select's query string; a bad one is a 400 with the reason.
    panel = text_of(
        (await impact_client.get(f"/admin/decisions/{decision_id}?audience=panel")).text
    )
    assert "3 people would get it" in panel
    bad = await impact_client.get(f"/admin/decisions/{decision_id}?audience=nobody")
    assert bad.status_code == 400
    assert "Audience: participants, panel or FIELD=VALUE" in bad.text


async def test_unknown_decision_is_404(impact_bot: Bot, impact_client: httpx.AsyncClient) -> None:
    csrf = await signed_in(impact_client, impact_bot.db, "admin")
    assert (await impact_client.get("/admin/decisions/99")).status_code == 404
    answer = await impact_client.post(
        "/admin/decisions/99/schedule", data={"when": "now", "csrf_token": csrf}
    )
    assert answer.status_code == 404


async def test_schedule_then_cancel_with_confirmation(
    impact_bot: Bot, impact_client: httpx.AsyncClient
) -> None:
    decision_id = await add_one(impact_bot)
    csrf = await signed_in(impact_client, impact_bot.db, "admin")
    answer = await impact_client.post(
        f"/admin/decisions/{decision_id}/schedule",
        data={
            "when": "after",
            "after": "2d",
            "audience": "participants",
            "holdout": "10%",
            "follow_up": "every-type",
            "feedback": "on",
            "csrf_token": csrf,
        },
    )
    assert answer.status_code == 303, answer.text
    [update] = await updates.all_updates(impact_bot.db.conn)
    assert update["status"] == "scheduled" and update["decision_id"] == decision_id
    assert update["holdout_share"] == pytest.approx(0.1)
    assert update["follow_up_survey_id"] == "every-type" and update["feedback"] == 1
    due = updates.parse_time(update["due_at"]) - updates.parse_time(update["created_at"])
    assert 47 * 3600 < due.total_seconds() < 49 * 3600
    [audit] = await audit_rows(impact_bot, "impact.scheduled")
    assert f'"update": {update["id"]}' in audit["detail"]
    page = await impact_client.get(answer.headers["location"])
    assert "Update scheduled." in page.text
    rows = rows_of(page.text, "update-table")
    assert rows[0][:4] == [
        str(update["id"]),
        "scheduled",
        update["due_at"][:16].replace("T", " "),
        "participants (10% held out)",
    ]
    # A second one while this waits: refused with I1's reason.
    again = await impact_client.post(
        f"/admin/decisions/{decision_id}/schedule", data={"when": "now", "csrf_token": csrf}
    )
    assert again.status_code == 400
    assert f"already has update {update['id']} scheduled" in again.text
    # Cancel: not without the box ticked.
    cancel = f"/admin/decisions/{decision_id}/updates/{update['id']}/cancel"
    unconfirmed = await impact_client.post(cancel, data={"csrf_token": csrf})
    assert unconfirmed.status_code == 400
    assert "Tick the box to confirm" in unconfirmed.text
    assert (await updates.get_update(impact_bot.db.conn, update["id"]))["status"] == "scheduled"
    done = await impact_client.post(cancel, data={"confirm": "yes", "csrf_token": csrf})
    assert done.status_code == 303
    assert (await updates.get_update(impact_bot.db.conn, update["id"]))["status"] == "cancelled"
    [audit] = await audit_rows(impact_bot, "impact.cancelled")
    assert f'"update": {update["id"]}' in audit["detail"]
    # Cancelling it twice: a 400 with the reason; an update of another decision: 404.
    twice = await impact_client.post(cancel, data={"confirm": "yes", "csrf_token": csrf})
    assert twice.status_code == 400 and "already cancelled" in twice.text
    other = await add_one(impact_bot, title="Another")
    wrong = await impact_client.post(
        f"/admin/decisions/{other}/updates/{update['id']}/cancel",
        data={"confirm": "yes", "csrf_token": csrf},
    )
    assert wrong.status_code == 404


async def test_eight_schedule_posts_at_once_make_one_update(
    impact_bot: Bot, impact_client: httpx.AsyncClient
) -> None:
    decision_id = await add_one(impact_bot)
    csrf = await signed_in(impact_client, impact_bot.db, "admin")
    form = {"when": "after", "after": "1d", "audience": "participants", "csrf_token": csrf}
    answers = await asyncio.gather(
        *[
            impact_client.post(f"/admin/decisions/{decision_id}/schedule", data=form)
            for _ in range(8)
        ]
    )
    assert sorted(a.status_code for a in answers) == [303] + [400] * 7
    [update] = await updates.all_updates(impact_bot.db.conn)
    for answer in answers:
        if answer.status_code == 400:
            assert f"already has update {update['id']} scheduled" in answer.text
    assert len(await audit_rows(impact_bot, "impact.scheduled")) == 1


@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ({"when": "at", "at": ""}, "Date and time: give the date and time to send it"),
        ({"when": "at", "at": "2020-01-01T10:00"}, "is in the past"),
        ({"when": "at", "at": "tomorrow"}, "Date and time: &#39;tomorrow&#39; is not a time"),
        ({"when": "after", "after": ""}, "After: give how long to wait"),
        ({"when": "after", "after": "soon"}, "After:"),
        ({"when": "sometime"}, "When: choose now"),
        ({}, "When: choose now"),  # nothing chosen is not "now"
        ({"when": "at", "at": "now"}, "Date and time: give a date and time, or choose"),
        (
            {"when": "at", "at": "2027-03-28T01:30"},
            "Date and time: 2027-03-28T01:30 does not exist in Europe/London",
        ),
        ({"when": "now", "after": "2d"}, "When: &#34;Now&#34; is chosen but"),
        ({"when": "now", "at": "2030-01-01T10:00"}, "When: &#34;Now&#34; is chosen but"),
        ({"when": "now", "audience": "age_band=200+"}, "Audience:"),
        ({"when": "now", "holdout": "abc"}, "Hold-out: a percentage such as 10%"),
        ({"when": "now", "holdout": "90%"}, "Hold-out: at most 50%"),
        ({"when": "now", "follow_up": "nope"}, "Follow-up survey: no survey"),
    ],
)
async def test_bad_schedule_input_is_a_400_page_with_the_reason(
    impact_bot: Bot, impact_client: httpx.AsyncClient, form: dict[str, str], reason: str
) -> None:
    decision_id = await add_one(impact_bot)
    csrf = await signed_in(impact_client, impact_bot.db, "admin")
    answer = await impact_client.post(
        f"/admin/decisions/{decision_id}/schedule", data={**form, "csrf_token": csrf}
    )
    assert answer.status_code == 400
    assert 'role="alert"' in answer.text and reason in answer.text
    assert await updates.all_updates(impact_bot.db.conn) == []


async def test_a_proposed_decision_cannot_be_scheduled_until_decided(
    impact_bot: Bot, impact_client: httpx.AsyncClient, recorder: Recorder
) -> None:
    decision_id = await add_one(impact_bot, status="proposed")
    csrf = await signed_in(impact_client, impact_bot.db, "admin")
    page = await impact_client.get(f"/admin/decisions/{decision_id}")
    assert 'id="not-tellable"' in page.text and 'id="schedule-form"' not in page.text
    answer = await impact_client.post(
        f"/admin/decisions/{decision_id}/schedule", data={"when": "now", "csrf_token": csrf}
    )
    assert answer.status_code == 400
    assert "is proposed: an update tells the panel what was decided" in answer.text
    # Decided from the page: the hook fires, the change is audited, and it can be scheduled.
    same = await impact_client.post(
        f"/admin/decisions/{decision_id}/status", data={"status": "proposed", "csrf_token": csrf}
    )
    assert same.status_code == 400 and "is already proposed" in same.text
    bad = await impact_client.post(
        f"/admin/decisions/{decision_id}/status", data={"status": "done", "csrf_token": csrf}
    )
    assert bad.status_code == 400 and "Status: one of proposed, decided, implemented" in bad.text
    changed = await impact_client.post(
        f"/admin/decisions/{decision_id}/status", data={"status": "decided", "csrf_token": csrf}
    )
    assert changed.status_code == 303
    assert (await decisions.get(impact_bot.db.conn, decision_id))["status"] == "decided"
    assert [(d["id"], d["change"]) for d in recorder.seen][-1] == (decision_id, "status")
    [audit] = await audit_rows(impact_bot, "decision.status")
    assert '"to": "decided"' in audit["detail"]
    page = await impact_client.get(changed.headers["location"])
    assert "Status changed." in page.text and 'id="schedule-form"' in page.text


async def test_delivery_figures_after_sending(
    impact_bot: Bot, impact_client: httpx.AsyncClient
) -> None:
    decision_id = await add_one(impact_bot)
    update, _ = await updates.schedule(impact_bot, decision_id, at="now")
    await updates.run_update(impact_bot, update["id"])
    await signed_in(impact_client, impact_bot.db, "viewer")
    rows = rows_of(
        (await impact_client.get(f"/admin/decisions/{decision_id}")).text, "update-table"
    )
    # id, status, due, audience, people, queued, sent, delivered, failed
    assert rows[0][1] == "sent" and rows[0][4] == "2"
    assert sum(int(c) for c in rows[0][5:9]) == 2
    listed = text_of((await impact_client.get("/admin/decisions")).text)
    assert f"Update {update['id']}: sent" in listed
    assert "no survey wave has opened since the update went out" in listed
    assert "response to the next wave" not in listed


ONE_QUESTION = """
id = "one-question"
title = "One question"
locales = ["en", "cy"]
intro.en = "One question."
intro.cy = "Un cwestiwn."
thanks.en = "Thanks."
thanks.cy = "Diolch."

[[questions]]
id = "ok"
type = "yesno"
text.en = "Was it all right?"
text.cy = "Oedd e yn iawn?"
"""


async def test_impact_loop_figure_as_a_chart(
    impact_bot: Bot, impact_client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The two who answered get the update; the next wave goes to all three and one of the
    two completes it: 1 of 2 (50%) against 0 of 1, drawn with its text equivalent."""
    decision_id = await add_one(impact_bot)
    update, _ = await updates.schedule(impact_bot, decision_id, at="now")
    await updates.run_update(impact_bot, update["id"])
    survey = tmp_path / "one.toml"
    survey.write_text(ONE_QUESTION, encoding="utf-8")
    await add_survey(impact_bot, survey)
    wave_id = await launch(impact_bot, "one-question")
    # The history the figure is drawn from, as the dispatcher and the engine would leave
    # it (the figure itself is impact_updates.report's, tested there): both messages
    # delivered, and one of their two recipients completing the next wave.
    async with impact_bot.db.transaction() as tx:
        await tx.execute("UPDATE outbox SET status = 'delivered' WHERE kind = 'impact_update'")
        await tx.execute(
            "UPDATE invitations SET status = 'completed' WHERE wave_id = ? AND panellist_id = "
            "(SELECT min(panellist_id) FROM impact_recipients)",
            (wave_id,),
        )
    await signed_in(impact_client, impact_bot.db, "viewer")
    page = (await impact_client.get(f"/admin/decisions/{decision_id}")).text
    title = f"Update {update['id']}: response to the next wave (observational)"
    assert 'role="img"' in page and title in page
    figures = page.split(f"<caption>{title}</caption>", 1)[1].split("</table>", 1)[0]
    cells = [text_of(c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", figures)]
    assert cells == [
        "",
        "Response rate",
        "Note",
        "received the update",
        "50%",
        "1 of 2 invited",
        "did not receive it",
        "0%",
        "0 of 1 invited",
    ]
    assert "a difference of +50.0 points (95% interval" in page
    assert "provisional while the wave is open" in page


async def test_schedule_at_a_local_time(impact_bot: Bot, impact_client: httpx.AsyncClient) -> None:
    """A date and time from the form is the panel's local time (Europe/London by default)."""
    decision_id = await add_one(impact_bot)
    csrf = await signed_in(impact_client, impact_bot.db, "admin")
    answer = await impact_client.post(
        f"/admin/decisions/{decision_id}/schedule",
        data={"when": "at", "at": "2030-07-01T10:00", "audience": "panel", "csrf_token": csrf},
    )
    assert answer.status_code == 303
    [update] = await updates.all_updates(impact_bot.db.conn)
    assert update["due_at"].startswith("2030-07-01T09:00")  # BST is UTC+1
    assert update["audience"] == "panel" and update["feedback"] == 0  # box not ticked


async def test_decision_and_update_ids_beyond_sqlites_integers_are_404(
    impact_bot: Bot, impact_client: httpx.AsyncClient
) -> None:
    decision_id = await add_one(impact_bot)
    csrf = await signed_in(impact_client, impact_bot.db, "admin")
    huge = 2**63  # one past SQLite's largest integer
    for method, path, form in (
        ("GET", f"/admin/decisions/{huge}", {}),
        ("POST", f"/admin/decisions/{huge}/schedule", {"when": "now"}),
        ("POST", f"/admin/decisions/{huge}/status", {"status": "implemented"}),
        ("POST", f"/admin/decisions/{huge}/updates/1/cancel", {"confirm": "yes"}),
        ("POST", f"/admin/decisions/{decision_id}/updates/{huge}/cancel", {"confirm": "yes"}),
    ):
        data = {**form, "csrf_token": csrf} if method == "POST" else None
        answer = await impact_client.request(method, path, data=data)
        assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])


def test_form_error_keeps_quotes_and_names_the_field() -> None:
    # A quote closing a quoted value at the end of the reason is kept.
    assert (
        pages.form_error(updates.UpdateError("--follow-up: no survey 'nope'"))
        == "Follow-up survey: no survey 'nope'"
    )
    assert pages.form_error(KeyError("no such field 'x'")) == "no such field 'x'"
