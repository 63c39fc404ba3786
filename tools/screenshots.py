"""Screenshots of the staff dashboard on the demo panel, for the README: `make screenshots`.

Runs `panelbot demo` in a throwaway folder, has about half of its example panel answer the
demo survey through the simulator (seeded, so every run draws the same answers), leaves two
reviewers' comments through a review link, signs a staff account in with headless Chromium
(Debian's /usr/bin/chromium, driven by Playwright) and saves each main page at 1280x800
into docs/screenshots/<page>.png, with the palette reduced when Pillow is installed (the
PNGs stay small enough to commit). A page that does not answer 200 is skipped and named.

Usage: python tools/screenshots.py [--out DIR] [--port N]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZE = {"width": 1280, "height": 800}
EMAIL = "screenshots@example.org"
SURVEY = "gp-access-2026"
LABEL = ("--label", "Healthwatch Northvale")
DECISION = (
    *("--title", "Phone lines open from 7.30am", "--surveys", SURVEY),
    *("--you-said", "Getting through on the phone at 8am was the hardest part."),
    *("--we-did", "Practices in Northvale open their phone lines at 7.30am from March."),
    *("--by", "Northvale ICB primary care committee", "--decided-on", "2026-11-20"),
)
RESPONDENTS = 130
COMMENTS = [
    "I waited 40 minutes on the phone and then all the appointments had gone.",
    "The online form asks for too much before you can book anything.",
    "My surgery was very good, I got seen the same day.",
    "Could not get through on the phone line at 8am for a week.",
    "More evening appointments please, I work during the day.",
    "The receptionist was helpful but there were no slots for two weeks.",
    "Needed an interpreter and it took longer to arrange.",
]


def write_demo_config(data: Path, port: int) -> None:
    """The demo's own config (``panelbot demo`` keeps a config it finds), letting this
    script start more simulator conversations a minute than a browser may."""
    from bot.config import dump_toml
    from bot.demo import demo_config

    config = demo_config(port)
    config["channels"]["simulator"]["new_identities_per_minute"] = 1000
    data.mkdir(parents=True)
    (data / "panelbot.toml").write_text(dump_toml(config), encoding="utf-8")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(base: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"panelbot demo exited {process.returncode}")
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("panelbot demo did not answer /healthz in time")


def pick_reply(question: Any, rng: random.Random) -> tuple[str, Any]:
    """A reply a panellist might send to ``question``, and the value it records."""
    kind = question.type.value
    if kind == "choice":
        # Earlier options a little more often: the chart then has a shape.
        weights = [len(question.options) - i + 1 for i in range(len(question.options))]
        index = rng.choices(range(len(question.options)), weights=weights)[0]
        if question.id == "ease":
            index = rng.choices(range(len(question.options)), weights=[2, 4, 5, 4, 1])[0]
        return str(index + 1), question.options[index].id
    if kind == "multi":
        picked = sorted(rng.sample(range(len(question.options)), rng.randint(1, 2)))
        return " ".join(str(i + 1) for i in picked), [question.options[i].id for i in picked]
    if kind == "yesno":
        value = "yes" if rng.random() < 0.6 else "no"
        return value, value
    if kind == "scale":
        value = rng.randint(int(question.min), int(question.max))
        return str(value), value
    if kind == "number":
        value = min(int(question.max or 60), int(rng.expovariate(1 / 8)))
        return str(value), value
    text = rng.choice(COMMENTS)
    return text, text


def answer_survey(base: str, rng: random.Random) -> int:
    """Link panellists to the simulator and answer the open demo wave; how many finished."""
    from bot.surveys.loader import load_survey_file

    survey = load_survey_file(REPO / "examples" / "surveys" / "gp-access.toml")
    finished = 0
    with httpx.Client(base_url=base, timeout=30) as http:
        people = http.get("/simulator/api/identities").json()["identities"]
        ids = [p["panellist_id"] for p in people if "panellist_id" in p]
        for panellist_id in rng.sample(ids, min(RESPONDENTS, len(ids))):
            linked = http.post("/simulator/api/identities", json={"panellist_id": panellist_id})
            if linked.status_code != 200:
                continue
            address = linked.json()["address"]
            answers: dict[str, Any] = {}
            question = survey.first_question({})
            while question is not None:
                text, value = pick_reply(question, rng)
                sent = http.post("/simulator/api/messages", json={"from": address, "text": text})
                if sent.status_code != 200:
                    break
                answers[question.id] = value
                question = survey.next_question(question.id, answers)
            finished += question is None
    return finished


def add_staff(database: Path, password: str) -> None:
    from bot import staff as staff_rules
    from bot.storage import Database

    async def go() -> None:
        db = await Database.open(database, migrate=False)
        try:
            await staff_rules.add(db, EMAIL, "admin", password, actor="screenshots")
        finally:
            await db.close()

    asyncio.run(go())


def review_link(config: Path, base: str) -> str:
    made = subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), "survey", "share", SURVEY, *LABEL],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    path = re.search(r"(/review/\S+)", made.stdout)
    if path is None:
        raise SystemExit(f"survey share printed no link: {made.stdout} {made.stderr}")
    for question, body in [
        ("ease", "Add 'I gave up trying' as an option: many people do."),
        ("why_hard", "Several people we speak to cannot use the phone at 8am because of work."),
    ]:
        httpx.post(
            base + path.group(1) + "/comments",
            data={"question_id": question, "body": body, "reviewer": "Healthwatch Northvale"},
            timeout=30,
        )
    return path.group(1)


def record_decision(config: Path) -> None:
    """A decision citing the survey, for the board summary (impact_updates plugin)."""
    decided = subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), "decision", "add", *DECISION],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if decided.returncode != 0:
        print(f"  no decision recorded: {decided.stderr.strip()}")


def compress(path: Path) -> None:
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
        small.save(path, optimize=True)


def shoot(base: str, password: str, pages: list[tuple[str, str]], out: Path) -> list[str]:
    from playwright.sync_api import sync_playwright

    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport=SIZE).new_page()
            page.goto(base + "/admin/login")
            page.get_by_label("Email").fill(EMAIL)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name=re.compile("sign in", re.I)).click()
            page.wait_for_url(re.compile(r"/admin$"))
            for name, path in pages:
                response = page.goto(base + path)
                if response is None or response.status != 200:
                    status = response.status if response else "no answer"
                    print(f"  skipped {name}: {path} answered {status}")
                    continue
                target = out / f"{name}.png"
                page.screenshot(path=str(target))
                if name == "board-summary":
                    page.emulate_media(media="print")
                    pdf = page.pdf(format="A4", print_background=True)
                    sheets = len(re.findall(rb"/Type\s*/Page[^s]", pdf))
                    print(f"  board summary prints on {sheets} A4 page(s)")
                    page.emulate_media(media="screen")
                compress(target)
                saved.append(f"{target.relative_to(REPO)} ({target.stat().st_size // 1024} KB)")
        finally:
            browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    rng = random.Random(14)
    password = secrets.token_urlsafe(18)
    with tempfile.TemporaryDirectory(prefix="panelbot-screenshots-") as tmp:
        data = Path(tmp) / "demo"
        write_demo_config(data, port)
        log = (Path(tmp) / "demo.log").open("wb")
        demo = subprocess.Popen(
            [sys.executable, "-m", "bot", "demo", "--port", str(port), "--data-dir", str(data)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        try:
            wait_healthy(base, demo)
            print(f"demo on {base}; {answer_survey(base, rng)} panellists answered {SURVEY}")
            add_staff(data / "panelbot.db", password)
            review = review_link(data / "panelbot.toml", base)
            record_decision(data / "panelbot.toml")
            with sqlite3.connect(f"file:{data / 'panelbot.db'}?mode=ro", uri=True) as db:
                wave = db.execute("SELECT MIN(id) FROM waves").fetchone()[0]
            pages = [
                ("overview", "/admin"),
                ("surveys", "/admin/surveys"),
                ("survey-results", f"/admin/surveys/{SURVEY}#results"),
                ("survey-by-age", f"/admin/surveys/{SURVEY}?by=age_band#results"),
                ("board-summary", f"/admin/surveys/{SURVEY}/waves/{wave}/summary"),
                ("review-link", review),
                ("panellists", "/admin/panellists"),
                ("population", "/admin/population"),
                ("decisions", "/admin/decisions"),
                ("messages", "/admin/messages"),
                ("audit", "/admin/audit"),
            ]
            for line in shoot(base, password, pages, out):
                print(f"  {line}")
        finally:
            demo.terminate()
            try:
                demo.wait(timeout=15)
            except subprocess.TimeoutExpired:
                demo.kill()
            log.close()


if __name__ == "__main__":
    main()
