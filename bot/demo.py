"""``panelbot demo``: the whole panel on the simulator, with example panellists and surveys.

Running it again reuses the data folder: the config is kept, the panel re-import updates
rather than duplicates, unchanged surveys are not re-added, and the demo wave is opened only
when none is open.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import dump_toml, load_settings
from bot.resources import examples_dir

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.config import Settings

logger = logging.getLogger(__name__)

DEMO_SURVEY = "gp-access-2026"

_FIELDS: list[dict[str, Any]] = [
    {
        "name": "age_band",
        "values": ["16-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"],
        "text": {"en": "Which age group are you in?"},
    },
    {
        "name": "sex",
        "values": ["female", "male", "other", "prefer_not_to_say"],
        "text": {"en": "What is your sex?"},
        "labels": {"en": ["Female", "Male", "Other", "Prefer not to say"]},
    },
    {
        "name": "ethnicity",
        "values": ["white", "mixed", "asian", "black", "other", "prefer_not_to_say"],
        "text": {"en": "What is your ethnic group?"},
        "labels": {
            "en": [
                "White",
                "Mixed or multiple",
                "Asian or Asian British",
                "Black, Black British, Caribbean or African",
                "Other",
                "Prefer not to say",
            ]
        },
    },
    {
        "name": "imd_quintile",
        "values": ["1", "2", "3", "4", "5"],
        "text": {"en": "How would you describe your area? (1 = most deprived, 5 = least)"},
    },
    {
        "name": "locality",
        "values": ["northvale_city", "eastmoor", "riverside", "high_fells", "southport_bay"],
        "text": {"en": "Which part of Northvale do you live in?"},
        "labels": {
            "en": ["Northvale City", "Eastmoor", "Riverside", "High Fells", "Southport Bay"]
        },
    },
]


def demo_config(port: int) -> dict[str, Any]:
    return {
        "bot": {
            "name": "Northvale Citizens' Panel (demo)",
            "database": "panelbot.db",
            "timezone": "Europe/London",
            "default_locale": "en",
            "locales": ["en"],
            "contact": "the Northvale ICS engagement team (demo)",
            # A demo answers at any hour: no quiet hours for its broadcasts.
            "quiet_hours": False,
        },
        "web": {"host": "127.0.0.1", "port": port},
        "panel": {"fields": _FIELDS},
        # A demo panel is synthetic: the page may speak as any of its members.
        "channels": {"simulator": {"enabled": True, "allow_panellists": True}},
    }


def prepare_data_dir(data_dir: Path, port: int) -> Path:
    """Create the folder and its panelbot.toml (kept, with its port updated, on a re-run)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "panelbot.toml"
    if not config.exists():
        config.write_text(
            "# Written by `panelbot demo`. Use it with: panelbot -c "
            f"{config} <command>\n" + dump_toml(demo_config(port)),
            encoding="utf-8",
        )
    return config


async def load_examples(bot: Bot, settings: Settings) -> dict[str, Any]:
    """Import the example panel and surveys and open the demo wave (each step idempotent)."""
    from bot.engine.waves import launch
    from bot.panel import import_parsed, read_panel_file
    from bot.storage import surveys as survey_store
    from bot.surveys.loader import load_survey_file

    examples = examples_dir()
    parsed = read_panel_file(examples / "panel.csv", settings)
    report = await import_parsed(bot.db, bot.hash_key, settings, parsed, actor="demo")
    added_surveys = []
    for path in sorted((examples / "surveys").glob("*.toml")):
        async with bot.db.transaction() as conn:
            stored, created = await survey_store.add(conn, load_survey_file(path))
        if created:
            added_surveys.append(f"{stored.survey.id} v{stored.version}")
    open_waves = await survey_store.waves(bot.db.conn, status="open")
    demo_rows = {w.survey_row_id for w in open_waves}
    latest = await survey_store.latest_version(bot.db.conn, DEMO_SURVEY)
    wave_id = None
    if latest and latest.row_id not in demo_rows:
        wave_id = await launch(bot, DEMO_SURVEY, include_new=True)
    return {"panel": report.summary(), "surveys": added_surveys, "wave": wave_id}


def settings_for(data_dir: Path, port: int) -> tuple[Path, Settings]:
    config = prepare_data_dir(data_dir, port)
    return config, load_settings(config)
