"""``panelbot panel select``: a fair lottery for a sub-panel, recorded for audit.

The quota file, the pool (active panellists, through ``bot.plugin_api``), the lottery
(:mod:`.selection`), its record in ``quotas_selections`` with an audit-log line, and the
invitations ``--invite`` queues. Output never carries phone numbers or names: ids and the
quota fields only.
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import json
import secrets
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from bot.plugin_api import (
    CliContext,
    MessageKind,
    UserError,
    active_panellists,
    format_option,
    pass_cli,
    queue_message,
    record_audit,
    render_message,
    table_lines,
    with_bot,
)
from plugins.quotas import selection
from plugins.quotas.selection import (
    ALGORITHMS,
    Distribution,
    InfeasibleQuotas,
    PoolMember,
    Quota,
    SelectionProblem,
)

if TYPE_CHECKING:
    from bot.plugin_api import Bot, Panellist, Settings

MESSAGES = Path(__file__).resolve().parent / "messages"
TEMPLATE = "selection_invitation"
MAX_SEED = 2**63 - 1
QUOTA_KEYS = {"field", "value", "min", "max"}


def register(cli: click.Group) -> None:
    """Add ``select`` to the core ``panel`` group (absent when this plugin is disabled)."""
    panel = cli.commands.get("panel")
    if isinstance(panel, click.Group):
        panel.add_command(select_cmd)


# --- the quota file -------------------------------------------------------------------

MAX_QUOTA_FILE = 1_000_000  # bytes


def parse_quotas(text: str, source: str, settings: Settings, size: int) -> list[Quota]:
    """The ``[[quota]]`` tables of a quota file, checked; :class:`UserError` names the table."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"quota file {source}: not valid TOML: {exc}") from None
    extra = sorted(set(data) - {"quota"})
    if extra:
        raise UserError(f"quota file {source}: unknown key {extra[0]!r}; only [[quota]] tables")
    tables = data.get("quota")
    if not isinstance(tables, list) or not tables:
        raise UserError(f"quota file {source}: no [[quota]] tables")
    fields = {f.name: list(f.values) for f in settings.panel.fields}
    quotas: list[Quota] = []
    seen: dict[tuple[str, str], int] = {}
    for number, table in enumerate(tables, start=1):
        where = f"quota file {source}: [[quota]] #{number}"
        if not isinstance(table, dict):
            raise UserError(f"{where}: must be a table")
        unknown = sorted(set(table) - QUOTA_KEYS)
        if unknown:
            raise UserError(f"{where}: unknown key {unknown[0]!r} (field, value, min, max)")
        missing = [key for key in ("field", "value", "min", "max") if key not in table]
        if missing:
            raise UserError(f"{where}: missing {missing[0]!r}")
        name, value = table["field"], table["value"]
        if not isinstance(name, str) or not isinstance(value, str):
            raise UserError(f"{where}: field and value must be strings")
        if name not in fields:
            known = ", ".join(fields) or "none configured"
            raise UserError(f"{where}: {name!r} is not a panel field ({known})")
        if value not in fields[name]:
            raise UserError(
                f"{where}: {value!r} is not a value of {name} ({', '.join(fields[name])})"
            )
        low, high = table["min"], table["max"]
        for key, number_value in (("min", low), ("max", high)):
            if isinstance(number_value, bool) or not isinstance(number_value, int):
                raise UserError(f"{where} ({name} = {value}): {key} must be a whole number")
            if number_value < 0:
                raise UserError(f"{where} ({name} = {value}): {key} must not be negative")
        if low > high:
            raise UserError(f"{where} ({name} = {value}): min {low} is more than max {high}")
        if low > size:
            raise UserError(f"{where} ({name} = {value}): min {low} is more than the size {size}")
        if (name, value) in seen:
            raise UserError(f"{where}: {name} = {value} is already set by #{seen[(name, value)]}")
        seen[(name, value)] = number
        quotas.append(Quota(name, value, low, high, number))
    for name in dict.fromkeys(q.field for q in quotas):
        mine = [q for q in quotas if q.field == name]
        tables_named = ", ".join(f"#{q.table}" for q in mine)
        low = sum(q.min for q in mine)
        if low > size:
            raise UserError(
                f"quota file {source}: [[quota]] {tables_named} ({name}): the minimums add up "
                f"to {low}, more than the size {size}"
            )
        high = sum(q.max for q in mine)
        if {q.value for q in mine} == set(fields[name]) and high < size:
            raise UserError(
                f"quota file {source}: [[quota]] {tables_named} ({name}): the maximums add up "
                f"to {high}, less than the size {size}"
            )
    return quotas


# --- the lottery ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one ``panel select`` decided and recorded."""

    selection_id: int
    repeated: bool  # the same lottery was already recorded (same inputs, same seed)
    seed: int
    seed_given: bool
    algorithm: str
    size: int
    pool: list[PoolMember]
    fields: tuple[str, ...]
    distribution: Distribution | None
    selected: list[int]
    reserves: list[int]
    quota_sha256: str
    household: str | None
    invited: int = 0
    already_invited: int = 0
    no_address: int = 0


def pool_of(
    people: Sequence[Panellist], fields: Sequence[str], household: str | None
) -> list[PoolMember]:
    """The pool as the lottery sees it: ids, quota fields, household keys. No addresses."""
    return [
        PoolMember(
            id=p.id,
            features={f: str(p.demographics.get(f) or "") for f in fields},
            household=household_key(p.demographics.get(household)) if household else None,
        )
        for p in people
    ]


def household_key(value: object) -> str | None:
    """A household key compared as people type addresses: case and spacing ignored."""
    key = " ".join(str(value or "").split()).casefold()
    return key or None


def run_lottery(
    pool: list[PoolMember],
    quotas: list[Quota],
    size: int,
    algorithm: str,
    seed: int,
    household: bool,
    reserve_count: int,
    time_limit: float | None = None,
) -> tuple[Distribution | None, list[int], list[int]]:
    """The distribution (None for legacy), the drawn panel, and the ordered reserves."""
    import numpy as np

    rng = np.random.default_rng(seed)
    fields = selection.quota_fields(quotas)
    try:
        if algorithm == "legacy":
            distribution = None
            chosen = selection.legacy_draw(pool, quotas, size, seed, household)
        else:
            distribution = selection.find_distribution(pool, quotas, size, algorithm, time_limit)
            chosen = selection.draw(distribution, rng)
    except InfeasibleQuotas:
        change = selection.relaxation(pool, quotas, size, household)
        raise UserError(
            f"no panel of {size} from these {len(pool)} people meets every quota; "
            f"sortition-algorithms suggests: {change}"
        ) from None
    except SelectionProblem as exc:
        raise UserError(str(exc)) from None
    return distribution, chosen, selection.reserves(pool, chosen, fields, reserve_count, rng)


def _record_row(outcome: Outcome, actor: str) -> tuple[Any, ...]:
    dist = outcome.distribution
    summary: dict[str, Any] = {"algorithm": outcome.algorithm}
    if dist is not None:
        summary.update(
            minimum=dist.minimum,
            optimal=dist.optimal,
            minimum_upper_bound=dist.minimum_bound,
            gini=selection.gini(dist.probabilities.values()),
            profiles=dist.profile_rows(),
            classes=len(dist.classes),
            panels_in_lottery=int((dist.weights > 0).sum()),
        )
    from datetime import UTC, datetime

    return (
        datetime.now(UTC).isoformat(timespec="seconds"),
        actor,
        outcome.algorithm,
        outcome.seed,
        outcome.quota_sha256,
        outcome.size,
        len(outcome.pool),
        outcome.household,
        dist.minimum if dist is not None else None,
        json.dumps(summary),
        json.dumps(outcome.selected),
        json.dumps(outcome.reserves),
    )


async def _record(
    bot: Bot, outcome: Outcome, actor: str, people: dict[int, Panellist], invite: bool
) -> None:
    async with bot.db.transaction() as tx:
        [row] = (
            await tx.execute_fetchall(
                "SELECT max(id) FROM quotas_selections WHERE algorithm = ? AND seed = ? "
                "AND quota_file_sha256 = ? AND size = ? AND household_field IS ? "
                "AND selected = ? AND reserves = ?",
                (
                    outcome.algorithm,
                    outcome.seed,
                    outcome.quota_sha256,
                    outcome.size,
                    outcome.household,
                    json.dumps(outcome.selected),
                    json.dumps(outcome.reserves),
                ),
            )
        ) or [(None,)]
        if row[0] is not None:
            outcome.selection_id, outcome.repeated = int(row[0]), True
        else:
            result = await tx.execute(
                "INSERT INTO quotas_selections (created_at, actor, algorithm, seed, "
                "quota_file_sha256, size, pool_size, household_field, minimum_probability, "
                "probabilities, selected, reserves) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _record_row(outcome, actor),
            )
            outcome.selection_id = int(result.lastrowid)
            await record_audit(
                tx,
                "panel_select",
                {
                    "selection_id": outcome.selection_id,
                    "algorithm": outcome.algorithm,
                    "seed": outcome.seed,
                    "size": outcome.size,
                    "pool_size": len(outcome.pool),
                    "quota_file_sha256": outcome.quota_sha256,
                },
                actor=f"cli:{actor}",
            )
        if not invite:
            return
        for pid in outcome.selected:
            person = people[pid]
            if not person.addresses:
                outcome.no_address += 1
                continue
            text = render_message(
                bot,
                TEMPLATE,
                person.locale or bot.settings.bot.default_locale,
                panel_name=bot.settings.bot.name,
                size=outcome.size,
            )
            queued = await queue_message(
                tx,
                person,
                key=f"selection:{outcome.selection_id}:{pid}",
                text=text,
                kind=MessageKind.INVITATION,
                template=TEMPLATE,
            )
            if queued:
                outcome.invited += 1
            else:
                outcome.already_invited += 1
        if outcome.invited:
            await record_audit(
                tx,
                "panel_select_invited",
                {"selection_id": outcome.selection_id, "invited": outcome.invited},
                actor=f"cli:{actor}",
            )


# --- output -------------------------------------------------------------------------------


def as_json(outcome: Outcome) -> dict[str, Any]:
    by_id = {p.id: p for p in outcome.pool}
    dist = outcome.distribution

    def person(pid: int) -> dict[str, Any]:
        return {"id": pid, "features": by_id[pid].features}

    return {
        "selection_id": outcome.selection_id,
        "repeated": outcome.repeated,
        "algorithm": outcome.algorithm,
        "seed": outcome.seed,
        "seed_given": outcome.seed_given,
        "size": outcome.size,
        "pool_size": len(outcome.pool),
        "quota_file_sha256": outcome.quota_sha256,
        "household_field": outcome.household,
        "minimum_probability": dist.minimum if dist is not None else None,
        "optimal": dist.optimal if dist is not None else None,
        "minimum_upper_bound": dist.minimum_bound if dist is not None else None,
        "probabilities": (
            {str(pid): p for pid, p in sorted(dist.probabilities.items())} if dist else None
        ),
        "profiles": dist.profile_rows() if dist is not None else None,
        "never_selectable": dist.unreachable if dist is not None else [],
        "note": dist.note if dist is not None else "legacy: one greedy draw, no distribution",
        "selected": [person(pid) for pid in outcome.selected],
        "reserves": [person(pid) for pid in outcome.reserves],
        "invitations": {
            "queued": outcome.invited,
            "already_queued": outcome.already_invited,
            "no_address": outcome.no_address,
        },
    }


def as_table(outcome: Outcome) -> str:
    dist = outcome.distribution
    fields = list(outcome.fields)
    by_id = {p.id: p for p in outcome.pool}
    seed_note = (
        f"seed {outcome.seed}"
        if outcome.seed_given
        else f"seed {outcome.seed} (drawn at random; --seed {outcome.seed} repeats this draw)"
    )
    lines = [
        f"Selection {outcome.selection_id}"
        + (" (the same lottery as recorded before)" if outcome.repeated else "")
        + f": {outcome.size} of {len(outcome.pool)} active panellists by {outcome.algorithm}, "
        + seed_note
    ]
    if dist is not None:
        mean = outcome.size / len(outcome.pool)
        lines.append(
            f"Minimum selection probability {dist.minimum:.2%} (mean {mean:.2%}); {dist.note}"
        )
        if not dist.optimal:
            lines.append(
                "Stopped at --time-limit: the best lottery found so far (every panel in it "
                f"meets the quotas); no lottery can give everyone more than "
                f"{dist.minimum_bound:.2%}"
            )
        if dist.unreachable:
            lines.append(
                f"{len(dist.unreachable)} people are in no panel that meets the quotas "
                "(probability 0)"
            )
        selected_by_profile: dict[tuple[str, ...], int] = {}
        for pid in outcome.selected:
            key = tuple(by_id[pid].features[f] for f in fields)
            selected_by_profile[key] = selected_by_profile.get(key, 0) + 1
        rows = []
        for row in dist.profile_rows():
            features = row["features"]
            assert isinstance(features, dict)
            key = tuple(features[f] for f in fields)
            rows.append(
                [
                    *(v or "-" for v in key),
                    str(row["people"]),
                    f"{float(row['probability']):.2%}",  # type: ignore[arg-type]
                    str(selected_by_profile.get(key, 0)),
                ]
            )
        lines.append("Profiles (everyone in a profile has the same probability):")
        n = len(fields)
        lines += table_lines(
            [*fields, "people", "probability", "selected"],
            rows,
            right={n, n + 1, n + 2},
            indent="  ",
        )
    else:
        lines.append("legacy: one greedy draw by sortition-algorithms; no probabilities computed")
    lines.append(f"Selected ({len(outcome.selected)}):")
    lines += table_lines(
        ["id", *fields],
        [[pid, *(by_id[pid].features[f] or "-" for f in fields)] for pid in outcome.selected],
        right={0},
        indent="  ",
    )
    lines.append(f"Reserves ({len(outcome.reserves)}, call them in this order):")
    if outcome.reserves:
        lines += table_lines(
            ["#", "id", *fields],
            [
                [i, pid, *(by_id[pid].features[f] or "-" for f in fields)]
                for i, pid in enumerate(outcome.reserves, start=1)
            ],
            right={0, 1},
            indent="  ",
        )
    return "\n".join(lines)


# --- the command -------------------------------------------------------------------------


@click.command("select")
@click.option("--size", "-k", type=click.IntRange(min=1), required=True, help="People to select.")
@click.option(
    "--quotas",
    "quota_file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="TOML file of [[quota]] tables: field, value, min, max.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, MAX_SEED),
    help="Seed of the draw; the same seed, pool and quotas give the same result. "
    "Without it a random seed is used, printed and recorded.",
)
@click.option(
    "--algorithm",
    type=click.Choice(ALGORITHMS),
    default="maximin",
    show_default=True,
    help="maximin: the smallest selection probability as large as possible; nash: the "
    "product of probabilities as large as possible; legacy: sortition-algorithms' greedy "
    "draw (no probabilities).",
)
@format_option(
    "table",
    "json",
    dest="output_format",
    help="table shows probabilities per profile; json gives each person's.",
)
@click.option(
    "--reserves",
    "reserve_count",
    type=click.IntRange(min=0),
    help="How many reserves to list, in order (default: as many as --size).",
)
@click.option(
    "--household",
    metavar="FIELD",
    help="A panellist field holding a household key: at most one person per household "
    "on the panel.",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds to search for the optimal lottery; then the best found is used and the "
    "output says how far from optimal it may be.",
)
@click.option(
    "--invite",
    is_flag=True,
    help="Queue an invitation to each selected person (once per selection, however often "
    "it is run).",
)
@pass_cli
def select_cmd(
    cli_ctx: CliContext,
    size: int,
    quota_file: Path,
    seed: int | None,
    algorithm: str,
    output_format: str,
    reserve_count: int | None,
    household: str | None,
    time_limit: float,
    invite: bool,
) -> None:
    """Select a sub-panel (a workshop, a deliberative group) of --size active panellists
    by a fair lottery that meets every quota in the quota file (quotas plugin).

    maximin (the default) finds the lottery over quota-satisfying panels that makes the
    smallest chance of being selected as large as possible, then draws one panel from it.
    People with the same values on the quota fields share one probability. Reserves are
    listed in the order to call them, drawn from the rest to mirror the panel. Infeasible
    quotas are refused with the relaxation sortition-algorithms suggests. Every run is
    recorded for audit (seed, algorithm, quota file hash, who was selected); running the
    same selection again with the same seed finds the same record. No phone numbers are
    printed.
    """
    settings = cli_ctx.settings
    try:
        # Read with a limit: a huge file (or /dev/zero) is refused, not read for ever.
        with quota_file.open("rb") as handle:
            raw = handle.read(MAX_QUOTA_FILE + 1)
        if len(raw) > MAX_QUOTA_FILE:
            raise UserError(
                f"quota file {quota_file}: larger than {MAX_QUOTA_FILE // 1_000_000} MB; "
                "a quota file is a few [[quota]] tables"
            )
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(
            f"cannot read quota file {quota_file}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    quotas = parse_quotas(text, str(quota_file), settings, size)
    database = Path(settings.bot.database)
    if str(database) != ":memory:" and not database.exists():
        raise UserError(f"no database at {database} (config: {cli_ctx.config_source()})")
    seed_given = seed is not None
    if seed is None:
        # Short enough to read out and type again; unpredictable enough for a lottery.
        seed = secrets.randbelow(10**12)
    fields = selection.quota_fields(quotas)
    actor = _actor()

    async def work(bot: Bot) -> Outcome:
        people = await active_panellists(bot)
        if household and not any(p.demographics.get(household) for p in people):
            raise UserError(
                f"no active panellist has a value for the household field {household!r}"
            )
        pool = pool_of(people, fields, household)
        if len(pool) < size:
            raise UserError(f"only {len(pool)} active panellists, fewer than --size {size}")
        wanted = size if reserve_count is None else reserve_count
        distribution, chosen, reserve = await asyncio.to_thread(
            run_lottery,
            pool,
            quotas,
            size,
            algorithm,
            seed,
            household is not None,
            wanted,
            time_limit,
        )
        outcome = Outcome(
            selection_id=0,
            repeated=False,
            seed=seed,
            seed_given=seed_given,
            algorithm=algorithm,
            size=size,
            pool=pool,
            fields=fields,
            distribution=distribution,
            selected=chosen,
            reserves=reserve,
            quota_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
            household=household,
        )
        await _record(bot, outcome, actor, {p.id: p for p in people}, invite)
        return outcome

    outcome = with_bot(cli_ctx, work)
    if output_format == "json":
        click.echo(json.dumps(as_json(outcome), indent=2, ensure_ascii=False))
    else:
        click.echo(as_table(outcome))
        if invite:
            click.echo(
                f"Invitations: {outcome.invited} queued, {outcome.already_invited} already "
                f"queued before, {outcome.no_address} without an address"
            )


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
