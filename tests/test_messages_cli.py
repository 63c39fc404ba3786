"""``panelbot messages check|export|import`` through the real command line."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po, write_po

from bot.resources import messages_dir
from plugins.translations.words_file import update_words

SHIPPED = sorted(p.name for p in messages_dir().iterdir() if (p / "consent.txt.j2").is_file())
ENGLISH_MESSAGES = len(list((messages_dir() / "en").glob("*.txt.j2")))


def panelbot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PANELBOT_", "TWILIO_"))}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


def tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def messages(tmp_path: Path) -> Path:
    """A copy of the shipped catalogs that a test may change."""
    copy = tmp_path / "messages"
    shutil.copytree(messages_dir(), copy)
    return copy


def test_the_shipped_catalogs_are_complete() -> None:
    assert {"en", "cy", "pl", "ro", "ur"} <= set(SHIPPED)


# -- check ----------------------------------------------------------------------------------


def test_check_prints_an_aligned_table_and_a_summary_per_locale(tmp_path: Path) -> None:
    result = panelbot("messages", "check", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0]
    assert header.split() == [
        "LOCALE",
        "MESSAGE",
        "STATUS",
        "ENCODING",
        "SEGMENTS",
        "£/1000",
        "NOTE",
    ]
    rows = lines[1 : lines.index("")]
    assert len(rows) == ENGLISH_MESSAGES * len(SHIPPED)
    status_at, encoding_at = header.index("STATUS"), header.index("ENCODING")
    for row in rows:
        assert row[status_at - 1] == " " and row[status_at] != " "
        assert row[encoding_at:].startswith(("GSM-7", "UCS-2"))
    en_consent = next(r for r in rows if r.split()[:2] == ["en", "consent"])
    assert en_consent.split()[2:4] == ["present", "GSM-7"]
    summaries = {line.split(":")[0]: line for line in lines if line[:3].rstrip(":") in SHIPPED}
    assert set(summaries) == set(SHIPPED)
    assert summaries["en"].startswith(f"en: reviewed; {ENGLISH_MESSAGES} present, 0 fall back")
    assert "draft (not reviewed)" in summaries["cy"]
    assert "right-to-left" in summaries["ur"]
    assert "£0.0463 a segment" in result.stdout


def test_check_json_gives_encoding_segments_and_cost_for_each_message(tmp_path: Path) -> None:
    config = tmp_path / "panelbot.toml"
    config.write_text("[channels.twilio]\nsms_price_per_segment = 0.05\n", encoding="utf-8")

    result = panelbot("-c", str(config), "messages", "check", "--format", "json", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["price_per_segment"] == 0.05
    by_locale = {loc["locale"]: loc for loc in report["locales"]}
    assert sorted(by_locale) == SHIPPED
    for loc in by_locale.values():
        assert loc["counts"]["missing"] == loc["counts"]["broken"] == 0
        for message in loc["messages"]:
            assert message["status"] == "present"
            assert message["cost_per_1000"] == round(message["segments"] * 0.05 * 1000, 2)
            assert message["over_segment_limit"] == (message["segments"] > 3)
    assert by_locale["en"]["reviewed"] is True and by_locale["cy"]["reviewed"] is False
    urdu = {m["name"]: m for m in by_locale["ur"]["messages"]}
    assert by_locale["ur"]["direction"] == "rtl"
    assert all(m["encoding"] == "UCS-2" for m in urdu.values())
    english = {m["name"]: m for m in by_locale["en"]["messages"]}
    assert english["opted_out"]["encoding"] == "GSM-7"
    assert english["opted_out"]["segments"] == 1


def test_check_one_locale(tmp_path: Path) -> None:
    result = panelbot("messages", "check", "--locale", "cy", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert [loc["locale"] for loc in json.loads(result.stdout)["locales"]] == ["cy"]

    unknown = panelbot("messages", "check", "--locale", "xx", cwd=tmp_path)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("panelbot: no catalog for locale 'xx'")
    assert len(unknown.stderr.splitlines()) == 1


def test_check_fails_when_a_locale_lacks_a_message(tmp_path: Path, messages: Path) -> None:
    (messages / "cy" / "help.txt.j2").unlink()

    result = panelbot("messages", "check", "--messages-dir", str(messages), cwd=tmp_path)

    assert result.returncode == 1
    row = next(r for r in result.stdout.splitlines() if r.split()[:2] == ["cy", "help"])
    assert "MISSING (sends en)" in row
    assert result.stderr == "panelbot: messages missing or broken: cy: help (missing)\n"


def test_a_variant_falling_back_to_its_language_passes(tmp_path: Path, messages: Path) -> None:
    (messages / "cy-GB").mkdir()
    (messages / "cy-GB" / "welcome.txt.j2").write_text("Shwmae o {{ panel_name }}!\n")

    result = panelbot(
        "messages",
        "check",
        "--locale",
        "cy-GB",
        "--format",
        "json",
        "--messages-dir",
        str(messages),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    [loc] = json.loads(result.stdout)["locales"]
    statuses = {m["name"]: (m["status"], m["used_locale"]) for m in loc["messages"]}
    assert statuses["welcome"] == ("present", "cy-GB")
    assert statuses["consent"] == ("falls_back", "cy")


def test_check_fails_on_a_template_that_does_not_render(tmp_path: Path, messages: Path) -> None:
    (messages / "pl" / "welcome.txt.j2").write_text("Witamy w {{ panel_nazwa }}\n")

    result = panelbot("messages", "check", "--messages-dir", str(messages), cwd=tmp_path)

    assert result.returncode == 1
    row = next(r for r in result.stdout.splitlines() if r.split()[:2] == ["pl", "welcome"])
    assert "BROKEN" in row and "'panel_nazwa' is undefined" in row
    assert "pl: welcome (broken)" in result.stderr


def test_without_the_plugin_there_is_no_messages_command(tmp_path: Path) -> None:
    config = tmp_path / "panelbot.toml"
    config.write_text('[plugins]\ndisabled = ["translations"]\n', encoding="utf-8")
    result = panelbot("-c", str(config), "messages", "check", cwd=tmp_path)
    assert result.returncode == 2 and "No such command 'messages'" in result.stderr


# -- export and import ----------------------------------------------------------------------


@pytest.mark.parametrize("locale", [locale for locale in SHIPPED if locale != "en"])
def test_export_then_import_changes_nothing(tmp_path: Path, messages: Path, locale: str) -> None:
    before = tree(messages)
    po_file = tmp_path / f"{locale}.po"

    exported = panelbot(
        "messages",
        "export",
        "--locale",
        locale,
        "--format",
        "po",
        "--output",
        str(po_file),
        "--messages-dir",
        str(messages),
        cwd=tmp_path,
    )
    assert exported.returncode == 0, exported.stderr
    imported = panelbot(
        "messages", "import", str(po_file), "--messages-dir", str(messages), cwd=tmp_path
    )

    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(f"{locale}: 0 files written")
    assert tree(messages) == before


def read_export(locale: str, cwd: Path, messages: Path | None = None) -> bytes:
    args = ["messages", "export", "--locale", locale]
    if messages is not None:
        args += ["--messages-dir", str(messages)]
    result = subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=cwd, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_po_file_is_what_translation_tools_expect(tmp_path: Path) -> None:
    data = read_export("cy", tmp_path)
    # Jinja templates are not Python formats: no tool should check them as such.
    assert b"python-format" not in data and b"python-brace-format" not in data
    catalog = read_po(io.BytesIO(data))

    assert str(catalog.locale) == "cy"
    headers = dict(catalog.mime_headers)
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Plural-Forms"].startswith("nplurals=")
    consent = catalog.get(
        (messages_dir() / "en" / "consent.txt.j2").read_text().removesuffix("\n"),
        context="consent",
    )
    assert consent is not None
    assert consent.string == (messages_dir() / "cy" / "consent.txt.j2").read_text()[:-1]
    assert consent.fuzzy  # the Welsh catalog is a draft
    assert "Variables: {{ welcome }}" in consent.auto_comments
    stop = next(m for m in catalog if m.context == "words:stop")
    assert stop.id.startswith("stop | stopall") and "stopio" in stop.string.split(" | ")

    english = read_po(io.BytesIO(read_export("en", tmp_path)))
    assert not any(m.fuzzy for m in english if m.id)  # reviewed: nothing is fuzzy


def edited_po(data: bytes, changes: dict[str, str]) -> bytes:
    catalog = read_po(io.BytesIO(data))
    for message in catalog:
        if message.context in changes:
            message.string = changes[message.context]
    out = io.BytesIO()
    write_po(out, catalog)
    return out.getvalue()


def test_import_writes_changed_templates_and_words_and_nothing_else(
    tmp_path: Path, messages: Path
) -> None:
    before = tree(messages)
    po_file = tmp_path / "cy.po"
    po_file.write_bytes(
        edited_po(
            read_export("cy", tmp_path, messages),
            {
                "survey_closed": "Diolch. Mae'r arolwg wedi cau.",
                "words:stop": "stopio | dad-danysgrifio | stop nawr",
            },
        )
    )

    dry = panelbot(
        "messages",
        "import",
        str(po_file),
        "--dry-run",
        "--messages-dir",
        str(messages),
        cwd=tmp_path,
    )
    assert dry.returncode == 0, dry.stderr
    assert "would write messages/cy/survey_closed.txt.j2" in dry.stdout
    assert tree(messages) == before

    result = panelbot(
        "messages", "import", str(po_file), "--messages-dir", str(messages), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    after = tree(messages)
    changed = {path for path in after if after[path] != before.get(path)}
    assert changed == {"cy/survey_closed.txt.j2", "cy/words.toml"}
    assert after["cy/survey_closed.txt.j2"] == b"Diolch. Mae'r arolwg wedi cau.\n"
    old_words = before["cy/words.toml"].decode().splitlines()
    new_words = after["cy/words.toml"].decode().splitlines()
    assert [a for a, b in zip(old_words, new_words, strict=True) if a != b] == [
        'stop = ["stopio", "dad-danysgrifio"]'
    ]
    assert 'stop = ["stopio", "dad-danysgrifio", "stop nawr"]' in new_words


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"welcome": "Croeso i {{ panel_name }"},
            "cy.po: welcome: does not compile: unexpected '}'",
        ),
        (
            {"opted_out": "Hwyl fawr {{ panellist_phone }}."},
            "cy.po: opted_out: uses panellist_phone, which English does not "
            "(available: panel_name)",
        ),
        (
            {"invitation": "{{ questions|plural(one='# cwestiwn') }}"},
            "cy.po: cy/invitation: refused, not run: uses |plural(...) without other=, which "
            "no message template may use (line 1)",
        ),
        ({"words:yes": "ie | | do"}, "cy.po: words:yes: an empty word in 'ie | | do'"),
        (
            # A name built while rendering, which only the sandbox could stop: |attr is not on
            # the allowlist, so nothing of it runs.
            {"opted_out": "{{ panel_name|attr('_' ~ '_class__') }}"},
            "cy.po: cy/opted_out: refused, not run: uses |attr, which no message template "
            "may use (line 1)",
        ),
        (
            # Within the allowlist, but 7 x 7 times the question's text: stopped at the cap.
            {
                "field_question": "{% for a in options %}{% for b in options %}"
                + "{{ text }}" * 10
                + "{% endfor %}{% endfor %}"
            },
            "cy.po: cy/field_question: refused, stopped while rendering: "
            "its text passed 10,000 characters",
        ),
    ],
)
def test_a_bad_translation_is_refused_with_a_reason_and_nothing_written(
    tmp_path: Path, messages: Path, changes: dict[str, str], reason: str
) -> None:
    before = tree(messages)
    po_file = tmp_path / "cy.po"
    po_file.write_bytes(
        edited_po(
            read_export("cy", tmp_path, messages),
            {**changes, "survey_closed": "Diolch."},  # a good change, refused with the rest
        )
    )

    result = panelbot(
        "messages", "import", str(po_file), "--messages-dir", str(messages), cwd=tmp_path
    )

    assert result.returncode == 1
    problem, final = result.stderr.splitlines()
    assert problem.startswith(reason)
    assert final == "panelbot: import refused: 1 problem; nothing written"
    assert tree(messages) == before


def code_running_template(marker: Path) -> str:
    """What the attack of issue 9 used: from a str to os.system through __class__.__mro__."""
    return (
        "{% for c in panel_name.__class__.__mro__[1].__subclasses__() %}"
        "{% if c.__name__ == 'catch_warnings' %}"
        "{{ c()._module.__builtins__['__import__']('os').system('touch " + str(marker) + "') }}"
        "{% endif %}{% endfor %}Hwyl fawr o {{ panel_name }}."
    )


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "import"])
def test_a_translation_that_would_run_code_is_refused_before_anything_renders(
    tmp_path: Path, messages: Path, dry_run: bool
) -> None:
    marker = tmp_path / "the-template-ran"
    before = tree(messages)
    po_file = tmp_path / "cy.po"
    po_file.write_bytes(
        edited_po(
            read_export("cy", tmp_path, messages),
            {"opted_out": code_running_template(marker), "survey_closed": "Diolch."},
        )
    )

    result = panelbot(
        "messages",
        "import",
        str(po_file),
        *(["--dry-run"] if dry_run else []),
        "--messages-dir",
        str(messages),
        cwd=tmp_path,
    )

    assert not marker.exists()
    assert result.returncode == 1
    problem, final = result.stderr.splitlines()
    assert problem == (
        "cy.po: cy/opted_out: refused, not run: uses __builtins__, __class__, __import__ "
        "and 4 more, which no message template may use (line 1)"
    )
    assert final == "panelbot: import refused: 1 problem; nothing written"
    assert tree(messages) == before


# What exhausted memory or time under the sandbox alone (issue 9, follow-up), and what each
# is refused for: the allowlist of what a message template may use.
EXHAUSTING_TEMPLATES = {
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}"
    "{% set ns.s = ns.s ~ ns.s %}{% endfor %}": "namespace(), range(), {% set %} and 1 more",
    "{{ 'x'|center(999999999) }}": "|center",
    "{{ range(99999)|join(range(99999)|join) }}": "range(), |join(...) with anything but a "
    "short quoted separator",
    "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}": "range()",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}": "m(), {% macro %}",
}


@pytest.mark.parametrize("template", list(EXHAUSTING_TEMPLATES))
def test_a_translation_that_would_exhaust_memory_or_time_is_one_line_at_import(
    tmp_path: Path, messages: Path, template: str
) -> None:
    before = tree(messages)
    po_file = tmp_path / "cy.po"
    po_file.write_bytes(
        edited_po(read_export("cy", tmp_path, messages), {"opted_out": template + "Hwyl."})
    )

    result = panelbot(
        "messages",
        "import",
        str(po_file),
        "--dry-run",
        "--messages-dir",
        str(messages),
        cwd=tmp_path,
    )

    assert result.returncode == 1
    problem, final = result.stderr.splitlines()
    assert problem == (
        f"cy.po: cy/opted_out: refused, not run: uses {EXHAUSTING_TEMPLATES[template]}, "
        "which no message template may use (line 1)"
    )
    assert final == "panelbot: import refused: 1 problem; nothing written"
    assert tree(messages) == before


def test_check_names_each_template_that_would_exhaust_memory_or_time(
    tmp_path: Path, messages: Path
) -> None:
    names = ["welcome", "opted_out", "opted_in", "survey_closed", "help"]
    for name, template in zip(names, EXHAUSTING_TEMPLATES, strict=True):
        (messages / "cy" / f"{name}.txt.j2").write_text(template + "\n", encoding="utf-8")

    result = panelbot("messages", "check", "--messages-dir", str(messages), cwd=tmp_path)

    assert result.returncode == 1
    reasons = {
        name: f"uses {EXHAUSTING_TEMPLATES[template]}, which no message template may use (line 1)"
        for name, template in zip(names, EXHAUSTING_TEMPLATES, strict=True)
    }
    # One line for each refused template (the catalog's log), then the check's own line.
    *logged, final = result.stderr.splitlines()
    assert sorted(logged) == sorted(
        f"message cy/{name} refused, never rendered: {reason}" for name, reason in reasons.items()
    )
    assert final == "panelbot: messages missing or broken: cy: " + ", ".join(
        f"{name} (broken)" for name in sorted(names)
    )
    rows = {tuple(r.split()[:2]): r for r in result.stdout.splitlines() if r.startswith("cy ")}
    for name, reason in reasons.items():
        assert "BROKEN" in rows[("cy", name)]
        assert f"refused, never rendered: {reason}" in rows[("cy", name)]


def test_check_names_a_template_stopped_while_rendering(tmp_path: Path, messages: Path) -> None:
    # Within the allowlist, but 7 x 7 times the question's text: stopped at 10,000 characters.
    (messages / "cy" / "field_question.txt.j2").write_text(
        "{% for a in options %}{% for b in options %}" + "{{ text }}" * 10 + "{% endfor %}"
        "{% endfor %}\n",
        encoding="utf-8",
    )

    result = panelbot("messages", "check", "--messages-dir", str(messages), cwd=tmp_path)

    assert result.returncode == 1
    rows = {tuple(r.split()[:2]): r for r in result.stdout.splitlines() if r.startswith("cy ")}
    assert "BROKEN" in rows[("cy", "field_question")]
    assert (
        "refused, stopped while rendering: its text passed 10,000 characters"
        in rows[("cy", "field_question")]
    )
    assert result.stderr.splitlines() == [
        "message cy/field_question refused, stopped while rendering: its text passed 10,000 "
        "characters",
        "panelbot: messages missing or broken: cy: field_question (broken)",
    ]


@pytest.mark.parametrize(
    "template",
    [
        "{{ panel_name.__class__.__mro__ }}",
        "{{ panel_name['__class__'] }}",
        "{{ panel_name|attr('__class__') }}",
        "{{ '{0.__class__}'.format(panel_name) }}",
        "{% set seen = [] %}{{ seen.append(panel_name) }}",
    ],
)
def test_check_names_a_template_placed_in_the_catalog_that_would_reach_internals(
    tmp_path: Path, messages: Path, template: str
) -> None:
    marker = tmp_path / "the-template-ran"
    (messages / "cy" / "welcome.txt.j2").write_text(template + "\n", encoding="utf-8")
    (messages / "cy" / "opted_out.txt.j2").write_text(
        code_running_template(marker) + "\n", encoding="utf-8"
    )

    result = panelbot("messages", "check", "--messages-dir", str(messages), cwd=tmp_path)

    assert not marker.exists()
    assert result.returncode == 1
    rows = {tuple(r.split()[:2]): r for r in result.stdout.splitlines() if r.startswith("cy ")}
    for name in ("welcome", "opted_out"):
        assert "BROKEN" in rows[("cy", name)]
        assert "refused, never rendered: uses " in rows[("cy", name)]
    assert "cy: opted_out (broken), welcome (broken)" in result.stderr


def test_export_refuses_an_english_template_that_would_reach_internals(
    tmp_path: Path, messages: Path
) -> None:
    (messages / "en" / "welcome.txt.j2").write_text("{{ panel_name.__class__ }}\n")

    result = panelbot(
        "messages", "export", "--locale", "cy", "--messages-dir", str(messages), cwd=tmp_path
    )

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "panelbot: en/welcome.txt.j2: uses __class__, which no message template may use"
    ]


def test_importing_a_new_language_creates_its_catalog_as_a_draft(
    tmp_path: Path, messages: Path
) -> None:
    po_file = tmp_path / "fr.po"
    po_file.write_bytes(
        edited_po(
            read_export("fr", tmp_path, messages),
            {"welcome": "Bonjour de {{ panel_name }} !", "words:yes": "oui | d'accord"},
        )
    )

    result = panelbot(
        "messages", "import", str(po_file), "--messages-dir", str(messages), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert (messages / "fr" / "welcome.txt.j2").read_text() == "Bonjour de {{ panel_name }} !\n"
    words = (messages / "fr" / "words.toml").read_text()
    assert 'yes = ["oui", "d\'accord"]' in words
    assert "[catalog]\nreviewed = false" in words
    check = panelbot(
        "messages", "check", "--locale", "fr", "--messages-dir", str(messages), cwd=tmp_path
    )
    assert check.returncode == 1 and "fr: consent (missing)" in check.stderr


def test_changing_a_reviewed_catalog_makes_it_a_draft_again(tmp_path: Path, messages: Path) -> None:
    # English is never imported (it is what translations are made from): a reviewed Welsh.
    words = messages / "cy" / "words.toml"
    words.write_text(words.read_text().replace("\nreviewed = false", "\nreviewed = true"))
    po_file = tmp_path / "cy.po"
    po_file.write_bytes(
        edited_po(read_export("cy", tmp_path, messages), {"survey_closed": "Diolch. Ar gau."})
    )

    result = panelbot(
        "messages", "import", str(po_file), "--messages-dir", str(messages), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert "cy was marked reviewed; it is now a draft" in result.stderr
    assert "\nreviewed = false" in words.read_text()


def test_words_are_updated_in_place_keeping_comments_and_other_lines() -> None:
    original = (
        "# Welsh words.\r\n"
        'yes = ["ie",\r\n'
        '       "do"]  # spread over lines\r\n'
        'no = ["na"]\r\n'
        "\r\n"
        "# about the catalog\r\n"
        "[catalog]\r\n"
        "reviewed = false\r\n"
    )

    updated = update_words(original, {"yes": ["ie", "iawn"], "help": ["cymorth"]})

    assert updated == (
        "# Welsh words.\r\n"
        'yes = ["ie", "iawn"]\r\n'
        'no = ["na"]\r\n'
        'help = ["cymorth"]\r\n'
        "\r\n"
        "# about the catalog\r\n"
        "[catalog]\r\n"
        "reviewed = false\r\n"
    )
    assert update_words(original, {}) == original
