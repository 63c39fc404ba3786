"""The dashboard's overview, panellists and audit pages, and `panelbot staff`, for real:
a real SQLite file, the real app over HTTP, the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bot import staff
from bot.app import Bot
from bot.panel import import_parsed
from bot.panel_csv import parse_panel_csv
from tests.conftest import REPO, Chat
from tests.staff_login import signed_in
from tests.webserver import serving

PHONE = "+447400100101"


@pytest.fixture
async def base(bot: Bot) -> AsyncIterator[str]:
    chat = Chat(bot)
    await chat.join("sim:ada", ("2", "1"))
    await chat.join("sim:bob", ("7", "2"))
    await chat.say("sim:bob", "STOP")
    parsed = parse_panel_csv(
        f"phone,locale,consent_at,age_band,sex\n{PHONE},en,2026-01-05,45-54,female\n".encode(),
        bot.settings,
    )
    report = await import_parsed(bot.db, bot.hash_key, bot.settings, parsed)
    assert report.added == 1
    async with serving(bot, start_bot=False) as url:
        yield url


@pytest.fixture
async def admin(base: str, bot: Bot) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    async with httpx.AsyncClient(base_url=base) as client:
        token = await signed_in(client, bot.db, "admin")
        yield client, token


async def test_overview_counts_the_panel_and_draws_signups(
    admin: tuple[httpx.AsyncClient, str],
) -> None:
    client, _ = admin
    page = await client.get("/admin")
    assert page.status_code == 200
    text = page.text
    assert '<span class="figure">2</span> on the panel (active)' in text
    assert '<span class="figure">1</span> opted out' in text
    # The chart with its text equivalent; this week's sign-ups (2, through the chat) counted.
    assert "<svg" in text and "Sign-ups per week" in text
    assert "<table" in text and "Joined that week" in text
    assert "No wave is open." in text
    # The replies the engine queued are not sent yet: nothing accepted this month.
    assert "<strong>0</strong>, costing <strong>£0.00</strong>" in text


async def test_look_up_by_phone_show_and_export(
    admin: tuple[httpx.AsyncClient, str], bot: Bot
) -> None:
    client, token = admin
    # Any format of the number; a POST, so the number is never in a URL.
    found = await client.post(
        "/admin/panellists", data={"who": "07400 100101", "csrf_token": token}
    )
    assert found.status_code == 303
    target = found.headers["location"]
    assert PHONE not in target and target.startswith("/admin/panellists/")
    pid = int(target.rsplit("/", 1)[1])
    page = await client.get(target)
    assert page.status_code == 200
    assert PHONE in page.text and "45-54" in page.text and "Erase this person" in page.text
    download = await client.get(f"{target}/export.json")
    assert download.status_code == 200
    assert download.headers["content-disposition"] == f'attachment; filename="panellist-{pid}.json"'
    assert json.loads(download.text)["addresses"][0]["address"] == PHONE
    missing = await client.post("/admin/panellists", data={"who": "99999", "csrf_token": token})
    assert missing.status_code == 404 and "No panellist matches" in missing.text
    nonsense = await client.post("/admin/panellists", data={"who": "", "csrf_token": token})
    assert nonsense.status_code == 400
    assert (await client.get("/admin/panellists/99999999999999999999")).status_code == 404
    rows = await bot.db.fetchall("SELECT actor, action, panellist_id, detail FROM audit_log")
    mine = [(r["action"], r["panellist_id"]) for r in rows if r["actor"].startswith("staff:")]
    assert ("staff.panellist_viewed", pid) in mine and ("staff.panellist_exported", pid) in mine
    assert not any(PHONE in (r["detail"] or "") for r in rows)
    # Each look-up is audited by its outcome only, never with what was typed.
    looked = [
        (r["panellist_id"], json.loads(r["detail"]))
        for r in rows
        if r["action"] == "staff.panellist_looked_up"
    ]
    assert looked == [(pid, {"found": True}), (None, {"found": False})]
    assert not any("99999" in (r["detail"] or "") or "07400" in r["detail"] for r in rows)


async def test_erase_needs_the_id_typed_again(
    admin: tuple[httpx.AsyncClient, str], bot: Bot
) -> None:
    client, token = admin
    row = await bot.db.fetchone("SELECT panellist_id FROM addresses WHERE address = ?", (PHONE,))
    pid = row["panellist_id"]
    confirm = await client.get(f"/admin/panellists/{pid}/erase")
    assert confirm.status_code == 200 and 'name="confirm"' in confirm.text
    wrong = await client.post(
        f"/admin/panellists/{pid}/erase", data={"confirm": str(pid + 1), "csrf_token": token}
    )
    assert wrong.status_code == 400
    assert (await bot.db.fetchone("SELECT status FROM panellists WHERE id = ?", (pid,)))[0] == (
        "active"
    )
    no_token = await client.post(f"/admin/panellists/{pid}/erase", data={"confirm": str(pid)})
    assert no_token.status_code == 403
    done = await client.post(
        f"/admin/panellists/{pid}/erase", data={"confirm": str(pid), "csrf_token": token}
    )
    assert done.status_code == 200 and f"erased panellist {pid}" in done.text
    person = await bot.db.fetchone("SELECT status FROM panellists WHERE id = ?", (pid,))
    assert person["status"] == "erased"
    assert await bot.db.fetchone("SELECT 1 FROM addresses WHERE address = ?", (PHONE,)) is None
    erased = await bot.db.fetchone(
        "SELECT actor FROM audit_log WHERE action = 'erased' AND panellist_id = ?", (pid,)
    )
    assert erased["actor"].startswith("staff:")


async def test_viewers_look_up_but_cannot_erase_or_read_the_audit_log(base: str, bot: Bot) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        token = await signed_in(client, bot.db, "viewer")
        found = await client.post("/admin/panellists", data={"who": PHONE, "csrf_token": token})
        assert found.status_code == 303
        pid = int(found.headers["location"].rsplit("/", 1)[1])
        page = await client.get(found.headers["location"])
        assert page.status_code == 200 and "Erase this person" not in page.text
        assert (await client.get(f"/admin/panellists/{pid}/erase")).status_code == 403
        refused = await client.post(
            f"/admin/panellists/{pid}/erase", data={"confirm": str(pid), "csrf_token": token}
        )
        assert refused.status_code == 403
        assert (await client.get("/admin/audit")).status_code == 403
        assert 'href="/admin/audit"' not in page.text  # not in a viewer's menu
    person = await bot.db.fetchone("SELECT status FROM panellists WHERE id = ?", (pid,))
    assert person["status"] == "active"


async def test_admins_read_the_audit_log(admin: tuple[httpx.AsyncClient, str]) -> None:
    client, _ = admin
    page = await client.get("/admin/audit")
    assert page.status_code == 200
    assert '<a href="/admin/audit" aria-current="page">Audit log</a>' in page.text
    assert "staff.login" in page.text and "admin@example.org" in page.text
    only_logins = await client.get("/admin/audit", params={"action": "staff.login"})
    assert "staff.added" not in only_logins.text.split("<tbody>")[1]
    assert (await client.get("/admin/audit", params={"page": "x' OR 1"})).status_code == 200


async def test_a_removed_accounts_id_is_never_given_again(
    admin: tuple[httpx.AsyncClient, str], bot: Bot
) -> None:
    """The audit log names staff by id: a new account must not inherit a removed one's
    entries."""
    client, _ = admin
    old_id, _ = await staff.add(bot.db, "old@example.org", "viewer", "a long enough password")
    await bot.db.execute_write(
        "INSERT INTO audit_log (at, actor, action, detail) VALUES (?, ?, 'test.marker', '{}')",
        ("2026-01-01T00:00:00+00:00", f"staff:{old_id}"),
    )
    await staff.remove(bot.db, "old@example.org")
    new_id, _ = await staff.add(bot.db, "new@example.org", "viewer", "a long enough password")
    assert new_id != old_id
    page = await client.get("/admin/audit", params={"action": "test.marker"})
    body = page.text.split("<tbody>")[1].split("</tbody>")[0]
    assert f"staff:{old_id}" in body and "new@example.org" not in body


def panelbot(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_staff_commands(tmp_path: Path) -> None:
    config = tmp_path / "panelbot.toml"
    config.write_text('[bot]\ndatabase = "panel.db"\n')
    ok = panelbot(
        config,
        "staff",
        "add",
        "lead@example.org",
        "--role",
        "admin",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == "staff 1 lead@example.org (admin) added\n"
    again = panelbot(
        config,
        "staff",
        "add",
        "LEAD@example.org",
        "--role",
        "viewer",
        "--password-stdin",
        stdin="another long password\n",
    )
    assert again.returncode == 1
    assert again.stderr == (
        "panelbot: LEAD@example.org already has an account; "
        "use --reset-password to set a new password\n"
    )
    short = panelbot(
        config,
        "staff",
        "add",
        "x@example.org",
        "--role",
        "viewer",
        "--password-stdin",
        stdin="short\n",
    )
    assert (short.returncode, short.stderr) == (
        1,
        "panelbot: the password must be at least 12 characters\n",
    )
    bad = panelbot(
        config,
        "staff",
        "add",
        "not-an-email",
        "--role",
        "viewer",
        "--password-stdin",
        stdin="a long enough password\n",
    )
    assert (bad.returncode, bad.stderr) == (1, "panelbot: not an email address: 'not-an-email'\n")
    role = panelbot(config, "staff", "add", "x@example.org", "--role", "boss")
    assert role.returncode == 2
    reset = panelbot(
        config,
        "staff",
        "add",
        "lead@example.org",
        "--role",
        "viewer",
        "--reset-password",
        "--password-stdin",
        stdin="a brand new password\n",
    )
    assert reset.returncode == 0 and "updated" in reset.stdout
    listed = json.loads(panelbot(config, "staff", "list", "--format", "json").stdout)
    assert [(s["email"], s["role"]) for s in listed] == [("lead@example.org", "viewer")]
    assert "argon2" not in json.dumps(listed)
    removed = panelbot(config, "staff", "remove", "lead@example.org")
    assert removed.returncode == 0
    gone = panelbot(config, "staff", "remove", "lead@example.org")
    assert (gone.returncode, gone.stderr) == (1, "panelbot: no account for 'lead@example.org'\n")


async def test_messages_matrix_from_the_translations_plugin(
    admin: tuple[httpx.AsyncClient, str], base: str
) -> None:
    client, _ = admin
    page = await client.get("/admin/messages")
    assert page.status_code == 200
    assert 'href="/admin/messages"' in page.text  # its menu entry
    head = page.text.split("<thead>")[1].split("</thead>")[0]
    assert '<abbr title="Cymraeg">cy</abbr>' in head or ">cy</abbr>" in head
    assert '<th scope="row">welcome</th>' in page.text
    assert "segment" in page.text
    async with httpx.AsyncClient(base_url=base) as anonymous:
        assert (await anonymous.get("/admin/messages")).status_code == 303


async def test_overview_prices_this_months_messages(
    admin: tuple[httpx.AsyncClient, str], bot: Bot
) -> None:
    from bot.models import iso, utcnow
    from bot.sms import encode_info, sanitise

    client, _ = admin
    rows = await bot.db.fetchall("SELECT id, text FROM outbox ORDER BY id LIMIT 3")
    now = iso(utcnow())
    # As if the first two went by SMS and the third by the simulator, all accepted now.
    for row, channel in zip(rows, ("sms", "sms", "sim"), strict=True):
        await bot.db.execute_write(
            "UPDATE outbox SET channel = ?, status = 'sent', sent_at = ? WHERE id = ?",
            (channel, now, row["id"]),
        )
    segments = sum(encode_info(sanitise(r["text"])).segments for r in rows[:2])
    cost = segments * bot.settings.channels.twilio.sms_price_per_segment
    page = (await client.get("/admin")).text
    assert f"<strong>3</strong>, costing <strong>£{cost:.2f}</strong>" in page
    sms_row = page.split('<th scope="row">SMS</th>')[1].split("</tr>")[0]
    assert f'<td class="num">2</td><td class="num">{segments}</td>' in sms_row


async def test_overview_lists_open_waves(admin: tuple[httpx.AsyncClient, str], bot: Bot) -> None:
    from bot.engine.waves import launch
    from tests.conftest import add_survey

    client, _ = admin
    await add_survey(bot, REPO / "tests" / "data" / "every-type.toml")
    wave = await launch(bot, "every-type")
    page = (await client.get("/admin")).text
    assert "No wave is open." not in page
    row = page.split('<a href="/admin/surveys/every-type">')[1].split("</tr>")[0]
    assert f"<td>{wave}</td>" in row
    invited = await bot.db.fetchone(
        "SELECT COUNT(*) AS n FROM invitations WHERE wave_id = ?", (wave,)
    )
    assert f'<td class="num">{invited["n"]}</td>' in row and invited["n"] == 2
