"""The decision register: what the panel said, what was done, by whom, and where it stands.

Decisions live in ``impact_decisions``; the surveys that informed them in
``impact_decision_surveys``; a finding quoted from one of them ("62% of you said ...") in
``impact_findings``, frozen when recorded. Every addition and status change fires
``panelbot_decision_recorded``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bot.plugin_api import decision_recorded, known_surveys, survey_results

if TYPE_CHECKING:
    from bot.plugin_api import Bot, ReadConn, Transaction

STATUSES = ("proposed", "decided", "implemented")
# Statuses that mean something was decided: the ones an update tells the panel about.
TELLABLE = ("decided", "implemented")

MAX_TITLE = 120
MAX_TEXT = 480
MAX_NAME = 120
MAX_LINK = 300
MAX_SURVEYS = 20
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline
_LINE_BREAK = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# Embeddings and overrides (U+202A-U+202E) and isolates (U+2066-U+2069).
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
_SURVEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# The question types a share can be quoted from.
QUOTABLE = ("choice", "multi", "yesno", "scale")


class DecisionError(ValueError):
    """A problem with what was given, in one line naming the option."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# -- validation ----------------------------------------------------------------------------


def clean_text(option: str, value: str | None, limit: int, *, one_line: bool = False) -> str:
    """``value`` trimmed; refused when empty (or only invisible characters), too long, or
    holding control characters or bidirectional overrides. Line breaks are allowed unless
    ``one_line`` (the title, names, the link); tabs are allowed."""
    text = (value or "").replace("\r\n", "\n").strip()  # a form's line breaks are CR LF
    if not any(not c.isspace() and unicodedata.category(c) != "Cf" for c in text):
        # Empty, or only spaces and invisible format characters (zero-width space, ...).
        raise DecisionError(f"{option}: must not be empty" + (" or invisible" if text else ""))
    if len(text) > limit:
        raise DecisionError(f"{option}: at most {limit} characters (got {len(text)})")
    if _BIDI.search(text):
        raise DecisionError(
            f"{option}: no bidirectional override or isolate characters "
            "(U+202A-U+202E, U+2066-U+2069): they can make the text read differently"
        )
    if one_line and _LINE_BREAK.search(text):
        raise DecisionError(f"{option}: one line of text, without line breaks")
    if _CONTROL.search(text):
        allowed = "tabs" if one_line else "line breaks and tabs"
        raise DecisionError(f"{option}: no control characters ({allowed} are allowed)")
    return text


def clean_optional(option: str, value: str | None, limit: int) -> str | None:
    if value is None or not value.strip():
        return None
    return clean_text(option, value, limit, one_line=True)


def clean_link(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    link = clean_text("--link", value, MAX_LINK, one_line=True)
    parts = urlsplit(link)
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in link:
        raise DecisionError(f"--link: must be an http:// or https:// address, not {link!r}")
    return link


def clean_date(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip()).isoformat()
    except ValueError:
        raise DecisionError(f"--decided-on: {value!r} is not a date (use YYYY-MM-DD)") from None


def clean_status(value: str) -> str:
    if value not in STATUSES:
        raise DecisionError(f"--status: one of {', '.join(STATUSES)}, not {value!r}")
    return value


def parse_survey_list(value: str | None) -> list[str]:
    """``"a,b"`` as ``["a", "b"]`` (order kept, repeats dropped); the ids' shape checked."""
    if value is None:
        return []
    ids = list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if len(ids) > MAX_SURVEYS:
        raise DecisionError(f"--surveys: at most {MAX_SURVEYS} surveys")
    for survey_id in ids:
        if not _SURVEY_ID.match(survey_id):
            raise DecisionError(f"--surveys: {survey_id!r} is not a survey id")
    return ids


async def check_surveys_exist(conn: ReadConn, survey_ids: list[str]) -> None:
    missing = [s for s in survey_ids if s not in await known_surveys(conn, survey_ids)]
    if missing:
        raise DecisionError(
            f"--surveys: no survey {', '.join(repr(m) for m in missing)} (see panelbot survey list)"
        )


# -- findings ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Finding:
    survey_id: str
    question_id: str
    option_id: str | None
    option_text: str
    count: int
    n: int

    @property
    def share(self) -> float:
        return self.count / self.n if self.n else 0.0

    @property
    def quote(self) -> str:
        return f'{round(100 * self.share)}% of you said "{self.option_text}" (n={self.n})'


async def compute_finding(bot: Bot, survey_ids: list[str], spec: str) -> Finding:
    """``QUESTION_ID[=OPTION]`` over the linked surveys: the share who chose the option
    (the most chosen one when none is named) among those who answered the question."""
    question_id, _, option_id = spec.partition("=")
    question_id, option_id = question_id.strip(), option_id.strip()
    if not question_id:
        raise DecisionError("--finding: give QUESTION_ID or QUESTION_ID=OPTION")
    if not survey_ids:
        raise DecisionError("--finding: link the survey it comes from with --surveys")
    found: list[tuple[str, dict[str, Any]]] = []
    for survey_id in survey_ids:
        results = await survey_results(bot, survey_id)
        for question in results["questions"]:
            if question["id"] == question_id:
                found.append((survey_id, question))
    if not found:
        raise DecisionError(f"--finding: no question {question_id!r} in {', '.join(survey_ids)}")
    if len(found) > 1:
        raise DecisionError(
            f"--finding: question {question_id!r} is in several linked surveys "
            f"({', '.join(s for s, _ in found)}); link only the one it comes from"
        )
    survey_id, question = found[0]
    if question["type"] not in QUOTABLE or "options" not in question:
        raise DecisionError(
            f"--finding: {question_id!r} is a {question['type']} question; "
            f"a share can be quoted from {', '.join(QUOTABLE)} questions"
        )
    n = int(question["answered"])
    if n == 0:
        raise DecisionError(f"--finding: nobody has answered {question_id!r} yet")
    options = question["options"]
    if option_id:
        chosen = next((o for o in options if str(o["id"]) == option_id), None)
        if chosen is None:
            known = ", ".join(str(o["id"]) for o in options)
            raise DecisionError(f"--finding: {question_id!r} has no option {option_id!r} ({known})")
    else:
        chosen = max(options, key=lambda o: o["count"])
    return Finding(
        survey_id,
        question_id,
        str(chosen["id"]),
        str(chosen["text"]),
        int(chosen["count"]),
        n,
    )


# -- storage -------------------------------------------------------------------------------

_COLUMNS = "id, title, you_said, we_did, decided_on, decided_by, owner, status, link, created_at"


async def insert(
    tx: Transaction, fields: dict[str, Any], survey_ids: list[str], finding: Finding | None
) -> int:
    now = now_iso()
    result = await tx.execute(
        "INSERT INTO impact_decisions (title, you_said, we_did, decided_on, decided_by, owner, "
        "status, link, created_by, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            fields["title"],
            fields["you_said"],
            fields["we_did"],
            fields.get("decided_on"),
            fields.get("decided_by"),
            fields.get("owner"),
            fields["status"],
            fields.get("link"),
            fields.get("created_by", "cli"),
            now,
            now,
        ),
    )
    decision_id = int(result.lastrowid)
    await link_surveys(tx, decision_id, survey_ids)
    if finding is not None:
        await store_finding(tx, decision_id, finding)
    return decision_id


async def link_surveys(
    tx: Transaction, decision_id: int, survey_ids: list[str], role: str = "informed"
) -> None:
    await tx.executemany(
        "INSERT OR IGNORE INTO impact_decision_surveys (decision_id, survey_id, role) "
        "VALUES (?, ?, ?)",
        [(decision_id, s, role) for s in survey_ids],
    )


async def store_finding(tx: Transaction, decision_id: int, finding: Finding) -> None:
    # One quoted finding per decision: a new one replaces the old.
    await tx.execute("DELETE FROM impact_findings WHERE decision_id = ?", (decision_id,))
    await tx.execute(
        "INSERT INTO impact_findings (decision_id, survey_id, question_id, option_id, "
        "option_text, count, n, share, quote, computed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            decision_id,
            finding.survey_id,
            finding.question_id,
            finding.option_id,
            finding.option_text,
            finding.count,
            finding.n,
            finding.share,
            finding.quote,
            now_iso(),
        ),
    )


async def update_fields(tx: Transaction, decision_id: int, fields: dict[str, Any]) -> None:
    if not fields:
        return
    allowed = {"title", "you_said", "we_did", "decided_on", "decided_by", "owner", "status", "link"}
    assert set(fields) <= allowed
    sets = ", ".join(f"{k} = ?" for k in fields)
    await tx.execute(
        f"UPDATE impact_decisions SET {sets}, updated_at = ? WHERE id = ?",
        (*fields.values(), now_iso(), decision_id),
    )


async def get(conn: ReadConn, decision_id: int) -> dict[str, Any] | None:
    """The decision as the hook and ``--format json`` show it, or None."""
    rows = await conn.execute_fetchall(
        f"SELECT {_COLUMNS} FROM impact_decisions WHERE id = ?", (decision_id,)
    )
    if not rows:
        return None
    return (await _complete(conn, [dict(rows[0])]))[0]


async def all_decisions(conn: ReadConn) -> list[dict[str, Any]]:
    rows = await conn.execute_fetchall(f"SELECT {_COLUMNS} FROM impact_decisions ORDER BY id")
    return await _complete(conn, [dict(r) for r in rows])


async def _complete(conn: ReadConn, decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not decisions:
        return decisions
    ids = [d["id"] for d in decisions]
    marks = ",".join("?" * len(ids))
    surveys: dict[int, list[str]] = {i: [] for i in ids}
    follow_ups: dict[int, list[str]] = {i: [] for i in ids}
    for r in await conn.execute_fetchall(
        "SELECT decision_id, survey_id, role FROM impact_decision_surveys "
        f"WHERE decision_id IN ({marks}) ORDER BY rowid",
        ids,
    ):
        (surveys if r["role"] == "informed" else follow_ups)[r["decision_id"]].append(
            r["survey_id"]
        )
    findings = {
        r["decision_id"]: dict(r)
        for r in await conn.execute_fetchall(
            "SELECT decision_id, survey_id, question_id, option_id, option_text, count, n, "
            f"share, quote FROM impact_findings WHERE decision_id IN ({marks})",
            ids,
        )
    }
    for d in decisions:
        d["surveys"] = surveys[d["id"]]
        d["follow_up_surveys"] = follow_ups[d["id"]]
        finding = findings.get(d["id"])
        if finding is not None:
            finding.pop("decision_id")
        d["finding"] = finding
    return decisions


def hook_payload(decision: dict[str, Any], change: str) -> dict[str, Any]:
    """What ``panelbot_decision_recorded`` is handed (docs/plugins.md)."""
    return {
        "id": decision["id"],
        "title": decision["title"],
        "you_said": decision["you_said"],
        "we_did": decision["we_did"],
        "surveys": list(decision["surveys"]),
        "decided_on": decision["decided_on"],
        "decided_by": decision["decided_by"],
        "owner": decision["owner"],
        "status": decision["status"],
        "link": decision["link"],
        "finding": decision["finding"]["quote"] if decision.get("finding") else None,
        "change": change,
    }


async def recorded(bot: Bot, decision: dict[str, Any], change: str) -> None:
    """Fire ``panelbot_decision_recorded`` for every plugin (this one schedules with it)."""
    await decision_recorded(bot, hook_payload(decision, change))


# -- what the commands do ------------------------------------------------------------------


async def add_decision(
    bot: Bot,
    *,
    title: str,
    you_said: str,
    we_did: str,
    surveys: str | None = None,
    decided_on: str | None = None,
    decided_by: str | None = None,
    owner: str | None = None,
    status: str = "decided",
    link: str | None = None,
    finding: str | None = None,
    created_by: str = "cli",
) -> dict[str, Any]:
    """Validate, store, fire the hook; the decision as stored."""
    fields = {
        "title": clean_text("--title", title, MAX_TITLE, one_line=True),
        "you_said": clean_text("--you-said", you_said, MAX_TEXT),
        "we_did": clean_text("--we-did", we_did, MAX_TEXT),
        "decided_on": clean_date(decided_on),
        "decided_by": clean_optional("--by", decided_by, MAX_NAME),
        "owner": clean_optional("--owner", owner, MAX_NAME),
        "status": clean_status(status),
        "link": clean_link(link),
        "created_by": created_by,
    }
    survey_ids = parse_survey_list(surveys)
    await check_surveys_exist(bot.db.conn, survey_ids)
    quoted = await compute_finding(bot, survey_ids, finding) if finding else None
    async with bot.db.transaction() as tx:
        decision_id = await insert(tx, fields, survey_ids, quoted)
    decision = await get(bot.db.conn, decision_id)
    assert decision is not None
    await recorded(bot, decision, "added")
    return decision


async def change_decision(
    bot: Bot, decision_id: int, changes: dict[str, Any], *, surveys: str | None, finding: str | None
) -> tuple[dict[str, Any], bool]:
    """Apply the options given to ``decision update``; (decision, whether its status changed)."""
    before = await get(bot.db.conn, decision_id)
    if before is None:
        raise DecisionError(f"no decision {decision_id} (see panelbot decision list)")
    cleaners = {
        "title": lambda v: clean_text("--title", v, MAX_TITLE, one_line=True),
        "you_said": lambda v: clean_text("--you-said", v, MAX_TEXT),
        "we_did": lambda v: clean_text("--we-did", v, MAX_TEXT),
        "decided_on": clean_date,
        "decided_by": lambda v: clean_optional("--by", v, MAX_NAME),
        "owner": lambda v: clean_optional("--owner", v, MAX_NAME),
        "status": clean_status,
        "link": clean_link,
    }
    fields = {k: cleaners[k](v) for k, v in changes.items() if v is not None}
    new_surveys = parse_survey_list(surveys) if surveys is not None else None
    if new_surveys:
        await check_surveys_exist(bot.db.conn, new_surveys)
    linked = list(dict.fromkeys(before["surveys"] + (new_surveys or [])))
    quoted = await compute_finding(bot, linked, finding) if finding else None
    if not fields and new_surveys is None and quoted is None:
        raise DecisionError("nothing to change: give --status or another field")
    async with bot.db.transaction() as tx:
        await update_fields(tx, decision_id, fields)
        if new_surveys:
            await link_surveys(tx, decision_id, new_surveys)
        if quoted is not None:
            await store_finding(tx, decision_id, quoted)
    decision = await get(bot.db.conn, decision_id)
    assert decision is not None
    status_changed = decision["status"] != before["status"]
    if status_changed:
        await recorded(bot, decision, "status")
    return decision, status_changed


async def citing(conn: ReadConn, survey_id: str) -> list[dict[str, Any]]:
    """The decisions a survey informed or asked about (``panelbot_survey_decisions``)."""
    rows = await conn.execute_fetchall(
        "SELECT DISTINCT d.id, d.title, d.status, d.decided_by, d.decided_on, d.we_did "
        "FROM impact_decisions d JOIN impact_decision_surveys s ON s.decision_id = d.id "
        "WHERE s.survey_id = ? ORDER BY d.id",
        (survey_id,),
    )
    return [dict(r) for r in rows]
