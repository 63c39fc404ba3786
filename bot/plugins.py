"""The plugin manager: built-in plugins, installed ones (entry points) and local files.

Built-in plugins (``plugins/quotas`` and friends) are declared in pyproject.toml under the
entry point group ``panelbot.plugins``, exactly as a third party would declare theirs, and
are loaded by the same call. Only when running from a source tree without an install are
they imported directly. ``bot/`` never imports ``plugins/`` by name anywhere else.

Local plugins need no packaging: every ``.py`` file in a folder named in ``[plugins]
directories`` is loaded as a plugin named after the file (``plugins.d/quota_check.py`` is
the plugin ``quota_check``), as Datasette's ``--plugins-dir`` does. A file that fails to
load is one line naming it (:class:`PluginLoadError`).

pluggy calls hooks synchronously and stops at the first exception, so the core never calls
``pm.hook.<name>(...)`` itself: it goes through ``PanelPlugins``, which calls each
implementation on its own, awaits what is awaitable and isolates a failing plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pluggy
from pluggy import HookImpl

from bot import hookspecs

if TYPE_CHECKING:
    from bot.config import Settings

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "panelbot.plugins"
BUILTIN_PLUGINS: tuple[str, ...] = ("quotas", "translations", "impact_updates")
CORE_DISTRIBUTION = "panelbot"

# Every hook, in the order hookspecs.py defines them (used for stable listings).
HOOK_NAMES: tuple[str, ...] = tuple(
    name for name in vars(hookspecs) if name.startswith("panelbot_")
)

SOURCE_BUILTIN_ENTRY_POINT = f"built-in (entry point {ENTRY_POINT_GROUP})"
SOURCE_BUILTIN_TREE = "built-in (source tree)"
SOURCE_REGISTERED = "registered in code"
SOURCE_LOCAL_FILE = "local file"  # followed by the file's path
# Local plugin files are imported as modules of this (otherwise empty) package name.
LOCAL_MODULE_PREFIX = "panelbot_local_plugins"


class PluginLoadError(Exception):
    """An entry point could not be imported or registered; the message says which."""


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What ``panelbot plugins list`` shows about one plugin."""

    name: str
    source: str
    hooks: list[str] = field(default_factory=list)
    module: str = ""
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class _EntryPoint:
    """An entry point found in installed metadata, whether or not it was loaded."""

    name: str
    value: str
    distribution: str
    version: str

    @property
    def source(self) -> str:
        if _normalise(self.distribution) == CORE_DISTRIBUTION:
            return SOURCE_BUILTIN_ENTRY_POINT
        return f"entry point {ENTRY_POINT_GROUP} from {self.distribution} {self.version}"


def _normalise(distribution: str) -> str:
    return distribution.lower().replace("_", "-").replace(".", "-")


def _scan_entry_points() -> dict[str, _EntryPoint]:
    """Entry points of our group by name; the first distribution wins, as in pluggy."""
    found: dict[str, _EntryPoint] = {}
    for dist in importlib.metadata.distributions():
        for ep in dist.entry_points:
            if ep.group == ENTRY_POINT_GROUP and ep.name not in found:
                found[ep.name] = _EntryPoint(
                    ep.name, ep.value, dist.metadata["Name"] or "?", dist.version or "?"
                )
    return found


def _module_name(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"


class PanelPlugins:
    """The loaded plugins, and the only way the core calls their hooks."""

    def __init__(self, pm: pluggy.PluginManager | None = None) -> None:
        if pm is None:
            pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
            pm.add_hookspecs(hookspecs)
        self.pm = pm
        self._sources: dict[str, str] = {}  # plugin name -> source, for describe()
        self._disabled: dict[str, PluginInfo] = {}  # disabled names that matched a plugin

    # -- registration -------------------------------------------------------------------

    def register(self, plugin: object, name: str | None = None, *, source: str = "") -> str:
        """Register a plugin object or module (tests, embedding); returns its name."""
        registered = self.pm.register(plugin, name=name)
        if registered is None:
            raise ValueError(f"plugin {name!r} is disabled")
        self._sources[registered] = source or SOURCE_REGISTERED
        return registered

    def hook_names(self) -> list[str]:
        """Every hook a plugin may implement, in definition order."""
        return list(HOOK_NAMES)

    @property
    def disabled(self) -> list[str]:
        """Names disabled in config that matched a built-in or installed plugin."""
        return sorted(self._disabled)

    def describe(self, *, include_disabled: bool = False) -> list[PluginInfo]:
        """Each plugin's name, where it came from, and the hooks it implements."""
        from_dist = {id(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        infos = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:  # a blocked (disabled) name
                continue
            dist = from_dist.get(id(plugin))
            if dist is not None:
                source = _EntryPoint(name, "", dist.project_name, dist.version).source
            else:
                source = self._sources.get(name, SOURCE_REGISTERED)
            hooks = {caller.name for caller in self.pm.get_hookcallers(plugin) or ()}
            ordered = [hook for hook in HOOK_NAMES if hook in hooks]
            infos.append(PluginInfo(name, source, ordered, _module_name(plugin)))
        if include_disabled:
            infos.extend(self._disabled.values())
        return sorted(infos, key=lambda info: info.name)

    def describe_one(self, name: str) -> str:
        """Where the loaded plugin ``name`` came from, for messages."""
        for info in self.describe():
            if info.name == name:
                return info.source
        return "unknown"

    # -- calling hooks ------------------------------------------------------------------

    def _impls(self, hook_name: str, kwargs: dict[str, Any]) -> Iterator[HookImpl]:
        """Implementations in pluggy's call order; checks the caller's arguments first."""
        caller = getattr(self.pm.hook, hook_name, None)
        if caller is None or caller.spec is None:
            raise ValueError(f"no plugin hook named {hook_name!r}")
        expected = set(caller.spec.argnames)
        if set(kwargs) != expected:
            # A mistake in the core, not in a plugin: let it surface.
            raise TypeError(
                f"{hook_name} takes {sorted(expected)}, was called with {sorted(kwargs)}"
            )
        for impl in reversed(caller.get_hookimpls()):
            if not (impl.wrapper or impl.hookwrapper):  # unsupported; warned about at load
                yield impl

    @staticmethod
    def _call(impl: HookImpl, kwargs: dict[str, Any]) -> Any:
        # Like pluggy: pass only the arguments the implementation declares.
        return impl.function(*(kwargs[arg] for arg in impl.argnames))

    async def _call_isolated(
        self, impl: HookImpl, hook_name: str, kwargs: dict[str, Any]
    ) -> tuple[bool, Any]:
        """(True, result) or (False, None) when the plugin raised (logged)."""
        try:
            result = self._call(impl, kwargs)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            logger.exception("plugin %s failed in %s", impl.plugin_name, hook_name)
            return False, None
        return True, result

    async def call_each(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation; returns ``(plugin_name, result)`` for non-None results.

        A plugin that raises is logged and skipped; the others still run.
        """
        results = []
        for impl in self._impls(hook_name, kwargs):
            ok, result = await self._call_isolated(impl, hook_name, kwargs)
            if ok and result is not None:
                results.append((impl.plugin_name, result))
        return results

    async def call_each_in(self, tx: Any, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """:meth:`call_each` for a hook called inside a write transaction, handed to it as
        ``tx``: each plugin runs under a savepoint, so one that raises leaves nothing it
        wrote behind (logged and skipped) while the others' writes and the caller's stay.
        """
        results = []
        for impl in self._impls(hook_name, {**kwargs, "tx": tx}):
            tx.later("SAVEPOINT panelbot_plugin")  # held: sent with the plugin's first query
            ok, result = await self._call_isolated(impl, hook_name, {**kwargs, "tx": tx})
            if not ok:
                await tx.execute("ROLLBACK TO panelbot_plugin")
            tx.later("RELEASE panelbot_plugin")
            if ok and result is not None:
                results.append((impl.plugin_name, result))
        return results

    async def call_first_in(self, tx: Any, hook_name: str, **kwargs: Any) -> Any | None:
        """:meth:`call_first` inside a write transaction handed to the hook as ``tx``: each
        plugin runs under a savepoint (as in :meth:`call_each_in`), so one that raises leaves
        nothing it wrote behind; later plugins are not called once one answers."""
        for impl in self._impls(hook_name, {**kwargs, "tx": tx}):
            tx.later("SAVEPOINT panelbot_plugin")
            ok, result = await self._call_isolated(impl, hook_name, {**kwargs, "tx": tx})
            if not ok:
                await tx.execute("ROLLBACK TO panelbot_plugin")
            tx.later("RELEASE panelbot_plugin")
            if ok and result is not None:
                return result
        return None

    async def call_first(self, hook_name: str, **kwargs: Any) -> Any | None:
        """The first non-None result in call order, or None; later plugins are not called."""
        for impl in self._impls(hook_name, kwargs):
            ok, result = await self._call_isolated(impl, hook_name, kwargs)
            if ok and result is not None:
                return result
        return None

    async def call_chain(self, hook_name: str, chained: str, **kwargs: Any) -> Any:
        """Pass ``kwargs[chained]`` through each implementation in turn.

        Each may return a replacement (seen by the next) or None to leave it; returns the
        final value. Used for ``panelbot_before_send``.
        """
        value = kwargs[chained]
        for impl in self._impls(hook_name, kwargs):
            ok, result = await self._call_isolated(impl, hook_name, {**kwargs, chained: value})
            if ok and result is not None:
                value = result
        return value

    def migration_folders(self) -> list[tuple[str, Any]]:
        """(plugin name, folder of numbered SQL migrations) for each plugin that ships
        migrations (``panelbot_migrations``); given to ``Database.open``."""
        return self.call_each_sync("panelbot_migrations")

    def config_problems(self, settings: Any) -> list[str]:
        """What the plugins find wrong in their part of the config
        (``panelbot_check_config``), one ``"key: message"`` line each."""
        return [
            f"{key}: {message}"
            for _, found in self.call_each_sync("panelbot_check_config", settings=settings)
            for key, message in found
        ]

    def call_each_sync(self, hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """``call_each`` for sync-only hooks (commands, message dirs), outside an event loop.

        Raises TypeError when an implementation is async: that is a bug in the plugin which
        would otherwise be silently ignored.
        """
        results = []
        for impl in self._impls(hook_name, kwargs):
            try:
                result = self._call(impl, kwargs)
            except Exception:
                logger.exception("plugin %s failed in %s", impl.plugin_name, hook_name)
                continue
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()  # no "never awaited" warning on top of our error
                raise TypeError(
                    f"plugin {impl.plugin_name} implements {hook_name} as async; "
                    "this hook must be a plain function"
                )
            if result is not None:
                results.append((impl.plugin_name, result))
        return results

    # -- loading ------------------------------------------------------------------------

    def _record_disabled(
        self,
        disabled: Collection[str],
        found: dict[str, _EntryPoint],
        local: dict[str, Path] | None = None,
    ) -> None:
        """Remember what each disabled name would have loaded, for ``plugins list``."""
        local = local or {}
        for name in disabled:
            if name in found:
                entry = found[name]
                info = PluginInfo(name, entry.source, [], entry.value, enabled=False)
            elif name in local:
                info = PluginInfo(
                    name,
                    _local_source(local[name]),
                    [],
                    f"{LOCAL_MODULE_PREFIX}.{name}",
                    enabled=False,
                )
            elif name in BUILTIN_PLUGINS:
                info = PluginInfo(name, SOURCE_BUILTIN_TREE, [], f"plugins.{name}", enabled=False)
            else:
                logger.warning("no plugin named %r to disable; check [plugins] disabled", name)
                continue
            self._disabled[name] = info

    def check_hooks(self) -> None:
        """Warn about implementations that would silently never be called (run by load)."""
        for name, caller in vars(self.pm.hook).items():
            for impl in caller.get_hookimpls():
                if caller.spec is None and not impl.optionalhook:
                    # Most likely a misspelt hook name.
                    logger.warning(
                        "plugin %s implements %s, which is not a panelbot hook",
                        impl.plugin_name,
                        name,
                    )
                elif impl.wrapper or impl.hookwrapper:
                    logger.warning(
                        "plugin %s: hook wrappers are not supported; %s is ignored",
                        impl.plugin_name,
                        name,
                    )


def _load_failure(pm: pluggy.PluginManager, found: dict[str, _EntryPoint], exc: Exception) -> str:
    """Name the entry point that broke: pluggy loads in our scan order and stops there."""
    pending = [ep for name, ep in found.items() if not (pm.has_plugin(name) or pm.is_blocked(name))]
    what = (
        f"plugin {pending[0].name!r} ({pending[0].value}, {pending[0].source})"
        if pending
        else f"a plugin from entry point group {ENTRY_POINT_GROUP}"
    )
    return (
        f"{what} failed to load: {type(exc).__name__}: {exc} "
        "(fix or uninstall it, or disable it with [plugins] disabled = [...])"
    )


def _one_line(exc: Exception) -> str:
    """An exception's message on one line (pluggy's validation errors span three)."""
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _local_source(path: Path) -> str:
    return f"{SOURCE_LOCAL_FILE} {path}"


def local_plugin_files(directories: Sequence[Path]) -> dict[str, Path]:
    """Plugin name -> file, for every ``.py`` file in ``directories`` (in name order).

    :raises PluginLoadError: two files give the same plugin name.
    """
    found: dict[str, Path] = {}
    for folder in directories:
        for path in sorted(Path(folder).glob("*.py")):
            if not path.is_file():
                continue
            name = path.stem
            if name in found:
                raise PluginLoadError(
                    f"plugin {name!r} is in two local files, {found[name]} and {path}; rename one"
                )
            found[name] = path
    return found


def _load_local_file(plugins: PanelPlugins, name: str, path: Path) -> None:
    """Import one local plugin file as a module and register it under ``name``."""
    where = f"plugin {name!r} ({_local_source(path)})"
    if plugins.pm.has_plugin(name):
        raise PluginLoadError(
            f"{where}: a plugin named {name!r} is already loaded "
            f"({plugins.describe_one(name)}); rename the file"
        )
    if not name.isidentifier():
        raise PluginLoadError(f"{where}: the file name must be a Python identifier")
    module_name = f"{LOCAL_MODULE_PREFIX}.{name}"
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(path):
        # Already imported in this process (the command line loads plugins, then the bot
        # does): one module, as for any import, so its module-level state is shared.
        plugins.register(loaded, name, source=_local_source(path))
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py path always has one
        raise PluginLoadError(f"{where} failed to load: not a Python file")
    module = importlib.util.module_from_spec(spec)
    # In sys.modules while it runs, as any import is (dataclasses and pickling look there).
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        plugins.register(module, name, source=_local_source(path))
    except Exception as exc:
        sys.modules.pop(module_name, None)
        if plugins.pm.has_plugin(name):
            plugins.pm.unregister(name=name)
        raise PluginLoadError(
            f"{where} failed to load: {type(exc).__name__}: {_one_line(exc)} "
            "(fix the file, or disable it with [plugins] disabled = [...])"
        ) from exc


def load_plugins(
    disabled: Collection[str] = (),
    *,
    entry_points: bool = True,
    directories: Sequence[Path] = (),
) -> PanelPlugins:
    """Load the built-in plugins, those installed under entry point group panelbot.plugins,
    and the ``.py`` files in ``directories``.

    :param disabled: plugin names never to load (config ``[plugins] disabled``). A name
        matching no plugin is logged as a warning.
    :param entry_points: False to skip installed entry points (tests): built-ins are then
        imported from the source tree.
    :param directories: folders of one-file plugins (config ``[plugins] directories``).
    :raises PluginLoadError: an entry point or a local file could not be imported; the
        message (one line) names which.
    """
    if isinstance(disabled, str):  # "quotas" would otherwise disable q, u, o, ...
        disabled = [disabled]
    plugins = PanelPlugins()
    pm = plugins.pm
    for name in disabled:
        pm.set_blocked(name)

    found = _scan_entry_points() if entry_points else {}
    if entry_points:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except Exception as exc:
            raise PluginLoadError(_load_failure(pm, found, exc)) from exc

    for name in BUILTIN_PLUGINS:
        if name in disabled or pm.has_plugin(name):
            continue
        module = importlib.import_module(f"plugins.{name}")
        plugins.register(module, name, source=SOURCE_BUILTIN_TREE)

    local = local_plugin_files(directories)
    for name, path in local.items():
        if name not in disabled:
            _load_local_file(plugins, name, path)

    plugins._record_disabled(disabled, found, local)
    plugins.check_hooks()
    return plugins


def plugins_for(settings: Settings, *, entry_points: bool = True) -> PanelPlugins:
    """The plugins a bot with these settings loads (``[plugins] disabled`` and
    ``directories``)."""
    return load_plugins(
        settings.plugins.disabled,
        entry_points=entry_points,
        directories=settings.plugins.directories,
    )
