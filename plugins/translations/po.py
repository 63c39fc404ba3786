"""The translators' round trip: a catalog out to a PO file and back, through ``babel.messages``.

One PO entry per message and per ``words.toml`` entry, so Poedit, Weblate or any gettext
tool shows English beside the translation:

- a message: ``msgctxt`` is its name (``consent``), ``msgid`` the English template source,
  ``msgstr`` the locale's template source ("" when it has none yet). A comment for the
  translator lists the ``{{ variables }}`` English uses: the only ones a translation may use.
- a word list: ``msgctxt`` is ``words:<key>`` (``words:yes``); a list is written as its
  words joined by `` | `` (``yes | y | ok``), a single text (``yes_label``) as itself.

Entries of an unreviewed (draft) catalog are flagged ``fuzzy``. The header carries
``Language``, Babel's ``Plural-Forms`` for it and ``Content-Type: text/plain; charset=utf-8``.
One trailing newline of each template is left out of the PO file (tools warn when msgid and
msgstr differ in it) and put back on import as the file had it, so an export followed by an
import changes no byte.

An import is all or nothing: every template must compile with Jinja2, pass the sandbox's
checks (no ``__class__`` and the like, and nothing beyond the allowlist of what a message
template may use: see :func:`bot.messages.unsafe_parts` and :func:`bot.messages.refused_parts`,
checked before anything renders), use only the variables English uses, and render with
typical values within the bounds of :func:`bot.messages.render_bounded`;
otherwise nothing is written and each problem is reported on its own line. Entries left
empty are skipped (a translation is never deleted by an import), and fuzzy entries are
imported too: a draft catalog's texts are all fuzzy. Changing a reviewed catalog marks it
unreviewed (``reviewed = false``), because what the reviewer signed off is no longer what
panellists would read.
"""

from __future__ import annotations

import io
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from babel.messages.catalog import Catalog
from babel.messages.pofile import PoFileError, read_po, write_po
from jinja2 import meta
from jinja2.sandbox import SecurityError

from bot.plugin_api import (
    PANELBOT_VERSION,
    TEMPLATE_SUFFIX,
    WORDS_FILE,
    MessageCatalog,
    UnsafeTemplate,
)
from plugins.translations import check, words_file
from plugins.translations.catalogs import (
    CATALOG_TABLE,
    SOURCE_LOCALE,
    babel_locale,
    catalog_info,
    is_locale_name,
    template_names,
)

WORDS_PREFIX = "words:"
LIST_SEPARATOR = " | "
FUZZY = "fuzzy"

_WORD_NOTES = {
    "language_name": "The language's own name; a reply of it picks the language.",
    "yes": "Replies that mean yes (consent, yes/no questions).",
    "no": "Replies that mean no.",
    "and": "Words joining option numbers, as in '1 and 3'.",
    "stop": "Opt-out keywords: each stops all messages when it is the whole reply.",
    "start": "Opt-in keywords: each rejoins when it is the whole reply.",
    "help": "Help keywords, acting only as the whole reply.",
    "language": "Keywords that show the language menu, acting only as the whole reply.",
    "yes_label": "The label of option 1 of a yes/no question.",
    "no_label": "The label of option 2 of a yes/no question.",
    "polite": "Words said around a yes or a no without changing it ('please', 'thank you').",
    "send_label": "The button that sends the options ticked for a multi-choice question.",
}


class PoError(Exception):
    """The catalog cannot be exported as asked (an unknown locale, an unsafe word)."""


# -- files as text, newlines kept -----------------------------------------------------------


def _read_text(path: Path) -> str | None:
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _uses_crlf(text: str) -> bool:
    return "\r\n" in text


def _to_po(text: str) -> str:
    """A template's source as PO text: ``\\n`` newlines, one trailing newline left out."""
    text = text.replace("\r\n", "\n")
    return text[:-1] if text.endswith("\n") else text


def _from_po(text: str, like: str) -> str:
    """PO text back to file text with the trailing newline and line endings of ``like``."""
    if like.replace("\r\n", "\n").endswith("\n"):
        text += "\n"
    return text.replace("\n", "\r\n") if _uses_crlf(like) else text


def _read_words(path: Path) -> dict[str, Any]:
    text = _read_text(path)
    return tomllib.loads(text) if text is not None else {}


def template_path(messages_dir: Path, locale: str, name: str) -> Path:
    return messages_dir / locale / f"{name}{TEMPLATE_SUFFIX}"


def english_variables(env: jinja2.Environment, source: str) -> set[str]:
    return set(meta.find_undeclared_variables(env.parse(source))) - check.ALWAYS_PASSED


def _word_entries(english: dict[str, Any]) -> dict[str, Any]:
    """The words.toml entries a translator translates: texts and lists of texts."""
    return {
        key: value
        for key, value in english.items()
        if key != CATALOG_TABLE
        and (isinstance(value, str) or (isinstance(value, list) and _all_str(value)))
    }


def _all_str(values: list[Any]) -> bool:
    return all(isinstance(v, str) for v in values)


def _join(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not _all_str(value):
        raise PoError(f"words.toml: {key} is neither a text nor a list of texts")
    for word in value:
        if "|" in word:
            raise PoError(f"words.toml: {key}: {word!r} contains '|', which separates words")
    return LIST_SEPARATOR.join(value)


def _split(text: str) -> list[str]:
    return [word.strip() for word in text.split("|")]


# -- export ---------------------------------------------------------------------------------


def folder_for(messages_dir: Path, locale: str) -> str:
    """The folder name for ``locale``: an existing folder spelt another way, else ``pa-Arab``."""
    wanted = locale.replace("_", "-").lower()
    if messages_dir.is_dir():
        for child in messages_dir.iterdir():
            if child.is_dir() and child.name.replace("_", "-").lower() == wanted:
                return child.name
    parts = locale.replace("_", "-").split("-")
    return "-".join([parts[0].lower(), *parts[1:]])


def export_po(messages_dir: Path, locale: str, *, now: datetime | None = None) -> bytes:
    """The PO file for translating English into ``locale``, as bytes (UTF-8)."""
    if not is_locale_name(locale) or babel_locale(locale) is None:
        raise PoError(f"{locale!r} is not a locale Babel knows (use a code like cy, pl, pa-Arab)")
    if not (messages_dir / SOURCE_LOCALE).is_dir():
        raise PoError(f"no English catalog in {messages_dir} (expected {SOURCE_LOCALE}/)")
    folder = folder_for(messages_dir, locale)
    info = catalog_info(folder, [messages_dir])
    env = MessageCatalog([messages_dir]).env
    parsed = babel_locale(locale)
    assert parsed is not None
    now = now or datetime.now(UTC)
    po = Catalog(
        locale=parsed,
        domain="messages",
        header_comment=(
            f"# {parsed.english_name} messages of panelbot, from {messages_dir.name}/{folder}/.\n"
            "# msgctxt is the message name (words:<key> for words.toml); msgid the English.\n"
            "# Import with: panelbot messages import FILE.po"
        ),
        project="panelbot",
        version=PANELBOT_VERSION,
        creation_date=now,
        revision_date=now,
        language_team=parsed.get_display_name(parsed) or folder,
        charset="utf-8",
        fuzzy=False,
    )
    # Babel fills these with placeholders when given nothing; a tool writes its own on save.
    po.last_translator = info.reviewer
    po.msgid_bugs_address = ""
    draft = not info.reviewed
    for name in sorted(template_names(SOURCE_LOCALE, [messages_dir])):
        source = _read_text(template_path(messages_dir, SOURCE_LOCALE, name)) or ""
        translated = _read_text(template_path(messages_dir, folder, name))
        try:
            variables = sorted(english_variables(env, source))
        except jinja2.TemplateError as exc:
            raise PoError(f"{SOURCE_LOCALE}/{name}{TEMPLATE_SUFFIX}: {exc}") from None
        note = (
            "Variables: " + ", ".join("{{ " + v + " }}" for v in variables)
            if variables
            else "No variables."
        )
        _add(
            po,
            name,
            _to_po(source),
            _to_po(translated) if translated is not None else "",
            [note, "Keep {% ... %} tags and {{ ... }} as they are; translate the words."],
            f"{SOURCE_LOCALE}/{name}{TEMPLATE_SUFFIX}",
            draft,
        )
    english_words = _read_words(messages_dir / SOURCE_LOCALE / WORDS_FILE)
    own = _read_words(messages_dir / folder / WORDS_FILE)
    for key, value in _word_entries(english_words).items():
        note = _WORD_NOTES.get(key, "A word or words the bot understands.")
        if isinstance(value, list):
            note += " Separate words with ' | '."
        _add(
            po,
            WORDS_PREFIX + key,
            _join(key, value),
            _join(key, own[key]) if key in own else "",
            [note],
            f"{SOURCE_LOCALE}/{WORDS_FILE}",
            draft,
        )
    out = io.BytesIO()
    write_po(out, po, width=76, sort_output=False, include_previous=False)
    return out.getvalue()


def _add(
    po: Catalog,
    context: str,
    msgid: str,
    msgstr: str,
    notes: list[str],
    location: str,
    draft: bool,
) -> None:
    message = po.add(
        msgid,
        msgstr,
        context=context,
        auto_comments=notes,
        locations=[(location, None)],
        flags=[FUZZY] if draft and msgstr else [],
    )
    # Babel guesses python-format from "%" and python-brace-format from "{"; these are Jinja
    # templates, and a tool checking them as Python formats would reject good translations.
    message.flags.difference_update({f for f in message.flags if f.endswith("-format")})


# -- import ---------------------------------------------------------------------------------


@dataclass
class ImportPlan:
    """What an import would do: the files to write, or the problems that stop it."""

    source: str
    locale: str = ""
    folder: Path | None = None
    writes: dict[Path, str] = field(default_factory=dict)
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def problem(self, where: str, reason: str) -> None:
        self.problems.append(f"{self.source}: {where}: {reason}")

    def apply(self) -> None:
        """Write the planned files (nothing when there are problems)."""
        if self.problems:
            raise ValueError("an import with problems is never applied")
        for path, text in self.writes.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".importing")
            tmp.write_text(text, encoding="utf-8", newline="")
            tmp.replace(path)


def plan_import(messages_dir: Path, data: bytes, source: str = "PO file") -> ImportPlan:
    """Read a PO file and work out what importing it would write, checking every entry."""
    plan = ImportPlan(source)
    try:
        po = read_po(io.BytesIO(data), abort_invalid=True)
    except (PoFileError, ValueError, UnicodeDecodeError) as exc:
        plan.problem("file", f"not a valid PO file: {exc}")
        return plan
    locale = po.locale_identifier
    if not locale or not is_locale_name(locale) or babel_locale(locale) is None:
        plan.problem("header", f"no usable Language header (found {locale or 'none'!r})")
        return plan
    folder_name = folder_for(messages_dir, locale)
    if folder_name.lower() == SOURCE_LOCALE:
        # English is what everything is translated from: a PO file never replaces it.
        plan.problem(
            "header",
            f"Language {locale!r} is the source locale ({SOURCE_LOCALE}): English templates "
            "are edited in their files, not imported; set the header to the translation's locale",
        )
        return plan
    folder = messages_dir / folder_name
    plan.locale, plan.folder = folder_name, folder
    english_names = template_names(SOURCE_LOCALE, [messages_dir])
    if not english_names:
        plan.problem("messages", f"no English catalog in {messages_dir}")
        return plan
    catalog = MessageCatalog([messages_dir], SOURCE_LOCALE)
    renderer = check._Renderer(
        catalog,
        [SOURCE_LOCALE, folder_name],
        {
            "panel_name": "Citizens' Panel",
            "contact": "your local NHS engagement team",
        },
    )
    english_words = _word_entries(_read_words(messages_dir / SOURCE_LOCALE / WORDS_FILE))
    templates: dict[str, str] = {}
    words: dict[str, Any] = {}
    seen: set[str] = set()
    for message in po:
        if message.id == "":
            continue  # the header
        context = message.context
        if not context:
            plan.problem(repr(str(message.id)[:30]), "no msgctxt; export the file again")
            continue
        if context in seen:
            plan.problem(context, "appears twice")
            continue
        seen.add(context)
        text = message.string if isinstance(message.string, str) else ""
        if context.startswith(WORDS_PREFIX):
            key = context.removeprefix(WORDS_PREFIX)
            if key not in english_words:
                plan.problem(context, f"words.toml has no entry {key!r} in English")
            elif text.strip():
                value = _parse_words(plan, context, english_words[key], text)
                if value is not None:
                    words[key] = value
            continue
        if context not in english_names:
            plan.problem(context, "not an English message name")
            continue
        english = _read_text(template_path(messages_dir, SOURCE_LOCALE, context)) or ""
        if message.id != _to_po(english):
            plan.notes.append(
                f"{context}: the English text changed since this file was exported; "
                "check the translation"
            )
        if text:
            if _template_ok(plan, context, text, catalog, renderer, folder_name):
                templates[context] = text
    if plan.problems:
        return plan
    _plan_templates(plan, messages_dir, folder, templates)
    _plan_words(plan, messages_dir, folder, words, english_words)
    return plan


def _parse_words(plan: ImportPlan, where: str, english: Any, text: str) -> Any:
    if isinstance(english, str):
        return text
    found = _split(text)
    if any(not word for word in found):
        plan.problem(where, f"an empty word in {text!r} (separate words with ' | ')")
        return None
    return found


def _template_ok(
    plan: ImportPlan,
    name: str,
    text: str,
    catalog: MessageCatalog,
    renderer: check._Renderer,
    locale: str,
) -> bool:
    env = catalog.env
    try:
        template = env.from_string(text)
    except UnsafeTemplate as exc:
        # Checked on the parsed template: nothing of it has run.
        plan.problem(f"{locale}/{name}", f"refused, not run: {exc.message} (line {exc.lineno})")
        return False
    except jinja2.TemplateSyntaxError as exc:
        plan.problem(name, f"does not compile: {exc.message} (line {exc.lineno})")
        return False
    allowed = renderer.english_variables(name)
    extra = english_variables(env, text) - allowed
    if extra:
        available = ", ".join(sorted(allowed)) or "none"
        plan.problem(
            name,
            f"uses {', '.join(sorted(extra))}, which English does not (available: {available})",
        )
        return False
    try:
        # Bounded as at send time: a text past MAX_OUTPUT characters, a loop over too many
        # items, running out of memory or recursion are a refusal, never a traceback.
        catalog.render_template(template, locale=locale, **renderer.context(name, locale))
    except SecurityError as exc:
        plan.problem(f"{locale}/{name}", f"refused, stopped while rendering: {exc}")
        return False
    except (jinja2.TemplateError, check.SampleMissing, TypeError, ValueError, KeyError) as exc:
        plan.problem(name, f"does not render: {type(exc).__name__}: {exc}")
        return False
    return True


def _plan_templates(
    plan: ImportPlan, messages_dir: Path, folder: Path, templates: dict[str, str]
) -> None:
    for name, text in templates.items():
        path = folder / f"{name}{TEMPLATE_SUFFIX}"
        current = _read_text(path)
        like = (
            current
            if current is not None
            else (_read_text(template_path(messages_dir, SOURCE_LOCALE, name)) or "\n")
        )
        new = _from_po(text, like)
        if new == current:
            plan.unchanged += 1
        else:
            plan.writes[path] = new


def _plan_words(
    plan: ImportPlan,
    messages_dir: Path,
    folder: Path,
    words: dict[str, Any],
    english_words: dict[str, Any],
) -> None:
    path = folder / WORDS_FILE
    current = _read_text(path)
    own = tomllib.loads(current) if current is not None else {}
    changed = {key: value for key, value in words.items() if own.get(key) != value}
    plan.unchanged += len(words) - len(changed)
    if current is None:
        if changed:
            ordered = {key: words[key] for key in english_words if key in words}
            plan.writes[path] = words_file.new_words_file(plan.locale, ordered)
        return
    new = words_file.update_words(current, changed)
    if (changed or plan.writes) and catalog_info(folder.name, [messages_dir]).reviewed:
        new = words_file.mark_unreviewed(new)
        plan.notes.append(
            f"{folder.name} was marked reviewed; it is now a draft (reviewed = false) "
            "until someone reviews the changes"
        )
    if new != current:
        plan.writes[path] = new
