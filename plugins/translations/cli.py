"""``panelbot messages check|export|import``: catalogs for staff and translators."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bot.plugin_api import CliContext, UserError, core_messages_dir, format_option, pass_cli
from plugins.translations import po
from plugins.translations.catalogs import (
    SOURCE_LOCALE,
    catalog_of,
    is_locale_name,
    template_names,
)
from plugins.translations.check import check_catalogs

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group("messages")
def messages_group() -> None:
    """Message catalogs: completeness, SMS cost per locale, and the translators' PO files."""


@messages_group.command("check")
@click.option("--locale", metavar="L", help="Check only this locale (default: every catalog).")
@format_option("table", "json", dest="output_format", help="table for people, json for scripts.")
@click.option(
    "--messages-dir",
    "dirs",
    type=_DIR,
    multiple=True,
    metavar="DIR",
    help="Catalog folder(s) to check, searched in order (default: panelbot's messages/).",
)
@pass_cli
def check_command(
    obj: CliContext, locale: str | None, output_format: str, dirs: tuple[Path, ...]
) -> None:
    """Each locale's messages against English: present, falling back or missing; the SMS
    encoding, segments and cost per 1,000 of a typical rendering; reviewed or draft.

    Exits 1 when a locale's catalog lacks a message that its language does not provide
    (the panellist would get English) or has one that does not render. Drafts are reported,
    not failed. Messages over 3 segments are flagged.
    """
    settings = obj.settings
    folders = list(dirs) or [core_messages_dir()]
    if not template_names(SOURCE_LOCALE, folders):
        where = ", ".join(str(d) for d in folders)
        raise UserError(f"no English catalog ({SOURCE_LOCALE}/*.txt.j2) in {where}")
    locales = None
    if locale is not None:
        if not is_locale_name(locale) or catalog_of(locale, folders) is None:
            where = ", ".join(str(d) for d in folders)
            raise UserError(f"no catalog for locale {locale!r} in {where}")
        locales = [locale]
    report = check_catalogs(
        folders,
        locales,
        price_per_segment=settings.channels.twilio.sms_price_per_segment,
        panel_name=settings.bot.name,
        contact=settings.bot.contact,
        timezone=settings.bot.timezone,
        sanitise_sms=settings.channels.twilio.sanitize,
        # The panel's own menu when it offers several languages, else every catalog's.
        menu_locales=settings.bot.locales if len(settings.bot.locales) > 1 else None,
    )
    click.echo(report.to_json() if output_format == "json" else report.to_table())
    if not report.ok:
        raise UserError(report.failure_line())


@messages_group.command("export")
@click.option("--locale", required=True, metavar="L", help="The locale to translate into.")
@format_option(
    "po", dest="output_format", help="po: a gettext PO file for Poedit, Weblate and the like."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file (default: standard output).",
)
@click.option(
    "--messages-dir",
    type=_DIR,
    metavar="DIR",
    help="The catalog folder to export from (default: panelbot's messages/).",
)
def export_command(
    locale: str, output_format: str, output: Path | None, messages_dir: Path | None
) -> None:
    """Write a PO file for translating English into L.

    Each message is one entry: msgctxt is its name, msgid the English template, msgstr the
    L template (empty when missing), with the variables it may use in a comment. Each
    words.toml entry is one more, msgctxt "words:KEY", lists written as "a | b | c". An
    unreviewed (draft) catalog's translations are flagged fuzzy.
    """
    folder = messages_dir or core_messages_dir()
    try:
        data = po.export_po(folder, locale)
    except po.PoError as exc:
        raise UserError(str(exc)) from None
    if output is None:
        stdout = click.get_binary_stream("stdout")
        stdout.write(data)
        stdout.flush()
        return
    try:
        output.write_bytes(data)
    except OSError as exc:
        raise UserError(f"{output}: {exc.strerror or exc}") from None
    click.echo(f"Wrote {output} ({locale}, from {folder})", err=True)


@messages_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check and report; write nothing.")
@click.option(
    "--messages-dir",
    type=_DIR,
    metavar="DIR",
    help="The catalog folder to write into (default: panelbot's messages/).",
)
def import_command(file: Path, dry_run: bool, messages_dir: Path | None) -> None:
    """Write a translated PO file back into the catalog of its Language header.

    Every template must compile, use only the variables English uses and render; otherwise
    each problem is reported on its own line and nothing is written. A template reaching
    Python internals (__class__ and the like) or using what no message template may (calls
    such as range(), set, macros, include, * or %, |center...: see the README) is refused
    before any of it runs, with or without --dry-run; one longer than 10,000 characters or
    looping over more than 200 items is stopped while rendering. Empty entries are skipped;
    words.toml lists are updated in place.
    """
    folder = messages_dir or core_messages_dir()
    plan = po.plan_import(folder, file.read_bytes(), source=file.name)
    if plan.problems:
        for problem in plan.problems:
            click.echo(problem, err=True)
        count = len(plan.problems)
        raise UserError(
            f"import refused: {count} problem{'s' if count != 1 else ''}; nothing written"
        )
    for note in plan.notes:
        click.echo(f"note: {note}", err=True)
    verb = "would write" if dry_run else "wrote"
    for path in plan.writes:
        click.echo(f"{verb} {_shown(path, folder)}")
    if not dry_run:
        try:
            plan.apply()
        except OSError as exc:
            raise UserError(f"writing {exc.filename}: {exc.strerror or exc}") from None
    click.echo(
        f"{plan.locale}: {len(plan.writes)} file{'s' if len(plan.writes) != 1 else ''} "
        f"{'to write' if dry_run else 'written'}, {plan.unchanged} entries unchanged"
        + (" (dry run: nothing written)" if dry_run else ""),
        file=sys.stdout,
    )


def _shown(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder.parent))
    except ValueError:
        return str(path)
