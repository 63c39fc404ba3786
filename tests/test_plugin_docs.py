"""Every plugin hook is documented and tested (after Datasette's test_plugin_hooks_*)."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from bot import hookspecs
from bot.plugins import HOOK_NAMES

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "plugins.md"
TESTS = ROOT / "tests"


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
