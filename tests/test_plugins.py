"""The plugin manager: loading, disabling, describing, and calling hooks safely."""

from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from bot.cli import cli as root_cli
from bot.cli import plugins_cmd
from bot.hookspecs import hookimpl
from bot.plugins import (
    BUILTIN_PLUGINS,
    SOURCE_BUILTIN_ENTRY_POINT,
    SOURCE_BUILTIN_TREE,
    SOURCE_REGISTERED,
    PanelPlugins,
    PluginLoadError,
    load_plugins,
)

SAMPLE_PACKAGE = Path(__file__).parent / "sample_plugin" / "panelbot_sample_plugin"
BOT = object()  # hooks are handed the bot; the manager never looks inside it


class Locale:
    """A plugin answering panelbot_resolve_locale with a fixed value (or None)."""

    def __init__(self, answer: str | None, calls: list[str] | None = None) -> None:
        self.answer = answer
        self.calls = calls if calls is not None else []

    @hookimpl
    def panelbot_resolve_locale(self, bot: Any, panellist: Any, text: str) -> str | None:
        self.calls.append(self.answer or "none")
        return self.answer


class AsyncLocale(Locale):
    @hookimpl
    async def panelbot_resolve_locale(self, bot: Any, panellist: Any, text: str) -> str | None:
        self.calls.append(self.answer or "none")
        return self.answer


class Broken:
    @hookimpl
    def panelbot_resolve_locale(self, bot: Any, panellist: Any, text: str) -> str:
        raise RuntimeError("boom")


def manager(*plugins: tuple[str, object]) -> PanelPlugins:
    """A manager with no built-ins, the given plugins registered in this order."""
    pm = PanelPlugins()
    for name, plugin in plugins:
        pm.register(plugin, name)
    return pm


def locale_kwargs(text: str = "hello") -> dict[str, Any]:
    return {"bot": BOT, "panellist": None, "text": text, "tx": None}


# -- loading and describing -------------------------------------------------------------


def test_builtin_plugins_load_from_the_source_tree_and_are_described() -> None:
    infos = {info.name: info for info in load_plugins(entry_points=False).describe()}

    assert set(infos) == set(BUILTIN_PLUGINS)
    for name, info in infos.items():
        assert info.source == SOURCE_BUILTIN_TREE
        assert info.module == f"plugins.{name}"
        assert "panelbot_startup" in info.hooks
        assert info.enabled


def test_disabling_a_builtin_removes_it_and_lists_it_as_disabled() -> None:
    plugins = load_plugins(["quotas"], entry_points=False)

    assert plugins.pm.get_plugin("quotas") is None
    assert "quotas" not in [info.name for info in plugins.describe()]
    assert plugins.disabled == ["quotas"]
    disabled = [info for info in plugins.describe(include_disabled=True) if not info.enabled]
    assert [(info.name, info.hooks) for info in disabled] == [("quotas", [])]


def test_disabling_an_unknown_name_is_a_warning_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="bot.plugins"):
        plugins = load_plugins(["no_such_plugin"], entry_points=False)

    assert {info.name for info in plugins.describe()} == set(BUILTIN_PLUGINS)
    assert "no plugin named 'no_such_plugin' to disable" in caplog.text


def test_describe_names_the_source_of_each_plugin() -> None:
    plugins = load_plugins(entry_points=False)
    plugins.register(Locale("cy"), "welsh")
    sources = {info.name: info.source for info in plugins.describe()}

    assert sources["welsh"] == SOURCE_REGISTERED
    assert sources["quotas"] == SOURCE_BUILTIN_TREE
    assert plugins.hook_names()[0] == "panelbot_startup"
    import bot.hookspecs as specs

    assert sorted(plugins.hook_names()) == sorted(
        n for n in specs.__all__ if n.startswith("panelbot_")
    )


def test_a_misspelt_hook_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    class Typo:
        @hookimpl
        def panelbot_startpu(self, bot: Any) -> None: ...

    plugins = manager(("typo", Typo()))
    with caplog.at_level(logging.WARNING, logger="bot.plugins"):
        plugins.check_hooks()
    assert "plugin typo implements panelbot_startpu, which is not a panelbot hook" in caplog.text


# -- calling hooks ----------------------------------------------------------------------


async def test_an_exception_in_one_plugin_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugins = manager(("first", Locale("en")), ("broken", Broken()), ("last", Locale("cy")))

    with caplog.at_level(logging.ERROR, logger="bot.plugins"):
        results = await plugins.call_each("panelbot_resolve_locale", **locale_kwargs())

    # pluggy's call order is the reverse of registration.
    assert results == [("last", "cy"), ("first", "en")]
    [record] = caplog.records
    assert record.getMessage() == "plugin broken failed in panelbot_resolve_locale"
    assert record.exc_info is not None and "boom" in str(record.exc_info[1])


async def test_async_and_sync_implementations_are_both_awaited() -> None:
    plugins = manager(("sync", Locale("en")), ("async", AsyncLocale("cy")))

    results = await plugins.call_each("panelbot_resolve_locale", **locale_kwargs())

    assert results == [("async", "cy"), ("sync", "en")]


async def test_an_async_implementation_that_raises_is_isolated_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class AsyncBroken:
        @hookimpl
        async def panelbot_resolve_locale(self, text: str) -> str:
            raise ValueError(text)

    plugins = manager(("ok", Locale("pl")), ("async_broken", AsyncBroken()))

    assert await plugins.call_first("panelbot_resolve_locale", **locale_kwargs()) == "pl"
    assert "plugin async_broken failed in panelbot_resolve_locale" in caplog.text


async def test_call_first_returns_the_first_non_none_and_stops_there() -> None:
    calls: list[str] = []
    plugins = manager(
        ("never", Locale("ur", calls)),
        ("welsh", AsyncLocale("cy", calls)),
        ("silent", Locale(None, calls)),
    )

    assert await plugins.call_first("panelbot_resolve_locale", **locale_kwargs()) == "cy"
    assert calls == ["none", "cy"]  # "never" was not called


async def test_call_first_is_none_when_no_plugin_answers() -> None:
    plugins = manager(("silent", Locale(None)))
    assert await plugins.call_first("panelbot_resolve_locale", **locale_kwargs()) is None
    assert await manager().call_first("panelbot_resolve_locale", **locale_kwargs()) is None


async def test_an_implementation_may_take_fewer_arguments_than_the_hook() -> None:
    class TextOnly:
        @hookimpl
        def panelbot_resolve_locale(self, text: str) -> str | None:
            return "cy" if "bore da" in text.lower() else None

    class NoArguments:
        @hookimpl
        def panelbot_resolve_locale(self) -> str:
            return "en"

    plugins = manager(("fallback", NoArguments()), ("welsh", TextOnly()))

    assert await plugins.call_first("panelbot_resolve_locale", **locale_kwargs("Bore da")) == "cy"
    assert await plugins.call_first("panelbot_resolve_locale", **locale_kwargs("Hi")) == "en"


async def test_call_chain_passes_each_change_to_the_next_plugin() -> None:
    class Shout:
        @hookimpl
        def panelbot_before_send(self, message: str) -> str:
            return message.upper()

    class Sign:
        @hookimpl
        async def panelbot_before_send(self, message: str) -> str:
            return message + " - NHS"

    class Leave:
        @hookimpl
        def panelbot_before_send(self, message: str) -> None:
            return None

    plugins = manager(("sign", Sign()), ("leave", Leave()), ("shout", Shout()))

    sent = await plugins.call_chain("panelbot_before_send", "message", bot=BOT, message="hi")
    assert sent == "HI - NHS"


async def test_calling_a_hook_with_the_wrong_arguments_is_a_core_error() -> None:
    plugins = manager(("welsh", Locale("cy")))
    with pytest.raises(TypeError, match="panelbot_resolve_locale takes"):
        await plugins.call_each("panelbot_resolve_locale", bot=BOT, text="hi")
    with pytest.raises(ValueError, match="no plugin hook named 'panelbot_nope'"):
        await plugins.call_first("panelbot_nope", bot=BOT)


def test_call_each_sync_rejects_an_async_implementation() -> None:
    class AsyncDirs:
        @hookimpl
        async def panelbot_message_dirs(self, bot: Any) -> list[Path]:
            return []

    plugins = manager(("async_dirs", AsyncDirs()))
    with pytest.raises(TypeError, match="async_dirs implements panelbot_message_dirs as async"):
        plugins.call_each_sync("panelbot_message_dirs", bot=BOT)


def test_call_each_sync_isolates_errors(caplog: pytest.LogCaptureFixture) -> None:
    class Dirs:
        @hookimpl
        def panelbot_message_dirs(self) -> list[Path]:
            return [Path("extra")]

    class BrokenDirs:
        @hookimpl
        def panelbot_message_dirs(self) -> list[Path]:
            raise OSError("gone")

    plugins = manager(("dirs", Dirs()), ("broken_dirs", BrokenDirs()))

    assert plugins.call_each_sync("panelbot_message_dirs", bot=BOT) == [("dirs", [Path("extra")])]
    assert "plugin broken_dirs failed in panelbot_message_dirs" in caplog.text


# -- plugin commands --------------------------------------------------------------------


def cli_with(plugins: PanelPlugins) -> click.Group:
    """The real root ``panelbot`` group, copied so the test does not change the global one."""
    group = copy.copy(root_cli)
    group.commands = {}
    plugins_cmd.register(group)
    plugins_cmd.register_plugin_commands(group, plugins)
    return group


def test_hook_register_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SAMPLE_PACKAGE.parent))
    sample = importlib.import_module("panelbot_sample_plugin")
    cli = cli_with(manager(("sample", sample)))
    runner = CliRunner()

    help_result = runner.invoke(cli, ["--help"], prog_name="panelbot")
    assert help_result.exit_code == 0, help_result.output
    assert "sample" in help_result.output
    assert "Commands added by the sample plugin." in help_result.output

    result = runner.invoke(cli, ["sample", "hello", "Ada"], prog_name="panelbot")
    assert result.exit_code == 0, result.output
    assert result.output == "Hello, Ada, from the sample plugin\n"


def test_a_plugin_cannot_replace_a_core_command(caplog: pytest.LogCaptureFixture) -> None:
    class Hijack:
        @hookimpl
        def panelbot_register_commands(self, cli: click.Group) -> None:
            cli.add_command(click.Command("plugins", callback=lambda: click.echo("hijacked")))

    cli = cli_with(manager(("hijack", Hijack())))

    result = CliRunner().invoke(cli, ["plugins", "--help"], prog_name="panelbot")
    assert "hijacked" not in result.output
    assert "list" in result.output
    assert "a plugin tried to replace the core command 'plugins'" in caplog.text


# -- a third-party plugin through its real entry point ----------------------------------


def install_sample_plugin(site: Path) -> None:
    """What pip would leave behind: the package and its .dist-info with an entry point."""
    shutil.copytree(
        SAMPLE_PACKAGE,
        site / SAMPLE_PACKAGE.name,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    info = site / "panelbot_sample_plugin-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: panelbot_sample_plugin\nVersion: 0.1.0\n"
    )
    (info / "entry_points.txt").write_text("[panelbot.plugins]\nsample = panelbot_sample_plugin\n")


def run_panelbot(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PANELBOT_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(cwd), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def listed_plugins(cwd: Path) -> dict[str, dict[str, Any]]:
    result = run_panelbot(cwd, "plugins", "list", "--format", "json")
    assert result.returncode == 0, result.stderr
    return {entry["name"]: entry for entry in json.loads(result.stdout)}


def test_a_third_party_plugin_is_loaded_from_its_entry_point(tmp_path: Path) -> None:
    install_sample_plugin(tmp_path)

    listed = listed_plugins(tmp_path)

    assert listed["sample"] == {
        "name": "sample",
        "status": "enabled",
        "source": "entry point panelbot.plugins from panelbot_sample_plugin 0.1.0",
        "hooks": ["panelbot_startup", "panelbot_register_commands"],
        "module": "panelbot_sample_plugin",
    }
    # The built-ins come through the same entry point group, from panelbot's own metadata.
    for name in BUILTIN_PLUGINS:
        assert listed[name]["source"] == SOURCE_BUILTIN_ENTRY_POINT
        assert listed[name]["status"] == "enabled"


def test_plugins_list_prints_an_aligned_table(tmp_path: Path) -> None:
    install_sample_plugin(tmp_path)

    result = run_panelbot(tmp_path, "plugins", "list")

    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["NAME", "STATUS", "SOURCE", "HOOKS"]
    [sample] = [row for row in rows if row.startswith("sample ")]
    assert "entry point panelbot.plugins from panelbot_sample_plugin 0.1.0" in sample
    assert sample.endswith("startup, register_commands")
    assert {row.index("enabled") for row in rows} == {header.index("STATUS")}


def test_a_third_party_plugin_disabled_in_config_is_not_loaded(tmp_path: Path) -> None:
    pytest.importorskip("bot.config", reason="bot.config (reading [plugins] disabled) not written")
    install_sample_plugin(tmp_path)
    (tmp_path / "panelbot.toml").write_text('[plugins]\ndisabled = ["sample"]\n')

    listed = listed_plugins(tmp_path)

    assert listed["sample"]["status"] == "disabled"
    assert listed["sample"]["hooks"] == []  # never imported, so no hooks registered
    assert listed["sample"]["source"].endswith("from panelbot_sample_plugin 0.1.0")
    assert listed["quotas"]["status"] == "enabled"


def test_a_plugin_that_fails_to_import_is_named_in_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "panelbot_broken.py").write_text('raise RuntimeError("needs a licence key")\n')
    info = tmp_path / "panelbot_broken-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: panelbot_broken\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text("[panelbot.plugins]\nbroken = panelbot_broken\n")

    result = run_panelbot(tmp_path, "plugins", "list")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "panelbot: plugin 'broken' (panelbot_broken, entry point panelbot.plugins from "
        "panelbot_broken 2.0) failed to load: RuntimeError: needs a licence key"
    )


async def test_a_hook_wrapper_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Wrapper:
        @hookimpl(wrapper=True)
        def panelbot_resolve_locale(self) -> Any:
            return (yield)

    plugins = manager(("wrapper", Wrapper()), ("welsh", Locale("cy")))
    with caplog.at_level(logging.WARNING, logger="bot.plugins"):
        plugins.check_hooks()

    assert "plugin wrapper: hook wrappers are not supported" in caplog.text
    assert await plugins.call_each("panelbot_resolve_locale", **locale_kwargs()) == [
        ("welsh", "cy")
    ]


# -- local plugin directories ([plugins] directories) ------------------------------------

HELLO_FILE = '''
import click

from bot.plugin_api import hookimpl


@hookimpl
def panelbot_register_commands(cli):
    @cli.command("hello-local")
    def hello():
        """Say hello from a local plugin."""
        click.echo("Hello from plugins.d")


@hookimpl
def panelbot_resolve_locale(text):
    return "cy" if "shwmae" in text.lower() else None
'''


def local_panel(tmp_path: Path, files: dict[str, str], extra: str = "") -> Path:
    """A config beside a plugins.d folder holding ``files``; returns the config path."""
    folder = tmp_path / "plugins.d"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    config = tmp_path / "panel" / "panelbot.toml"
    config.parent.mkdir()
    # Relative to the config file, not to where the command runs.
    config.write_text(f'[plugins]\ndirectories = ["../plugins.d"]\n{extra}')
    return config


def test_a_local_plugin_file_is_loaded_and_listed_with_its_path(tmp_path: Path) -> None:
    config = local_panel(tmp_path, {"hello.py": HELLO_FILE, "notes.txt": "not a plugin"})
    path = (tmp_path / "panel" / ".." / "plugins.d" / "hello.py").resolve()

    result = run_panelbot(tmp_path, "-c", str(config), "plugins", "list", "--format", "json")

    assert result.returncode == 0, result.stderr
    listed = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert set(listed) == {*BUILTIN_PLUGINS, "hello"}
    hello = listed["hello"]
    assert hello["status"] == "enabled"
    assert Path(hello["source"].removeprefix("local file ")).resolve() == path
    assert hello["source"].startswith("local file ")
    assert hello["hooks"] == ["panelbot_register_commands", "panelbot_resolve_locale"]
    assert hello["module"] == "panelbot_local_plugins.hello"

    table = run_panelbot(tmp_path, "-c", str(config), "plugins", "list")
    [row] = [row for row in table.stdout.splitlines() if row.startswith("hello ")]
    assert "local file " in row and row.endswith("register_commands, resolve_locale")

    # Its command is there, as an installed plugin's would be.
    said = run_panelbot(tmp_path, "-c", str(config), "hello-local")
    assert (said.returncode, said.stdout) == (0, "Hello from plugins.d\n"), said.stderr


async def test_a_local_plugin_takes_part_in_hooks(tmp_path: Path) -> None:
    (tmp_path / "welsh.py").write_text(HELLO_FILE)
    plugins = load_plugins(entry_points=False, directories=[tmp_path])

    assert await plugins.call_first("panelbot_resolve_locale", **locale_kwargs("Shwmae")) == "cy"
    [info] = [info for info in plugins.describe() if info.name == "welsh"]
    assert info.source == f"local file {tmp_path / 'welsh.py'}"


def test_a_local_plugin_can_be_disabled_and_is_then_never_run(tmp_path: Path) -> None:
    config = local_panel(
        tmp_path,
        {"hello.py": HELLO_FILE, "boom.py": 'raise RuntimeError("never imported")\n'},
        extra='disabled = ["boom"]\n',
    )

    listed = {
        entry["name"]: entry
        for entry in json.loads(
            run_panelbot(tmp_path, "-c", str(config), "plugins", "list", "--format", "json").stdout
        )
    }

    assert listed["boom"]["status"] == "disabled"
    assert listed["boom"]["source"].startswith("local file ")
    assert listed["boom"]["source"].endswith("boom.py")
    assert listed["hello"]["status"] == "enabled"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('raise RuntimeError("needs a licence key")\n', "RuntimeError: needs a licence key"),
        ("def broken(:\n", "SyntaxError: "),
        ("import panelbot_no_such_module\n", "ModuleNotFoundError: "),
        (
            "from bot.plugin_api import hookimpl\n\n@hookimpl\n"
            "def panelbot_startup(bot, extra):\n    pass\n",
            "PluginValidationError: ",
        ),
    ],
)
def test_a_broken_local_file_is_one_line_naming_it(tmp_path: Path, text: str, reason: str) -> None:
    config = local_panel(tmp_path, {"quota_check.py": text})

    for command in (["plugins", "list"], ["config", "check"], ["serve"]):
        result = run_panelbot(tmp_path, "-c", str(config), *command)

        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith("panelbot: plugin 'quota_check' (local file "), line
        assert f"quota_check.py) failed to load: {reason}" in line


def test_a_local_file_named_like_a_loaded_plugin_is_refused(tmp_path: Path) -> None:
    (tmp_path / "quotas.py").write_text("")
    with pytest.raises(
        PluginLoadError,
        match=r"plugin 'quotas' \(local file .*quotas.py\): a "
        r"plugin named 'quotas' is already loaded \(built-in",
    ):
        load_plugins(entry_points=False, directories=[tmp_path])


def test_two_local_files_with_one_name_are_refused(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.py").write_text("")
    with pytest.raises(PluginLoadError, match="plugin 'same' is in two local files"):
        load_plugins(entry_points=False, directories=[tmp_path / "a", tmp_path / "b"])


def test_a_missing_plugins_directory_is_a_config_problem_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "panelbot.toml").write_text('[plugins]\ndirectories = ["plugins.d"]\n')

    result = run_panelbot(tmp_path, "config", "check")

    assert result.returncode == 1
    assert f"plugins.directories: no folder at {tmp_path / 'plugins.d'}" in result.stderr


def test_a_plugin_reads_its_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.config import load_settings

    config = tmp_path / "panelbot.toml"
    config.write_text(
        '[plugins.hello]\ngreeting = "Shwmae"\n'
        'api = { key = { env = "HELLO_API_KEY" }, urls = [{ env = "HELLO_URL" }] }\n'
    )
    plugins = load_settings(config).plugins
    monkeypatch.setenv("HELLO_API_KEY", "k-123")
    monkeypatch.setenv("HELLO_URL", "https://hello.example")

    assert plugins.for_plugin("hello") == {
        "greeting": "Shwmae",
        "api": {"key": "k-123", "urls": ["https://hello.example"]},
    }
    assert plugins.config["hello"]["api"]["key"] == {"env": "HELLO_API_KEY"}  # as written
    monkeypatch.delenv("HELLO_URL")
    with pytest.raises(ValueError, match=r"plugins.hello.api.urls\[0\]: environment variable "):
        plugins.for_plugin("hello")


def test_a_local_file_loaded_twice_in_one_process_is_one_module(tmp_path: Path) -> None:
    # The command line loads plugins, then the bot does: the file runs once.
    (tmp_path / "once.py").write_text(
        "from pathlib import Path\n\n"
        "with Path(__file__).with_suffix('.runs').open('a') as f:\n"
        "    f.write('ran\\n')\n"
    )
    first = load_plugins(entry_points=False, directories=[tmp_path]).pm.get_plugin("once")
    second = load_plugins(entry_points=False, directories=[tmp_path]).pm.get_plugin("once")

    assert first is second
    assert (tmp_path / "once.runs").read_text() == "ran\n"
