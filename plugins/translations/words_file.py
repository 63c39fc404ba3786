"""Editing a ``words.toml`` line by line, so that every entry not changed keeps its bytes.

No TOML writer ships with panelbot, and rewriting the whole file would lose the comments that
explain each list to the next translator; so an import replaces only the lines of the entries
it changes, and checks the result with ``tomllib`` before anything is written.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

from plugins.translations.catalogs import CATALOG_TABLE, babel_locale

_TABLE_HEADER = re.compile(r"^\s*\[[^\[\]]+\]\s*(#.*)?$")


def toml_value(value: Any) -> str:
    """A TOML value for a text or a list of texts (JSON strings are TOML basic strings)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"


def update_words(text: str, changes: dict[str, Any]) -> str:
    """``text`` (a words.toml) with the top-level ``changes`` written in, all else kept."""
    if not changes:
        return text
    newline = "\r\n" if _uses_crlf(text) else "\n"
    lines = text.splitlines(keepends=True)
    top_end = next((i for i, line in enumerate(lines) if _TABLE_HEADER.match(line)), len(lines))
    pending = dict(changes)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        key = _key_of(line) if i < top_end else None
        if key in pending:
            end = _value_end(lines, i, key)
            out.append(f"{key} = {toml_value(pending.pop(key))}{newline}")
            i = end + 1
            continue
        if i == top_end and pending:
            out.extend(_insert_before_table(out, pending, newline))
            pending.clear()
        out.append(line)
        i += 1
    if pending:
        if out and not out[-1].endswith("\n"):
            out[-1] += newline
        out.extend(f"{k} = {toml_value(v)}{newline}" for k, v in pending.items())
    result = "".join(out)
    # A bug here must never write a broken file: check what was written reads back.
    loaded = tomllib.loads(result)
    if any(loaded.get(k) != v for k, v in changes.items()):
        raise ValueError(f"words.toml: could not write {', '.join(changes)}")
    return result


def _insert_before_table(out: list[str], pending: dict[str, Any], newline: str) -> list[str]:
    """New entries go after the last top-level entry, before the blank lines and comments
    that lead into the first table."""
    lead: list[str] = []
    while out and (not out[-1].strip() or out[-1].lstrip().startswith("#")):
        lead.insert(0, out.pop())
    if out and not out[-1].endswith("\n"):
        out[-1] += newline
    return [*(f"{k} = {toml_value(v)}{newline}" for k, v in pending.items()), *lead]


def _key_of(line: str) -> str | None:
    match = re.match(r"^\s*([A-Za-z0-9_-]+)\s*=", line)
    return match.group(1) if match else None


def _value_end(lines: list[str], start: int, key: str) -> int:
    """The last line of the entry starting at ``start`` (an array may span lines)."""
    for end in range(start, len(lines)):
        try:
            parsed = tomllib.loads("".join(lines[start : end + 1]))
        except tomllib.TOMLDecodeError:
            continue
        if key in parsed:
            return end
    return start


def mark_unreviewed(text: str) -> str:
    """``text`` with ``reviewed = true`` in its ``[catalog]`` table turned to false."""
    lines = text.splitlines(keepends=True)
    in_catalog = False
    for i, line in enumerate(lines):
        if _TABLE_HEADER.match(line):
            in_catalog = line.strip().split("#")[0].strip() == f"[{CATALOG_TABLE}]"
        elif in_catalog and re.match(r"^\s*reviewed\s*=\s*true\b", line):
            lines[i] = re.sub(r"=\s*true", "= false", line, count=1)
    return "".join(lines)


def new_words_file(locale: str, words: dict[str, Any]) -> str:
    """A new catalog's ``words.toml``: the words, then a draft ``[catalog]`` table."""
    parsed = babel_locale(locale)
    name = parsed.english_name if parsed else locale
    lines = [f"# Words the engine understands in {name} (written by `panelbot messages import`)."]
    lines += [f"{key} = {toml_value(value)}" for key, value in words.items()]
    lines += ["", f"[{CATALOG_TABLE}]", "reviewed = false", 'reviewer = ""']
    return "\n".join(lines) + "\n"


def _uses_crlf(text: str) -> bool:
    return "\r\n" in text
