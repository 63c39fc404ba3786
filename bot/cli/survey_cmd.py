"""``panelbot survey``: validate, add, list, launch and report on surveys."""

from __future__ import annotations

import json
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click

from bot.cli import CliContext, UserError, format_option, pass_cli, print_table, with_bot


def _load(path: str) -> Any:
    from bot.surveys.loader import SurveyError, load_survey_file

    try:
        return load_survey_file(Path(path))
    except SurveyError as exc:
        for line in str(exc).splitlines():
            click.echo(line, err=True)
        raise SystemExit(1) from None
    except OSError as exc:
        raise UserError(f"{path}: {exc.strerror or exc}") from None


def _parse_when(text: str, timezone: str) -> datetime:
    """An ISO date-time (local to the panel when it has no offset) or a delay such as 2h."""
    from bot.config_schema import DurationTooLong, parse_duration
    from bot.models import local_time

    try:
        return datetime.now(ZoneInfo(timezone)) + parse_duration(text)
    except DurationTooLong as exc:
        raise UserError(f"--at: {exc}") from None
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(
            f"--at {text!r}: expected a date-time such as 2026-12-01T09:30 or a delay such as 2h"
        ) from None
    try:
        when = local_time(when, timezone)
    except ValueError as exc:
        raise UserError(f"--at: {exc}") from None
    # A minute of slack for the time it takes to type; earlier would open at once, unasked.
    if when < datetime.now(UTC) - timedelta(minutes=1):
        raise UserError(f"--at: {text} is in the past (leave --at out to open the wave now)")
    # Far-off dates overflow the wave's arithmetic (closing time, reminders).
    if when.year > datetime.now(UTC).year + 100:
        raise UserError(f"--at {text!r}: at most 100 years from now")
    return when


def _duration(text: str | None) -> timedelta | None:
    from bot.config import parse_duration

    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UserError(f"--close-after: {exc}") from None


def register(cli: click.Group) -> None:
    @cli.group("survey")
    def survey_group() -> None:
        """Survey definitions (TOML files), waves and results."""

    @survey_group.command("validate")
    @click.argument("file", type=click.Path(dir_okay=False))
    def validate(file: str) -> None:
        """Check a survey file; problems name the question id and the field."""
        survey = _load(file)
        click.echo(
            f"OK: {survey.id} ({len(survey.questions)} questions, "
            f"locales {', '.join(survey.locales)})"
        )

    @survey_group.command("add")
    @click.argument("file", type=click.Path(dir_okay=False))
    @pass_cli
    def add(obj: CliContext, file: str) -> None:
        """Add a survey, or a new version when the file changed (answers keep their version)."""
        survey = _load(file)
        from bot.storage import surveys as survey_store

        async def work(bot: Any) -> tuple[Any, bool]:
            async with bot.db.transaction() as conn:
                return await survey_store.add(conn, survey)

        stored, created = with_bot(obj, work)
        if created:
            click.echo(f"added {survey.id} version {stored.version}")
        else:
            click.echo(f"unchanged: {survey.id} version {stored.version}")

    @survey_group.command("list")
    @format_option("table", "json")
    @pass_cli
    def list_surveys(obj: CliContext, fmt: str) -> None:
        """Surveys with their latest version, waves, invitations and completions."""
        from bot.storage import surveys as survey_store

        async def work(bot: Any) -> list[dict[str, Any]]:
            return await survey_store.summary(bot.db.conn)

        rows = with_bot(obj, work)
        if fmt == "json":
            click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
            return
        if not rows:
            click.echo("no surveys yet: add one with `panelbot survey add FILE`")
            return
        print_table(
            ["ID", "VERSION", "WAVES", "OPEN", "INVITED", "COMPLETED", "TITLE"],
            [
                [
                    r["id"],
                    r["version"],
                    r["waves"],
                    r["open_waves"],
                    r["invited"],
                    r["completed"],
                    r["title"],
                ]
                for r in rows
            ],
        )

    @survey_group.command("launch")
    @click.argument("survey_id")
    @click.option("--sample", type=click.IntRange(min=1), help="Invite N panellists (default all).")
    @click.option(
        "--at",
        "at",
        metavar="WHEN",
        help="Open later: ISO date-time (panel time zone) or a delay such as 2h.",
    )
    @click.option(
        "--close-after",
        metavar="DURATION",
        help="How long the wave stays open, e.g. 14d (default: bot.close_after).",
    )
    @click.option(
        "--include-new", is_flag=True, help="Also invite people who join while the wave is open."
    )
    @click.option(
        "--stratify-by",
        "stratify_by",
        metavar="F1,F2",
        help="Stratify the --sample over these panel fields so that expected completes match "
        "the population targets (the quotas plugin draws it; refused when no plugin can).",
    )
    @pass_cli
    def launch(
        obj: CliContext,
        survey_id: str,
        sample: int | None,
        at: str | None,
        close_after: str | None,
        include_new: bool,
        stratify_by: str | None,
    ) -> None:
        """Open a wave of SURVEY_ID and queue the invitations (a running bot sends them).

        With --stratify-by, the allocation per cell (population share, expected response
        rate, invited) is printed when the wave opens, and kept in the audit log.
        """
        from bot.engine.waves import WaveError
        from bot.engine.waves import launch as launch_wave
        from bot.storage import wave_stats

        fields = _field_list(stratify_by) if stratify_by is not None else None
        when = _parse_when(at, obj.settings.bot.timezone) if at else None
        length = _duration(close_after)

        async def work(bot: Any) -> tuple[int, dict[str, Any] | None]:
            try:
                wave_id = await launch_wave(
                    bot,
                    survey_id,
                    sample=sample,
                    at=when,
                    close_after=length,
                    include_new=include_new,
                    stratify_by=fields,
                )
            except WaveError as exc:
                raise UserError(str(exc)) from None
            return wave_id, await wave_stats.sample_report(bot.db.conn, wave_id)

        wave_id, report = with_bot(obj, work)
        state = "scheduled for " + when.isoformat(timespec="minutes") if when else "open"
        click.echo(f"wave {wave_id} of {survey_id}: {state}")
        if report is not None:
            _sample_table(report)
        elif fields and when:
            click.echo(f"the sample, stratified by {', '.join(fields)}, is drawn when it opens")

    @survey_group.command("results")
    @click.argument("survey_id")
    @click.option(
        "--weighted",
        is_flag=True,
        help="Weight respondents to the population (the quotas plugin rakes them to "
        "[plugins.quotas.population.*]): weighted percentages, each with its 95% margin of "
        "error from the effective sample size, and the raking's diagnostics.",
    )
    @click.option("--by", "by", metavar="FIELD", help="Break each question down by a panel field.")
    @format_option("table", "csv", "json")
    @pass_cli
    def results(obj: CliContext, survey_id: str, weighted: bool, by: str | None, fmt: str) -> None:
        """Invited, started, completed, response rate, counts per option and free text."""
        from bot.results import ResultsError, results_csv, survey_results

        async def work(bot: Any) -> dict[str, Any]:
            try:
                data = await survey_results(bot, survey_id, weighted=weighted, by=by)
            except ResultsError as exc:
                raise UserError(str(exc)) from None
            from bot.wave_report import add_wave_reports

            return await add_wave_reports(bot, data)  # cost and response per wave

        data = with_bot(obj, work)
        if fmt == "json":
            click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        elif fmt == "csv":
            click.echo(results_csv(data), nl=False)
        else:
            _results_table(data)

    @survey_group.command("share")
    @click.argument("survey_id")
    @click.option(
        "--expires",
        default="7d",
        show_default=True,
        metavar="DURATION",
        help="How long the link works, e.g. 7d or 36h (at most 366d).",
    )
    @click.option("--label", metavar="TEXT", help="Who the link is for, e.g. Healthwatch.")
    @click.option(
        "--revoke", type=click.IntRange(min=1), metavar="LINK_ID", help="Revoke link LINK_ID."
    )
    @pass_cli
    def share(
        obj: CliContext, survey_id: str, expires: str, label: str | None, revoke: int | None
    ) -> None:
        """Print a link where someone without an account tries SURVEY_ID's draft (its latest
        version) in a sandbox, in any panel language, and comments on each question.
        Nothing they answer reaches the panel or the results."""
        from bot.storage.shares import ShareError
        from bot.web.review import make_share, revoke_share

        given = click.get_current_context().get_parameter_source
        if revoke is not None:
            for name, option in (("expires", "--expires"), ("label", "--label")):
                if given(name) is click.core.ParameterSource.COMMANDLINE:
                    raise click.UsageError(f"{option} is for a new link, not with --revoke")

        async def work(bot: Any) -> Any:
            try:
                if revoke is not None:
                    return await revoke_share(bot, survey_id, revoke, actor="cli")
                return await make_share(bot, survey_id, length, label=label, actor="cli")
            except ShareError as exc:
                raise UserError(str(exc)) from None

        length = _share_duration(expires)
        if revoke is not None:
            with_bot(obj, work)
            click.echo(f"link {revoke} of {survey_id} revoked")
            return
        link, share_id, until = with_bot(obj, work)
        click.echo(f"link {share_id} (until {until}): {link}")


def _share_duration(text: str) -> timedelta:
    from bot.config_schema import parse_duration

    try:
        length = parse_duration(text)
    except ValueError as exc:  # DurationTooLong too
        raise UserError(f"--expires: {exc}") from None
    if length <= timedelta(0):
        raise UserError("--expires: must be longer than nothing, e.g. 7d")
    if length > timedelta(days=366):
        raise UserError("--expires: at most 366d")
    return length


def _field_list(text: str) -> list[str]:
    fields = [f.strip() for f in text.split(",")]
    if not all(fields):
        raise UserError(f"--stratify-by {text!r}: expected field names separated by commas")
    return fields


def _sample_table(report: dict[str, Any]) -> None:
    """The sampling plugin's allocation: one line per cell, then its notes."""
    fields = report.get("stratify_by")
    click.echo(
        f"invited {report.get('invited', 0)} of {report.get('eligible', 0)} eligible"
        + (f", stratified by {', '.join(fields)}" if fields else "")
    )
    cells = report.get("cells") or []
    if cells:
        print_table(
            ["CELL", "POP SHARE", "ELIGIBLE", "EXP RATE", "INVITED", "EXP COMPLETES"],
            [
                [
                    c.get("cell", ""),
                    _share(c.get("population_share")),
                    c.get("eligible", ""),
                    _share(c.get("expected_rate")),
                    c.get("invited", ""),
                    "-" if c.get("expected_completes") is None else c["expected_completes"],
                ]
                for c in cells
            ],
        )
    for note in report.get("notes") or []:
        click.echo(f"note: {note}")


def _share(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


LABEL_WIDTH = 40  # option labels in the table: longer ones wrap at a word boundary
GROUP_LABEL_WIDTH = 24  # option labels on a --by line: longer ones end in an ellipsis


def _shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, cut at a word boundary with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    space = cut.rfind(" ")
    if space >= width // 3:  # a word boundary not too far back; else cut the long word
        cut = cut[:space]
    return cut.rstrip(" ,;:-/") + "…"


def _summary(part: dict[str, Any]) -> str:
    """Mean and median (and min and max of numbers) of one question or group, if it has them."""
    if part.get("mean") is None:
        return ""
    text = f"mean {_number(part['mean'])}, median {_number(part['median'])}"
    if part.get("min") is not None:
        text += f", min {_number(part['min'])}, max {_number(part['max'])}"
    return text


def _number(value: float) -> str:
    """10.0 as 10, 2.345 as 2.35."""
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}".rstrip("0")


def _gap(gap: dict[str, Any] | None) -> str:
    if gap is None:
        return "none to compare"
    return (
        f"{gap['field']}={gap['value']} {gap['gap_points']:+.1f} points "
        f"({gap['respondents_percent']}% of respondents, {gap['population_percent']}% of "
        "the population)"
    )


def _weighting_lines(data: dict[str, Any]) -> list[str]:
    """Raking diagnostics and each wave's representativeness, under the counts."""
    lines = []
    w = data.get("weighting")
    if w and not w["respondents"]:
        lines.append("weights: nobody has answered yet, so there is nothing to weight")
    elif w and w.get("method") == "raking":
        fields = ", ".join(w["fields"]) or "no field"
        error = f"{100 * w['max_error']:.2g} points"
        if w["converged"]:
            lines.append(
                f"weights: raked on {fields}; converged in {w['iterations']} iterations "
                f"(largest gap from a target {error})"
            )
        else:
            lines.append(
                f"weights: raked on {fields}; NOT converged after {w['iterations']} "
                f"iterations: a weighted share is still {error} from its target"
            )
        if w.get("bounds"):
            low, high = w["bounds"]
            held = "held" if w["bounds_held"] else "NOT held"
            lines.append(
                f"weight bounds {_number(low)} to {_number(high)}: {held} "
                f"(weights {w['min_weight']} to {w['max_weight']})"
            )
        for cell in w.get("empty_cells", []):
            lines.append(
                f"empty cell: {cell['field']}={cell['value']} "
                f"({100 * cell['target']:.1f}% of the population) has no respondent: its share "
                "cannot be reached; the field is weighted to its other values"
            )
        for name, count in w.get("unknown", {}).items():
            lines.append(f"unknown {name}: {count} respondents, left out of that field's margin")
    if w and w["respondents"]:
        lines.append(
            f"design effect {w['design_effect']}, effective sample size {w['n_eff']} "
            f"of {w['respondents']} respondents; ± is a 95% margin of error"
        )
    for wave in data.get("representativeness", []):
        line = (
            f"wave {wave['wave']} ({wave['respondents']} respondents): largest gap from the "
            f"population {_gap(wave['before'])}"
        )
        if "after" in wave:
            line += f"; after weighting {_gap(wave['after'])}"
        lines.append(line)
    return lines


def _results_table(data: dict[str, Any]) -> None:
    weighted = " [weighted]" if data["weighted"] else ""
    click.echo(f"{data['title']} ({data['survey']} v{data['version']}){weighted}")
    click.echo(
        f"invited {data['invited']}, started {data['started']}, "
        f"completed {data['completed']}, response rate {data['response_rate']}%"
    )
    for line in _weighting_lines(data):
        click.echo(line)
    for q in data["questions"]:
        click.echo("")
        effective = f", effective {q['n_eff']}" if "n_eff" in q else ""
        click.echo(f"{q['id']}: {q['text']}  [{q['type']}, {q['answered']} answered{effective}]")
        for o in q.get("options", []):
            bar = "#" * int(o["percent"] / 5)
            lines = textwrap.wrap(o["text"], LABEL_WIDTH, break_on_hyphens=False) or [""]
            for line in lines[:-1]:
                click.echo(f"  {line}")
            moe = f" ±{o['moe']:>4.1f}" if o.get("moe") is not None else ""
            click.echo(
                f"  {lines[-1]:<{LABEL_WIDTH}} {o['count']:>5} {o['percent']:>6.1f}%{moe}  {bar}"
            )
        if _summary(q):
            click.echo(f"  {_summary(q)}")
        for text in q.get("responses", []):
            # An answer of several lines stays indented under its dash.
            click.echo("  - " + "\n    ".join(text.splitlines() or [""]))
        for group, part in sorted(q.get("by", {}).items()):
            shares = [
                f"{_shorten(o['text'], GROUP_LABEL_WIDTH)} {o['percent']}%"
                + (f" ±{o['moe']}" if o.get("moe") is not None else "")
                for o in part.get("options", [])
            ]
            if _summary(part):
                shares.append(_summary(part))
            effective = f", effective {part['n_eff']}" if "n_eff" in part else ""
            line = f"    {data['by']}={group} ({part['answered']}{effective})"
            click.echo(f"{line}: {', '.join(shares)}" if shares else line)
    for line in _wave_lines(data.get("waves", [])):
        click.echo(line)
    sys.stdout.flush()


def _wave_lines(waves: list[dict[str, Any]]) -> list[str]:
    """Each wave's messages, cost and response per group (bot.wave_report)."""
    lines = []
    for w in waves:
        if "messages" not in w:
            continue
        m, cost = w["messages"], w["cost"]
        lines += [
            "",
            f"wave {w['id']} ({w.get('status', '?')}): invited {w['invited']}, "
            f"completed {w['completed']}, response rate {w['response_rate']}%"
            + (f", sample stratified by {', '.join(w['stratify_by'])}" if w["stratify_by"] else ""),
        ]
        sent = [
            f"{c['channel']} {c['messages']}"
            + (f" ({c['segments']} segments)" if c["segments"] is not None else "")
            for c in m["by_channel"]
        ]
        waiting = (
            f"; {m['pending']} waiting, {m['failed']} failed" if m["pending"] or m["failed"] else ""
        )
        lines.append(f"  messages sent: {', '.join(sent) or 'none'}{waiting}")
        per = cost["per_completed"]
        lines.append(
            f"  estimated cost £{cost['total']:.2f}"
            + (f", £{per:.2f} per completed response" if per is not None else "")
        )
        for name, groups in w["groups"].items():
            basis = groups[0]["gap_vs"] if groups else "population"
            parts = [
                f"{g['group']} {g['completed']}/{g['invited']} {g['response_rate']}%"
                + ("" if g["gap_points"] is None else f" {g['gap_points']:+.1f}")
                for g in groups
            ]
            lines.append(
                f"  by {name} (completed/invited, rate, gap vs {basis} in points): "
                + ", ".join(parts)
            )
    return lines
