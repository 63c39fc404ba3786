"""Survey review links: `panelbot survey share`, and the public sandbox it opens over HTTP.

A real SQLite file, the real Starlette app under uvicorn, the real CLI in a subprocess.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from bot.app import Bot
from bot.models import iso, utcnow
from bot.storage import shares as share_store
from bot.web.review import make_share, revoke_share
from tests.conftest import EXAMPLE_SURVEYS, add_survey
from tests.webserver import serving

GP = EXAMPLE_SURVEYS / "gp-access.toml"
# Every table the engine writes as people answer surveys or join the panel.
PANEL_TABLES = (
    "panellists",
    "addresses",
    "survey_sessions",
    "answers",
    "invitations",
    "waves",
    "outbox",
    "inbound_messages",
)


async def _counts(bot: Bot) -> dict[str, int]:
    found = {}
    for table in PANEL_TABLES:
        row = await bot.db.fetchone(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        )
        if row is None:
            continue
        found[table] = (await bot.db.fetchone(f"SELECT COUNT(*) AS n FROM {table}"))["n"]
    return found


def _token(link: str) -> str:
    found = re.search(r"/review/([A-Za-z0-9_-]+)$", link)
    assert found, link
    return found.group(1)


def _state(page: str) -> str:
    found = re.search(r'name="state" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def test_a_link_opens_the_draft_without_login_and_nothing_reaches_the_panel(
    bot: Bot,
) -> None:
    await add_survey(bot, GP)
    link, share_id, _ = await make_share(
        bot, "gp-access-2026", timedelta(days=7), label="Healthwatch", actor="test"
    )
    token = _token(link)
    before = await _counts(bot)
    async with serving(bot, start_bot=False) as base, httpx.AsyncClient(base_url=base) as http:
        page = await http.get(f"/review/{token}")
        assert page.status_code == 200
        assert "Getting a GP appointment" in page.text
        assert "Healthwatch" in page.text
        # Each message with its SMS encoding, segments and cost.
        assert re.search(
            r"SMS: GSM-7, \d+ characters,\s+\d+ segments?, £0\.\d+ per person", page.text
        )
        assert 'id="q-ease"' in page.text
        # Try it: answer the first question with its number, in memory only.
        reply = await http.post(
            f"/review/{token}/try",
            data={"state": _state(page.text), "locale": "en", "reply": "1"},
        )
        assert reply.status_code == 200, reply.text
        assert "You:" in reply.text
        # A reply that fits no option is asked again with the valid replies.
        again = await http.post(
            f"/review/{token}/try",
            data={"state": _state(reply.text), "locale": "en", "reply": "banana"},
        )
        assert again.text.count("banana") == 1
        # A state that was tampered with is refused and the trial starts again.
        forged = await http.post(
            f"/review/{token}/try",
            data={"state": _state(reply.text) + "x", "locale": "en", "reply": "1"},
        )
        assert forged.status_code == 200 and "starts again" in forged.text
        # A comment on a question, with markup that must come back escaped.
        sent = await http.post(
            f"/review/{token}/comments",
            data={
                "question_id": "ease",
                "locale": "en",
                "reviewer": "Healthwatch <b>Leeds</b>",
                "body": "Say which surgery <script>alert(1)</script>",
            },
        )
        assert sent.status_code == 303
        shown = await http.get(sent.headers["location"])
        assert "your comment was saved" in shown.text
        assert "<script>alert(1)</script>" not in shown.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in shown.text
        # An unknown question is refused.
        bad = await http.post(
            f"/review/{token}/comments", data={"question_id": "nope", "body": "x"}
        )
        assert bad.status_code == 400
    assert await _counts(bot) == before
    comments = await share_store.comments_of_survey(bot.db.conn, "gp-access-2026")
    assert [(c["question_id"], c["reviewer"], c["label"]) for c in comments] == [
        ("ease", "Healthwatch <b>Leeds</b>", "Healthwatch")
    ]
    assert share_id == comments[0]["share_id"]


async def test_wrong_expired_and_revoked_links(bot: Bot) -> None:
    await add_survey(bot, GP)
    link, share_id, _ = await make_share(
        bot, "gp-access-2026", timedelta(days=1), label=None, actor="test"
    )
    old, old_id, _ = await make_share(
        bot, "gp-access-2026", timedelta(days=1), label=None, actor="test"
    )
    async with bot.db.transaction() as conn:
        await conn.execute(
            "UPDATE survey_shares SET expires_at = ? WHERE id = ?",
            (iso(utcnow() - timedelta(seconds=1)), old_id),
        )
    async with serving(bot, start_bot=False) as base, httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/review/not-a-token")).status_code == 404
        assert (await http.get(f"/review/{_token(link)}x")).status_code == 404
        assert (await http.get(f"/review/{_token(old)}")).status_code == 410
        expired_post = await http.post(f"/review/{_token(old)}/comments", data={"body": "hi"})
        assert expired_post.status_code == 410
        assert (await http.get(f"/review/{_token(link)}")).status_code == 200
        await revoke_share(bot, "gp-access-2026", share_id, actor="test")
        assert (await http.get(f"/review/{_token(link)}")).status_code == 410
    assert await share_store.comments_of_survey(bot.db.conn, "gp-access-2026") == []


async def test_comments_are_capped_and_rate_limited(bot: Bot) -> None:
    await add_survey(bot, GP)
    link, _, _ = await make_share(
        bot, "gp-access-2026", timedelta(days=1), label=None, actor="test"
    )
    token = _token(link)
    async with serving(bot, start_bot=False) as base, httpx.AsyncClient(base_url=base) as http:
        long = await http.post(
            f"/review/{token}/comments",
            data={"body": "x" * (share_store.MAX_BODY + 1)},
        )
        assert long.status_code == 400 and "at most" in long.text
        empty = await http.post(f"/review/{token}/comments", data={"body": "  "})
        assert empty.status_code == 400
        for i in range(share_store.RATE_LIMIT):
            ok = await http.post(f"/review/{token}/comments", data={"body": f"c{i}"})
            assert ok.status_code == 303
        limited = await http.post(f"/review/{token}/comments", data={"body": "one more"})
        assert limited.status_code == 429
    stored = await share_store.comments_of_survey(bot.db.conn, "gp-access-2026")
    assert len(stored) == share_store.RATE_LIMIT
    assert all(c["question_id"] is None for c in stored)


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "panelbot.toml"
    path.write_text(
        '[bot]\nname = "CLI Panel"\ndatabase = "panel.db"\nquiet_hours = false\n'
        'public_base_url = "https://panel.example.org"\n',
        encoding="utf-8",
    )
    return path


def test_survey_share_cli_prints_a_link_and_revokes_it(config: Path) -> None:
    assert _cli(config, "survey", "add", str(GP)).returncode == 0
    made = _cli(config, "survey", "share", "gp-access-2026", "--expires", "7d", "--label", "HW")
    assert made.returncode == 0, made.stderr
    found = re.fullmatch(
        r"link (\d+) \(until [\d-]+ [\d:]+ UTC\): https://panel\.example\.org/review/([\w-]{40,})\n",
        made.stdout,
    )
    assert found, made.stdout
    revoked = _cli(config, "survey", "share", "gp-access-2026", "--revoke", found.group(1))
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    for args, expected in [
        (("nope",), "no survey 'nope'"),
        (("gp-access-2026", "--expires", "soon"), "--expires: invalid duration"),
        (("gp-access-2026", "--expires", "400d"), "--expires: at most 366d"),
        (("gp-access-2026", "--revoke", found.group(1)), "revoked already"),
        (("gp-access-2026", "--label", "x" * 200), "--label: at most"),
        (("gp-access-2026", "--label", "Health\nwatch"), "--label: one line"),
        (("gp-access-2026", "--label", "Health\rwatch"), "--label: one line"),
        # A terminal escape, C1, a line separator, a bidi override: as refused as NUL/CR/LF.
        (("gp-access-2026", "--label", "HW\x1b[2J"), "--label: one line, without control"),
        (("gp-access-2026", "--label", "HW\x9b"), "--label: one line, without control"),
        (("gp-access-2026", "--label", "Health\u2028watch"), "--label: one line"),
        (("gp-access-2026", "--label", "HW \u202etxet"), "--label: one line, without control"),
    ]:
        result = _cli(config, "survey", "share", *args)
        assert result.returncode == 1, (args, result)
        assert "Traceback" not in result.stderr
        assert expected in result.stderr, (args, result.stderr)
    # --expires or --label with --revoke is a usage error (exit 2), nothing revoked.
    for extra in (("--expires", "30d"), ("--label", "HW")):
        result = _cli(config, "survey", "share", "gp-access-2026", "--revoke", "1", *extra)
        assert result.returncode == 2, result
        assert f"{extra[0]} is for a new link, not with --revoke" in result.stderr
    helped = _cli(config, "survey", "share", "--help")
    assert "at most 366d" in helped.stdout


def test_survey_share_without_a_database_makes_none(tmp_path: Path) -> None:
    path = tmp_path / "panelbot.toml"
    path.write_text('[bot]\ndatabase = "panel.db"\n', encoding="utf-8")
    result = _cli(path, "survey", "share", "gp-access-2026")
    assert result.returncode == 1
    assert result.stderr.startswith("panelbot: no database at"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "panel.db").exists()


async def test_the_draft_in_another_panel_language(tmp_path: Path) -> None:
    from tests.conftest import make_settings

    bot = await Bot.create(make_settings(tmp_path, bot={"locales": ["en", "cy"]}))
    try:
        await add_survey(bot, GP)
        link, _, _ = await make_share(
            bot, "gp-access-2026", timedelta(days=1), label=None, actor="test"
        )
        async with serving(bot, start_bot=False) as base, httpx.AsyncClient(base_url=base) as http:
            welsh = await http.get(f"/review/{_token(link)}?locale=cy")
            assert welsh.status_code == 200
            assert '<option value="cy" selected>Cymraeg (cy)</option>' in welsh.text
            assert "Y tro diwethaf i chi geisio cael apwyntiad" in welsh.text
            # A language the panel does not speak falls back to the default.
            other = await http.get(f"/review/{_token(link)}?locale=xx")
            assert '<option value="en" selected>' in other.text
            assert "The last time you tried to get a GP appointment" in other.text
    finally:
        await bot.stop()


async def test_a_long_trial_keeps_going_and_its_form_always_fits(bot: Bot) -> None:
    """Many long replies: the signed state keeps to its budget (the oldest messages go), so
    the form stays under the server's body cap and every reply gets the page."""
    import random

    from bot.web import limits
    from bot.web.review import MAX_REPLY, STATE_BUDGET

    await add_survey(bot, GP)
    link, _, _ = await make_share(
        bot, "gp-access-2026", timedelta(days=7), label="Long", actor="test"
    )
    token = _token(link)
    letters = "abcdefghijklmnopqrstuvwxyzéüß€✓🙂 "
    pick = random.Random(7)
    async with serving(bot, start_bot=False) as base, httpx.AsyncClient(base_url=base) as http:
        page = await http.get(f"/review/{token}")
        sent = []
        for turn in range(60):
            reply = "".join(pick.choices(letters, k=MAX_REPLY - 1)) + str(turn % 10)
            sent.append(reply.strip())
            state = _state(page.text)
            assert len(state) <= STATE_BUDGET
            page = await http.post(
                f"/review/{token}/try", data={"state": state, "locale": "en", "reply": reply}
            )
            assert page.status_code == 200, (turn, page.text[:200])
            assert page.headers["content-type"].startswith("text/html")
            assert sent[-1] in page.text
        # The oldest replies have been dropped from the transcript.
        assert sent[0] not in page.text
        # A body over the cap (a hand-made one) is answered with a page, not JSON.
        too_big = await http.post(
            f"/review/{token}/try",
            data={"state": "x" * limits.MAX_BODY_BYTES, "locale": "en", "reply": "1"},
        )
        assert too_big.status_code == 413
        assert too_big.headers["content-type"].startswith("text/html")
        assert f'href="/review/{token}"' in too_big.text
