"""Every plugin hook is documented and tested (after Datasette's test_plugin_hooks_*), and
every Python example in docs/plugins.md runs as a local plugin of a real bot."""

from __future__ import annotations

import ast
import inspect
import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot import hookspecs
from bot.app import Bot
from bot.config import dump_toml, load_settings
from bot.engine.waves import launch
from bot.models import (
    Address,
    ErrorClass,
    MessageKind,
    OutboundMessage,
    SendError,
    SendResult,
)
from bot.plugins import HOOK_NAMES
from bot.results import survey_results
from tests.conftest import FIELDS, Chat, add_survey
from tests.staff_login import signed_in
from tests.webserver import serving

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
TESTS = ROOT / "tests"
SURVEY = TESTS / "data" / "every-type.toml"


def documented_hooks() -> dict[str, list[str]]:
    """``### panelbot_name(arg, ...)`` headings in docs/plugins.md: name -> arguments."""
    headings = re.findall(r"^### (panelbot_\w+)\(([^)]*)\)", DOCS.read_text(), re.MULTILINE)
    return {
        name: [arg.strip() for arg in args.split(",") if arg.strip()] for name, args in headings
    }


def test_every_hookspec_is_exported_and_known_to_the_manager() -> None:
    # pluggy marks a spec with the attribute "<project>_spec".
    specs = {name for name, obj in vars(hookspecs).items() if hasattr(obj, "panelbot_spec")}
    exported = {name for name in hookspecs.__all__ if name.startswith("panelbot_")}
    assert specs == exported == set(HOOK_NAMES)


@pytest.mark.parametrize("hook_name", HOOK_NAMES)
def test_plugin_hooks_are_documented(hook_name: str) -> None:
    spec = getattr(hookspecs, hook_name)
    assert inspect.getdoc(spec), f"{hook_name} has no docstring in bot/hookspecs.py"
    params = list(inspect.signature(spec).parameters)
    for param in params:
        assert f":param {param}:" in spec.__doc__, f"{hook_name}: no ':param {param}:' line"

    documented = documented_hooks()
    assert hook_name in documented, f"docs/plugins.md has no '### {hook_name}(' section"
    assert documented[hook_name] == params, (
        f"docs/plugins.md heading for {hook_name} lists {documented[hook_name]}, "
        f"the hookspec takes {params}"
    )


def test_docs_describe_no_hook_that_does_not_exist() -> None:
    assert set(documented_hooks()) <= set(HOOK_NAMES)


def hook_tests() -> set[str]:
    """Names of every ``test_hook_*`` function anywhere under tests/."""
    names = set()
    for path in TESTS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            is_function = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_function and node.name.startswith("test_hook_"):
                names.add(node.name)
    return names


def test_plugin_hooks_have_tests() -> None:
    tests = hook_tests()
    wanted = [f"test_hook_{name.removeprefix('panelbot_')}" for name in HOOK_NAMES]
    missing = [name for name in wanted if name not in tests]
    assert not missing, "hooks without a test; write these test functions: " + ", ".join(missing)


# -- every Python example in docs/plugins.md runs, as a plugin of a real bot -------------------

LOCAL_PREFIX = "panelbot_local_plugins"
DOC_FIELDS = [
    *FIELDS,
    {"name": "locality", "values": ["inside area", "outside area"]},
]
# What the examples' own settings ask for ([plugins.hello]).
HELLO_TOKEN = "a-long-enough-test-token"


@dataclass
class Example:
    heading: str
    code: str

    @property
    def name(self) -> str:
        """A plugin name from the heading: "panelbot_startup(bot)" -> "doc_startup"."""
        hook = re.match(r"panelbot_(\w+)\(", self.heading)
        words = [hook.group(1)] if hook else re.findall(r"[a-z0-9]+", self.heading.lower())
        return "doc_" + "_".join(words)


def python_examples() -> list[Example]:
    """Each fenced python block in docs/plugins.md, with the heading it sits under."""
    examples, heading, block = [], "", None
    for line in DOCS.read_text().splitlines():
        if block is None and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif block is None and line.strip() == "```python":
            block = []
        elif block is not None and line.strip() == "```":
            examples.append(Example(heading, "\n".join(block) + "\n"))
            block = None
        elif block is not None:
            block.append(line)
    return examples


EXAMPLES = python_examples()


def test_the_docs_have_an_example_for_every_hook() -> None:
    defined = set()
    for example in EXAMPLES:
        defined |= set(re.findall(r"^(?:async )?def (panelbot_\w+)\(", example.code, re.M))
    assert defined == set(HOOK_NAMES)


def test_examples_import_bot_only_through_the_plugin_api() -> None:
    for example in EXAMPLES:
        if "import panelbot_welsh" in example.code:
            continue  # the test of a plugin, not a plugin: it builds a plugin manager
        imported = set(re.findall(r"^\s*(?:from|import) (bot[\w.]*)", example.code, re.M))
        assert imported <= {"bot.plugin_api"}, (example.heading, imported)


def plugin_templates(example: Example) -> list[tuple[str, str, str]]:
    """The html blocks docs/plugins.md gives under the example's heading, each introduced
    as ``plugins.d/<folder>/templates/<name>.html``: (folder, name, text)."""
    text = DOCS.read_text()
    start = text.find("\n## " + example.heading + "\n")
    if start < 0 or "render_page(" not in example.code:
        return []
    section = text[start + 1 :]
    section = section[: section.find("\n## ", 1)]
    found = re.findall(
        r"`plugins\.d/(\w+)/templates/([\w.]+)`[^`]*?```html\n(.*?)```", section, re.S
    )
    assert found, f"{example.heading}: no template given for render_page"
    return found


def write_panel(tmp_path: Path, example: Example) -> Path:
    """A panel whose plugins.d holds the example as a local plugin; returns its config."""
    folder = tmp_path / "plugins.d"
    (folder / "messages" / "en").mkdir(parents=True)
    (folder / "messages" / "en" / "welcome.txt.j2").write_text(
        "Hi from the doc plugin for {{ panel_name }}!"
    )
    (folder / f"{example.name}.py").write_text(example.code)
    if "def panelbot_migrations(" in example.code:
        # Its migrations beside it (plugins.d/<name>/), as the example says.
        (folder / example.name).mkdir()
        (folder / example.name / "0001_create_places.sql").write_text(
            "CREATE TABLE places_taken (panellist_id INTEGER PRIMARY KEY);\n"
        )
    for folder_name, template, html in plugin_templates(example):
        (folder / folder_name / "templates").mkdir(parents=True, exist_ok=True)
        (folder / folder_name / "templates" / template).write_text(html)
    multilingual = re.search(r"def panelbot_(locales|resolve_locale)\(", example.code)
    config = tmp_path / "panelbot.toml"
    config.write_text(
        dump_toml(
            {
                "bot": {
                    "name": "Doc Panel",
                    "database": "panel.db",
                    "quiet_hours": False,
                    # A language menu only where the example is about languages.
                    "locales": ["en", "cy", "pl"] if multilingual else ["en"],
                },
                "panel": {"fields": DOC_FIELDS},
                "channels": {"simulator": {"enabled": True}},
                "plugins": {
                    "directories": ["plugins.d"],
                    "hello": {"greeting": "Shwmae", "token": {"env": "HELLO_TOKEN"}},
                },
            }
        )
    )
    return config


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANELBOT_")}
    env["HELLO_TOKEN"] = HELLO_TOKEN
    return subprocess.run(
        [sys.executable, "-m", "bot", "-c", str(config), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def outbound(address: Address, text: str) -> OutboundMessage:
    return OutboundMessage(1, address, text, MessageKind.REPLY, None, "doc-1")


def implemented(bot: Bot, name: str) -> list[str]:
    [info] = [info for info in bot.plugins.describe() if info.name == name]
    return info.hooks


async def join(chat: Chat, address: str, age: int, sex: int = 1, locality: int = 1) -> str:
    """Sign up through the engine; the last reply."""
    replies = await chat.join(address, (str(age), str(sex), str(locality)))
    return replies[-1] if replies else ""


async def answer_survey(bot: Bot, chat: Chat, people: dict[str, str]) -> None:
    """every-type launched to everyone; each person answers the first question as given."""
    await add_survey(bot, SURVEY)
    await launch(bot, "every-type")
    for address, first in people.items():
        for reply in (first, "5", "yes", "2", "fine"):
            await chat.say(address, reply)


async def probe_routes(bot: Bot, example: Example) -> list[Any]:
    """What the example's routes answer, anonymously and to signed-in staff."""
    seen: list[Any] = []
    async with serving(bot, start_bot=False) as base:
        async with httpx.AsyncClient(base_url=base) as client:
            if example.name == "doc_register_routes":
                seen.append((await client.get("/admin/hello")).status_code)
                seen.append((await client.get("/hello/version")).json())
                await signed_in(client, bot.db, "viewer")
                seen.append((await client.get("/admin/hello")).json())
                return seen
            seen.append((await client.get("/admin/tally")).status_code)
            token = await signed_in(client, bot.db, "admin")
            page = await client.get("/admin/tally")
            seen.append(("Count: 0" in page.text, 'href="/admin/tally"' in page.text))
            seen.append((await client.post("/admin/tally", data={"step": "2"})).status_code)
            added = await client.post("/admin/tally", data={"step": "2", "csrf_token": token})
            seen.append(added.status_code)
            bad = await client.post("/admin/tally", data={"step": "x", "csrf_token": token})
            seen.append(bad.status_code)
            seen.append("Count: 2" in (await client.get("/admin/tally")).text)
        async with httpx.AsyncClient(base_url=base) as viewer:
            token = await signed_in(viewer, bot.db, "viewer")
            refused = await viewer.post("/admin/tally", data={"step": "1", "csrf_token": token})
            seen.append(refused.status_code)
    return seen


async def drive_hooks(bot: Bot, example: Example, hooks: list[str]) -> dict[str, Any]:
    """Make the core call each hook the example implements; what it saw, per hook."""
    module = sys.modules[f"{LOCAL_PREFIX}.{example.name}"]
    chat = Chat(bot)
    seen: dict[str, Any] = {}
    if "panelbot_locales" in hooks:
        seen["locales"] = list(bot.locales)
    if "panelbot_message_dirs" in hooks:
        [seen["welcome"]] = await chat.say("sim:first", "hello")
    if "panelbot_resolve_locale" in hooks:
        # "Welsh": a word the translations plugin's own guess does not take for Welsh.
        await chat.say("sim:second", "Welsh")
        row = await bot.db.fetchone(
            "SELECT p.locale FROM panellists p JOIN addresses a ON a.panellist_id = p.id "
            "WHERE a.address = 'second'"
        )
        seen["second_locale"] = row["locale"]
    if "panelbot_screen_signup" in hooks:
        seen["inside"] = await join(chat, "sim:inside", 3, locality=1)
        seen["outside"] = await join(chat, "sim:outside", 3, locality=2)
    if "panelbot_select_sample" in hooks:
        for address, age in (("sim:young", 1), ("sim:old", 6), ("sim:oldest", 7)):
            await join(chat, address, age)
        await add_survey(bot, SURVEY)
        await launch(bot, "every-type")
        rows = await bot.db.fetchall(
            "SELECT a.address FROM invitations i "
            "JOIN addresses a ON a.panellist_id = i.panellist_id"
        )
        seen["invited"] = sorted(r["address"] for r in rows)
    if "panelbot_before_send" in hooks:
        for channel, to in (("sms", "+447700900123"), ("sim", "ada")):
            message = outbound(Address(channel, to), "It’s your turn")
            sent = await bot.plugins.call_chain(
                "panelbot_before_send", "message", bot=bot, message=message
            )
            seen[f"before_send_{channel}"] = sent.text
    if "panelbot_after_send" in hooks:
        message = outbound(Address("sms", "+447700900123"), "Hi")
        for report in (SendResult("SM1", cost_units=2), SendError(ErrorClass.PERMANENT, "no")):
            await bot.plugins.call_each(
                "panelbot_after_send", bot=bot, message=message, report=report
            )
        seen["sends"] = dict(module.SENDS)
    if "panelbot_survey_completed" in hooks or "panelbot_results_weights" in hooks:
        await join(chat, "sim:old", 7)
        await join(chat, "sim:young", 2)
        await answer_survey(bot, chat, {"sim:old": "1", "sim:young": "3"})
        data = await survey_results(bot, "every-type", weighted="panelbot_results_weights" in hooks)
        seen["shares"] = {o["id"]: o["percent"] for o in data["questions"][0]["options"]}
    if "panelbot_register_routes" in hooks:
        seen["routes"] = await probe_routes(bot, example)
    if "panelbot_migrations" in hooks:
        seen["plugin_versions"] = await bot.db.plugin_versions()
        seen["places"] = await bot.db.fetchall("SELECT * FROM places_taken")
    if "panelbot_handle_reply" in hooks:
        await join(chat, "sim:grateful", 3)
        seen["replies"] = [(await chat.say("sim:grateful", text))[0] for text in ("Thanks", "hi")]
    if "panelbot_register_jobs" in hooks:
        job = bot.scheduler.aps.get_job("hello:weekly-digest")
        await job.func(*job.args)  # the job itself runs, not only its registration
        seen["job"] = str(job.trigger)
    return seen


# What each example, called by the core, is documented to do.
EXPECTED: dict[str, dict[str, Any]] = {
    "doc_locales": {"locales": ["en", "cy"]},
    "doc_message_dirs": {
        "welcome": lambda text: text.startswith("Hi from the doc plugin for Doc Panel!")
    },
    "doc_resolve_locale": {"second_locale": "cy"},
    "doc_select_sample": {"invited": ["old", "oldest"]},
    "doc_before_send": {
        "before_send_sms": "It's your turn",
        "before_send_sim": "It’s your turn",
    },
    "doc_after_send": {"sends": {"segments": 2, "send_error.permanent": 1}},
    # 75+ weighs 0.10 * 2 / 1 = 0.2, the other 1.0: "easy" is 0.2 / 1.2 of the answers.
    "doc_results_weights": {"shares": {"easy": 16.7, "ok": 0.0, "hard": 83.3}},
    "doc_survey_completed": {"shares": {"easy": 50.0, "ok": 0.0, "hard": 50.0}},
    # Behind the login (303 to it), the public route open, a viewer signed in reads it.
    "doc_register_routes": {
        "routes": [303, {"panel": "Doc Panel"}, {"hello": "world", "role": "viewer"}]
    },
    # The page in the layout with its menu entry; a POST without the CSRF token 403, with
    # it 303; a bad step 400; the count kept; a viewer's POST 403.
    "doc_dashboard_pages": {"routes": [303, (True, True), 403, 303, 400, True, 403]},
    "doc_handle_reply": {
        "replies": lambda replies: (
            replies[0] == "Thank you! You have answered 0 surveys with us."
            and "Thank you!" not in replies[1]
        )
    },
    "doc_register_jobs": {"job": lambda trigger: "day_of_week='mon'" in trigger},
    # The built-in plugins' own versions sit beside the example's.
    "doc_migrations": {"plugin_versions": lambda v: v.get("doc_migrations") == 1, "places": []},
    "doc_screen_signup": {
        "inside": lambda reply: "you have joined" in reply,
        "outside": lambda reply: "not taking new members" in reply,
    },
}
# What the examples that add commands print.
COMMANDS = {
    "doc_a_plugin_in_five_minutes": (["hello"], "Hello from a plugin\n"),
    "doc_register_commands": (["hello", "count"], "0 panellists\n"),
}


def test_every_expectation_names_an_example() -> None:
    names = {example.name for example in EXAMPLES}
    assert set(EXPECTED) <= names and set(COMMANDS) <= names


def _matches(expected: Any, actual: Any) -> bool:
    return expected(actual) if callable(expected) else expected == actual


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda example: example.name)
async def test_doc_example_runs(
    example: Example,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if "import panelbot_welsh" in example.code:
        # "Testing a plugin": the welsh plugin is the panelbot_resolve_locale example.
        [welsh] = [e for e in EXAMPLES if e.heading.startswith("panelbot_resolve_locale(")]
        (tmp_path / "panelbot_welsh.py").write_text(welsh.code)
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "panelbot_welsh", raising=False)
        namespace: dict[str, Any] = {}
        exec(compile(example.code, "docs/plugins.md", "exec"), namespace)
        [test] = [v for k, v in namespace.items() if k.startswith("test_")]
        await test()
        return

    config = write_panel(tmp_path, example)
    monkeypatch.setenv("HELLO_TOKEN", HELLO_TOKEN)
    listed = run_cli(config, "plugins", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    [entry] = [e for e in json.loads(listed.stdout) if e["name"] == example.name]
    assert entry["source"] == f"local file {tmp_path / 'plugins.d' / example.name}.py"

    if example.name in COMMANDS:
        args, output = COMMANDS[example.name]
        result = run_cli(config, *args)
        assert (result.returncode, result.stdout) == (0, output), result.stderr

    bot = await Bot.create(load_settings(config))
    hooks = implemented(bot, example.name)
    assert hooks == entry["hooks"]
    with caplog.at_level(logging.INFO):
        try:
            await bot.start()
            seen = await drive_hooks(bot, example, hooks)
            heartbeat = bot.state.get("heartbeat")
            running_before_stop = heartbeat is not None and not heartbeat.done()
        finally:
            await bot.stop()

    failures = [r.getMessage() for r in caplog.records if "failed in" in r.getMessage()]
    assert failures == [], failures
    for key, expected in EXPECTED.get(example.name, {}).items():
        assert _matches(expected, seen[key]), (key, seen[key])
    if "panelbot_shutdown" in hooks:
        assert running_before_stop  # started by panelbot_startup
        assert "heartbeat" not in bot.state and heartbeat.cancelled()
    if example.name == "doc_a_plugin_in_five_minutes":
        assert "hello plugin started for Doc Panel" in caplog.text


# -- what the docs and --help say about features that are not there ----------------------------


async def test_weighted_results_without_population_targets_say_so(settings: Any) -> None:
    from bot.results import ResultsError

    bot = await Bot.create(settings)  # every built-in plugin enabled
    try:
        await add_survey(bot, SURVEY)
        with pytest.raises(ResultsError) as raised:
            await survey_results(bot, "every-type", weighted=True)
    finally:
        await bot.stop()
    message = str(raised.value)
    # The quotas plugin is enabled but has no [plugins.quotas.population.*] to weight to.
    assert "no plugin provides weights for this panel" in message
    assert "[plugins.quotas.population.<field>] and has none" in message
    assert "panelbot_results_weights" in message
    assert "enable" not in message

    help_text = run_cli(ROOT / "config.example.toml", "survey", "results", "--help").stdout
    assert "the quotas plugin rakes them to [plugins.quotas.population.*]" in " ".join(
        help_text.split()
    )


def test_the_stratify_by_option_is_offered_where_it_is_built() -> None:
    # survey launch --stratify-by is built (issue 12; tests/test_wave_samples.py drives it):
    # the README, the hook's documentation and --help all offer it.
    assert "--stratify-by F1,F2" in (ROOT / "README.md").read_text()
    assert "--stratify-by" in inspect.getdoc(hookspecs.panelbot_select_sample)
    assert "stratify_by" in DOCS.read_text()
    launch_help = run_cli(ROOT / "config.example.toml", "survey", "launch", "--help")
    assert launch_help.returncode == 0 and "--stratify-by" in launch_help.stdout


def test_the_docs_say_what_protects_plugin_routes_today() -> None:
    # The login in front of plugin routes exists (tests/test_admin_auth.py drives it).
    text = " ".join(DOCS.read_text().split())
    assert "Every route a plugin adds is behind the staff dashboard's login" in text
    assert "Nothing protects plugin routes yet." not in text
