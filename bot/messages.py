"""Message catalogs: every text a panellist sees is a Jinja2 template under ``<dir>/<locale>/``.

Templates are plain text (no HTML autoescape) rendered with StrictUndefined, so a missing
variable is an error in tests rather than a blank in someone's SMS. Translators write them,
so they are untrusted: they compile in Jinja2's ``ImmutableSandboxedEnvironment``, and before
that :func:`unsafe_parts` refuses any template that reaches Python internals (``__class__``,
``mro``, ``func_globals`` ...) or calls a method that changes a value, and
:func:`refused_parts` refuses anything outside the little a message needs (an allowlist:
output, ``if``, ``for`` over values passed in, at most two loops deep, comparisons, a few
filters with bounded arguments; no calls, ``set``, macros, ``include`` or arithmetic that
builds values), both with :class:`UnsafeTemplate`. Such a template never renders: at send
time its locale is skipped (logged as an error) and the next locale of the chain is used.
What no static check bounds is bounded while rendering (:meth:`MessageCatalog.render_template`):
a loop over more than :data:`MAX_LOOP_ITEMS` items, a text past :data:`MAX_OUTPUT` characters,
running out of memory or recursion refuse the template the same way. A locale without a
template falls back along a chain (``pa-Arab`` → ``pa`` → the panel default → ``en``); each
fallback is logged and counted so translators can see what is missing.
"""

from __future__ import annotations

import itertools
import logging
import tomllib
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime, parse_pattern
from babel.numbers import format_decimal
from jinja2 import nodes
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_FUNCTION_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
    UNSAFE_METHOD_ATTRIBUTES,
    ImmutableSandboxedEnvironment,
    SecurityError,
    _mutable_spec,
    safe_range,
)

logger = logging.getLogger(__name__)

TEMPLATE_SUFFIX = ".txt.j2"
WORDS_FILE = "words.toml"


def template_names(locale: str, dirs: Iterable[Path]) -> set[str]:
    """Message names with a template in exactly this locale's folder of any of ``dirs``."""
    names: set[str] = set()
    for d in dirs:
        folder = d / locale
        if folder.is_dir():
            names.update(
                p.name.removesuffix(TEMPLATE_SUFFIX)
                for p in folder.iterdir()
                if p.name.endswith(TEMPLATE_SUFFIX)
            )
    return names


class MissingMessage(LookupError):
    """No catalog in the fallback chain has the template."""


class UnsafeTemplate(jinja2.TemplateSyntaxError):
    """A template that reaches Python internals or calls a method the sandbox refuses.

    Raised when the template is compiled, before anything renders; ``message`` says what it
    reaches and ``lineno`` where.
    """


# Attribute names a template may not touch (besides any name starting with "_").
_UNSAFE_ATTRIBUTES = frozenset(
    {"mro"}
    | UNSAFE_FUNCTION_ATTRIBUTES
    | UNSAFE_METHOD_ATTRIBUTES
    | UNSAFE_GENERATOR_ATTRIBUTES
    | UNSAFE_COROUTINE_ATTRIBUTES
    | UNSAFE_ASYNC_GENERATOR_ATTRIBUTES
)
# Methods a template may not call: those that change a value (which the immutable sandbox
# refuses) and str.format, whose fields can reach attributes ("{0.__class__}").
_UNSAFE_CALLS = frozenset({"format", "format_map"}).union(*(names for _, names in _mutable_spec))
# Caps on what one arithmetic operator may build, so that "9 ** 9 ** 9" or "'x' * 10 ** 9"
# cannot stall the process that renders a message.
_MAX_EXPONENT = 64
_MAX_LENGTH = 10_000


# What a message template may be made of (see refused_parts): nothing else compiles.
MAX_OUTPUT = 10_000  # characters of one rendered message; SMS, WhatsApp, Telegram take far less
MAX_LOOP_ITEMS = 200  # items one {% for %} may go over (a question's options, the languages)
MAX_LOOP_NESTING = 2
MAX_NESTING = 30  # tags and expressions inside one another; shipped templates use under 10
_MAX_ARGUMENT = 100  # characters of a quoted argument (a join separator, a date format)
LOOP_ITEMS_FILTER = "panelbot_loop_items"  # wraps every loop's items; not for templates

_STATEMENTS = {
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.FilterBlock: "{% filter %}",
    nodes.With: "{% with %}",
    nodes.Block: "{% block %}",
    nodes.Extends: "{% extends %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.ExprStmt: "{% do %}",
    nodes.Assign: "{% set %}",
    nodes.AssignBlock: "{% set %}",
    nodes.Continue: "{% continue %}",
    nodes.Break: "{% break %}",
    nodes.NSRef: "{% set x.y %}",
    nodes.Mul: "the * operator",
    nodes.Div: "the / operator",
    nodes.FloorDiv: "the // operator",
    nodes.Mod: "the % operator",
    nodes.Pow: "the ** operator",
    nodes.Dict: "{...} dictionaries",
    nodes.Pair: "{...} dictionaries",
}
_ALLOWED_NODES = (
    nodes.Template,
    nodes.Output,
    nodes.TemplateData,
    nodes.If,
    nodes.For,
    nodes.Name,
    nodes.Const,
    nodes.Tuple,
    nodes.List,
    nodes.Getattr,
    nodes.Getitem,
    nodes.Slice,
    nodes.Compare,
    nodes.Operand,
    nodes.And,
    nodes.Or,
    nodes.Not,
    nodes.Neg,
    nodes.Pos,
    nodes.Add,
    nodes.Sub,
    nodes.Concat,
    nodes.CondExpr,
    nodes.Filter,
    nodes.Test,
    nodes.Keyword,
)
_PLURAL_FORMS = frozenset({"zero", "one", "two", "few", "many", "other"})
# Filters with no arguments: each gives a value no bigger than what it is given.
_PLAIN_FILTERS = frozenset(
    {
        "length",
        "count",
        "lower",
        "upper",
        "title",
        "capitalize",
        "trim",
        "first",
        "last",
        "reverse",
        "string",
        "wordcount",
        "abs",
        "int",
        "round",
        "number",  # ours: a number as the message's language writes it
        LOOP_ITEMS_FILTER,  # what every loop's items go through (harmless written by hand)
    }
)
_TESTS = frozenset(
    {
        "defined",
        "undefined",
        "none",
        "number",
        "string",
        "sequence",
        "boolean",
        "true",
        "false",
        "integer",
        "float",
        "even",
        "odd",
        "eq",
        "equalto",
        "==",
        "ne",
        "!=",
        "lt",
        "lessthan",
        "<",
        "le",
        "<=",
        "gt",
        "greaterthan",
        ">",
        "ge",
        ">=",
        "in",
        "sameas",
    }
)


def _short_text(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Const)
        and isinstance(node.value, str)
        and len(node.value) <= _MAX_ARGUMENT
    )


def _filter_problem(node: nodes.Filter) -> str | None:
    """Why a filter is refused (its name and arguments), or None when it is allowed."""
    name = node.name
    kwargs = {kw.key: kw.value for kw in node.kwargs}
    if node.dyn_args is not None or node.dyn_kwargs is not None:
        return f"|{name}(*...)"
    if name in _PLAIN_FILTERS:
        return None if not node.args and not kwargs else f"|{name}(...)"
    if name == "join":
        # A quoted separator only: join(x|join) multiplies lengths at each level.
        if not kwargs and len(node.args) <= 1 and all(_short_text(a) for a in node.args):
            return None
        return "|join(...) with anything but a short quoted separator"
    if name in ("default", "d"):
        if not kwargs and len(node.args) <= 2:
            return None
        return f"|{name}(...) with more than a value"
    if name in ("date", "datetime"):  # ours: a date in the message's language
        if kwargs or len(node.args) > 1 or not all(_short_text(a) for a in node.args):
            return f"|{name}(...) with anything but a short quoted format"
        for arg in node.args:
            try:
                parse_pattern(arg.value)  # type: ignore[attr-defined]
            except ValueError:
                # Else a ValueError each time the message is sent.
                return f"|{name}({arg.value!r}), a format Babel cannot read"
        return None
    if name == "plural":  # ours: one="# question", other="# questions"
        if "other" not in kwargs:
            return "|plural(...) without other="  # the form every language falls back on
        if (
            not node.args
            and set(kwargs) <= _PLURAL_FORMS
            and all(_short_text(v) for v in kwargs.values())
        ):
            return None
        return "|plural(...) with anything but quoted forms (one=, few=, many=, other=...)"
    return f"|{name}"


def _call_name(node: nodes.Call) -> str:
    if isinstance(node.node, nodes.Name):
        return f"{node.node.name}()"
    if isinstance(node.node, nodes.Getattr):
        return f".{node.node.attr}()"
    return "a call"


def refused_parts(tree: nodes.Template) -> list[tuple[int, str]]:
    """Every place a parsed template goes beyond what a message template may use.

    ``(line, what)`` pairs, by line. Allowed: text, ``{{ output }}``, ``if``/``elif``/``else``,
    ``for`` (not ``recursive``; at most :data:`MAX_LOOP_NESTING` deep), names, constants,
    lists and tuples, ``.attr``, ``[item]``, comparisons, ``and``/``or``/``not``, ``+``, ``-``,
    ``~``, ``x if c else y``, the tests in ``_TESTS`` and the filters in ``_PLAIN_FILTERS``
    plus ``join`` (a quoted separator), ``default``, ``date``/``datetime`` (a quoted format)
    and ``plural`` (quoted forms). No calls at all (``range()``, ``namespace()``, a macro,
    a method), no ``set``, ``with``, macros, blocks, ``include``/``import``, no ``*``,
    ``/``, ``%`` or ``**``. Nothing of the template runs to find these.
    """
    found: list[tuple[int, str]] = []
    # An explicit stack (node, loops around it, depth): a deep template must not make the
    # check itself recurse.
    stack: list[tuple[nodes.Node, int, int]] = [(tree, 0, 0)]
    while stack:
        node, loops, depth = stack.pop()
        line = getattr(node, "lineno", 1) or 1
        if depth > MAX_NESTING:
            found.append((line, f"more than {MAX_NESTING} tags or expressions inside one another"))
            continue
        if isinstance(node, nodes.Call):
            found.append((line, _call_name(node)))
        elif not isinstance(node, _ALLOWED_NODES):
            found.append((line, _STATEMENTS.get(type(node), f"{{% {type(node).__name__} %}}")))
        elif isinstance(node, nodes.Filter):
            problem = _filter_problem(node)
            if problem:
                found.append((line, problem))
        elif isinstance(node, nodes.Test):
            if node.name not in _TESTS or node.dyn_args is not None or node.dyn_kwargs is not None:
                found.append((line, f"is {node.name}"))
        elif isinstance(node, nodes.For):
            if node.recursive:
                found.append((line, "recursive loops"))
            if loops >= MAX_LOOP_NESTING:
                found.append((line, f"more than {MAX_LOOP_NESTING} loops inside one another"))
            stack.append((node.iter, loops, depth + 1))
            stack.extend((child, loops + 1, depth + 1) for child in (node.target, *node.body))
            stack.extend((child, loops, depth + 1) for child in node.else_)
            if node.test is not None:
                stack.append((node.test, loops + 1, depth + 1))
            continue
        stack.extend((child, loops, depth + 1) for child in node.iter_child_nodes())
    return sorted(found, key=lambda item: item[0])


def _bound_loops(tree: nodes.Template) -> None:
    """Put every loop's items through :data:`LOOP_ITEMS_FILTER`, which stops a huge one."""
    for loop in tree.find_all(nodes.For):
        loop.iter = nodes.Filter(
            loop.iter, LOOP_ITEMS_FILTER, [], [], None, None, lineno=loop.lineno
        )


def _loop_items(value: Any) -> Any:
    if isinstance(value, jinja2.Undefined):
        return value  # iterating it raises (StrictUndefined) as it would have
    items = list(itertools.islice(iter(value), MAX_LOOP_ITEMS + 1))
    if len(items) > MAX_LOOP_ITEMS:
        raise RenderRefused(f"a loop over more than {MAX_LOOP_ITEMS} items")
    return items


def _unsafe_name(value: object) -> bool:
    return isinstance(value, str) and (value.startswith("_") or value in _UNSAFE_ATTRIBUTES)


def unsafe_parts(tree: nodes.Template) -> list[tuple[int, str]]:
    """Every place a parsed template reaches internals or calls a refused method.

    ``(line, what)`` pairs (``what`` as ``__class__`` or ``.append()``), by line: attribute
    access (``x.__class__``, ``x.mro``), item access with such a name (``x['__globals__']``),
    such a name given to a filter or test (``x|attr('__class__')``, ``map(attribute='_x')``),
    and calls of methods that change a value or format (``x.append(1)``, ``'{0}'.format(x)``).
    """
    found: list[tuple[int, str]] = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter, nodes.Test, nodes.Call)):
        if isinstance(node, nodes.Getattr) and _unsafe_name(node.attr):
            found.append((node.lineno, node.attr))
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and _unsafe_name(node.arg.value)
        ):
            found.append((node.lineno, node.arg.value))
        elif isinstance(node, nodes.Filter | nodes.Test):
            values = [*node.args, *(kw.value for kw in node.kwargs)]
            for value in values:
                if isinstance(value, nodes.Const) and _unsafe_name(value.value):
                    found.append((node.lineno, f"{value.value} (in |{node.name})"))
        elif (
            isinstance(node, nodes.Call)
            and isinstance(node.node, nodes.Getattr)
            and node.node.attr in _UNSAFE_CALLS
        ):
            found.append((node.lineno, f".{node.node.attr}()"))
    return sorted(found, key=lambda item: item[0])


class SafeEnvironment(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, refusing unsafe templates at compile time.

    The static check names the problem before anything runs; the sandbox stays underneath
    for what no static check can see (a name built at run time).
    """

    intercepted_binops = frozenset({"**", "*"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        try:
            tree = super()._parse(source, name, filename)
        except RecursionError:
            raise UnsafeTemplate(
                "nests tags or brackets too deeply for a message template", 1, name, filename
            ) from None
        # Internals first, by name (what an attack reaches for); then the allowlist.
        problems = unsafe_parts(tree) or refused_parts(tree)
        if problems:
            whats = list(dict.fromkeys(what for _, what in sorted(problems)))
            shown = ", ".join(whats[:3]) + (f" and {len(whats) - 3} more" if len(whats) > 3 else "")
            raise UnsafeTemplate(
                f"uses {shown}, which no message template may use",
                problems[0][0],
                name,
                filename,
            )
        _bound_loops(tree)
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and (
                abs(right) > _MAX_EXPONENT
                or (isinstance(left, int) and left.bit_length() * abs(right) > _MAX_LENGTH)
            ):
                raise SecurityError("a power too large for a message")
            return left**right
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > _MAX_LENGTH
                ):
                    raise SecurityError(f"a value over {_MAX_LENGTH} long")
            return left * right
        return super().call_binop(context, operator, left, right)


class RenderRefused(SecurityError):
    """A template stopped while rendering: a loop or a text too long, memory or recursion."""


def render_bounded(template: jinja2.Template, context: dict[str, Any]) -> str:
    """Render ``template``, stopping past :data:`MAX_OUTPUT` characters.

    Running out of memory or of recursion while rendering is :class:`RenderRefused` too, so
    that a template refused this way is one line, never a traceback.
    """
    pieces: list[str] = []
    size = 0
    stream = template.generate(**context)
    try:
        for piece in stream:
            size += len(piece)
            if size > MAX_OUTPUT:
                raise RenderRefused(f"its text passed {MAX_OUTPUT:,} characters")
            pieces.append(piece)
    except MemoryError:
        pieces.clear()
        raise RenderRefused("it ran out of memory") from None
    except RecursionError:
        raise RenderRefused("it recursed too deeply") from None
    finally:
        stream.close()
    return "".join(pieces)


def _range(*args: int) -> range:
    """``range`` as the sandbox allows it, refusing a huge one as the sandbox refuses others."""
    try:
        return safe_range(*args)
    except OverflowError as exc:
        raise SecurityError(str(exc)) from None


def make_environment(loader: jinja2.BaseLoader | None = None) -> SafeEnvironment:
    """The environment every message template compiles in: sandboxed, strict, plain text."""
    env = SafeEnvironment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.globals["range"] = _range
    env.filters[LOOP_ITEMS_FILTER] = _loop_items
    return env


def fallback_chain(locale: str, default_locale: str = "en") -> list[str]:
    """``pa-Arab`` → [``pa-Arab``, ``pa``, default, ``en``], without repeats."""
    chain: list[str] = []
    parts = locale.replace("_", "-").split("-") if locale else []
    for i in range(len(parts), 0, -1):
        chain.append("-".join(parts[:i]))
    for extra in (default_locale, "en"):
        chain.append(extra)
    seen: set[str] = set()
    return [c for c in chain if c and not (c in seen or seen.add(c))]


class MessageCatalog:
    """Renders named messages in a locale, searching ``dirs`` in order."""

    def __init__(
        self, dirs: Sequence[Path], default_locale: str = "en", timezone: str = "Europe/London"
    ) -> None:
        self.dirs = [Path(d) for d in dirs]
        self.default_locale = default_locale
        self.timezone = timezone
        self.env = make_environment(jinja2.FileSystemLoader([str(d) for d in self.dirs]))
        self.env.filters.update(
            plural=_plural, date=self._date, datetime=self._datetime, number=_number
        )
        self.fallbacks: Counter[tuple[str, str, str]] = Counter()
        self._resolved: dict[tuple[str, str], tuple[str, jinja2.Template]] = {}
        # "cy/welcome" -> why that template was refused: "never rendered: uses ..." (see
        # UnsafeTemplate) or "stopped while rendering: ..." (see render_bounded).
        self.refused: dict[str, str] = {}
        self._words: dict[str, dict[str, Any]] = {}

    def locales(self) -> list[str]:
        """Every locale that has a folder in any catalog directory."""
        found: set[str] = set()
        for d in self.dirs:
            if d.is_dir():
                found.update(p.name for p in d.iterdir() if p.is_dir())
        return sorted(found, key=lambda item: item[0])

    def names(self, locale: str) -> set[str]:
        """The message names present for exactly this locale."""
        return template_names(locale, self.dirs)

    def resolve(self, name: str, locale: str) -> tuple[str, jinja2.Template]:
        """The locale actually used for ``name`` and its compiled template.

        A refused template (see :class:`UnsafeTemplate`) is skipped like a missing one.
        """
        key = (name, locale)
        cached = self._resolved.get(key)
        if cached is not None:
            return cached
        for candidate in fallback_chain(locale, self.default_locale):
            if f"{candidate}/{name}" in self.refused:
                continue
            try:
                template = self.env.get_template(f"{candidate}/{name}{TEMPLATE_SUFFIX}")
            except jinja2.TemplateNotFound:
                continue
            except UnsafeTemplate as exc:
                self._refuse(candidate, name, f"never rendered: {exc.message} (line {exc.lineno})")
                continue
            self._resolved[key] = (candidate, template)
            return candidate, template
        raise MissingMessage(f"no message {name!r} for locale {locale!r} or its fallbacks")

    @staticmethod
    def render_template(template: jinja2.Template, **context: Any) -> str:
        """Render a compiled template within the bounds of :func:`render_bounded`."""
        return render_bounded(template, context)

    def _refuse(self, locale: str, name: str, reason: str) -> None:
        self.refused[f"{locale}/{name}"] = reason
        logger.error("message %s/%s refused, %s", locale, name, reason)
        for key, (used, _) in list(self._resolved.items()):
            if key[0] == name and used == locale:
                del self._resolved[key]

    def render(self, name: str, locale: str, **context: Any) -> str:
        """Render message ``name`` for ``locale``; surrounding whitespace is trimmed."""
        while True:
            used, template = self.resolve(name, locale)
            try:
                text = self.render_template(template, locale=used, **context)
            except RenderRefused as exc:
                self._refuse(used, name, f"stopped while rendering: {exc}")
                continue
            except SecurityError as exc:
                # What no static check could see (a name built while rendering): the
                # sandbox stopped it; this template is refused from now on.
                self._refuse(used, name, f"stopped while rendering: the sandbox refused it: {exc}")
                continue
            break
        if used != locale:
            self.fallbacks[(name, locale, used)] += 1
            logger.info("message %s: no %s text, fell back to %s", name, locale, used)
        # Templates are laid out for people to read; collapse runs of blank lines.
        lines = [line.rstrip() for line in text.strip().splitlines()]
        out: list[str] = []
        for line in lines:
            if line or (out and out[-1]):
                out.append(line)
        return "\n".join(out)

    @jinja2.pass_context
    def _date(self, context: Any, value: datetime, format: str = "EEEE d MMMM") -> str:
        """A date in the message's language and the panel's time zone ("Friday 5 December")."""
        local = value.astimezone(ZoneInfo(self.timezone))
        return format_date(local.date(), format, locale=_babel_locale(context["locale"]))

    @jinja2.pass_context
    def _datetime(self, context: Any, value: datetime, format: str = "EEEE d MMMM, HH:mm") -> str:
        local = value.astimezone(ZoneInfo(self.timezone))
        return format_datetime(local, format, locale=_babel_locale(context["locale"]))

    def words(self, locale: str) -> dict[str, Any]:
        """Keyword and answer words for a locale (``words.toml``), merged over English."""
        if locale in self._words:
            return self._words[locale]
        merged: dict[str, Any] = {}
        for candidate in reversed(fallback_chain(locale, self.default_locale)):
            for d in reversed(self.dirs):
                merged.update(_read_words(d / candidate / WORDS_FILE))
        self._words[locale] = merged
        return merged

    def all_words(self, key: str, locales: Iterable[str]) -> set[str]:
        """The union of one word list over several locales (keywords work in any language)."""
        found: set[str] = set()
        for loc in locales:
            found.update(w.casefold() for w in self.words(loc).get(key, []))
        return found


@lru_cache(maxsize=64)
def _babel_locale(code: str) -> Locale:
    try:
        return Locale.parse(code.replace("-", "_"))
    except (ValueError, UnknownLocaleError):
        return Locale.parse("en")


@jinja2.pass_context
def _plural(context: Any, n: int, **forms: str) -> str:
    """The CLDR plural form of ``n`` for the message's language, ``#`` standing for ``n``.

    ``{{ count|plural(one="# question", few="# pytania", many="# pytań", other="# ...") }}``:
    Polish says "3 pytania" but "5 pytań"; Welsh has six forms. ``other`` is required.
    """
    locale = _babel_locale(context["locale"])
    form = forms.get(locale.plural_form(n)) or forms["other"]
    return form.replace("#", format_decimal(n, locale=locale))


@jinja2.pass_context
def _number(context: Any, n: float) -> str:
    return format_decimal(n, locale=_babel_locale(context["locale"]))


@lru_cache(maxsize=256)
def _read_words(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with path.open("rb") as fh:
        return tomllib.load(fh)
