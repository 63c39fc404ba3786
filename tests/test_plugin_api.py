"""bot.plugin_api: the one module plugins import, and the contracts that keep it so."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bot import plugin_api
from bot.config import Settings
from bot.plugin_api import Bot as BotProtocol
from bot.plugin_api import JobScheduler
from tests.conftest import REPO, Chat

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_every_public_name_resolves() -> None:
    for name in plugin_api.__all__:
        assert getattr(plugin_api, name) is not None, name


async def test_a_real_bot_has_every_member_the_protocol_promises(settings: Settings) -> None:
    from bot.app import Bot

    bot = await Bot.create(settings)
    try:
        assert isinstance(bot, BotProtocol)
        assert isinstance(bot.scheduler, JobScheduler)
        members = [name for name in BotProtocol.__annotations__ if not name.startswith("_")]
        assert members == ["settings", "db", "messages", "locales", "state", "scheduler"]
        for name in members:
            assert hasattr(bot, name), name
    finally:
        await bot.stop()


async def test_render_message_is_what_the_engine_sends(settings: Settings) -> None:
    from bot.app import Bot

    bot = await Bot.create(settings)
    try:
        [welcome] = await Chat(bot).say("sim:ada", "hello")
        rendered = plugin_api.render_message(bot, "welcome", "en", panel_name="Test Panel")
        assert welcome.startswith(rendered.splitlines()[0])
    finally:
        await bot.stop()


def test_sms_info_measures_as_the_channel_does() -> None:
    plain = plugin_api.sms_info("a" * 161)
    assert (plain.encoding, plain.segments) == ("GSM-7", 2)
    assert plain.cost(0.04) == 0.08
    welsh = plugin_api.sms_info("Shwmae ŵ")
    assert welsh.encoding == "UCS-2" and welsh.non_gsm == ("ŵ",)
    assert plugin_api.sanitise("it’s") == "it's"


def test_importing_the_api_does_not_load_the_web_framework_or_the_database_driver() -> None:
    # Every CLI command loads every plugin, so this import is on the path of `panelbot --help`.
    code = (
        "import sys, bot.plugin_api\n"
        "print(sorted(m for m in ('starlette', 'aiosqlite', 'twilio') if m in sys.modules))\n"
        "from bot.plugin_api import Route, Transaction\n"
        "print(Route.__module__, Transaction.__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == ["[]", f"starlette.routing {_tx_name()}"]


def _tx_name() -> str:
    return plugin_api.Transaction.__name__


def _copy_tree(target: Path) -> None:
    for name in ("bot", "plugins"):
        shutil.copytree(REPO / name, target / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", target / "pyproject.toml")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_hold_and_each_catches_a_violation(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    kept = _lint_imports(tmp_path)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "Contracts: 3 kept, 0 broken." in kept.stdout

    # A plugin reaching past the API (in a TYPE_CHECKING block: those count), bot importing
    # a plugin, and a lower layer importing an upper one.
    with (tmp_path / "plugins" / "quotas" / "__init__.py").open("a") as f:
        f.write("\nif TYPE_CHECKING:\n    from bot.models import Address\n")
    with (tmp_path / "bot" / "demo.py").open("a") as f:
        f.write("\nimport plugins.quotas\n")
    with (tmp_path / "bot" / "sms.py").open("a") as f:
        f.write("\nfrom bot.engine import conversation\n")

    broken = _lint_imports(tmp_path)
    assert broken.returncode == 1
    assert "Contracts: 0 kept, 3 broken." in broken.stdout
    assert "plugins.quotas -> bot.models" in broken.stdout
    assert "bot.demo -> plugins.quotas" in broken.stdout
    assert "bot.sms -> bot.engine.conversation" in broken.stdout
