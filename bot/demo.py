"""``panelbot demo``: the whole panel on the simulator, with example panellists and surveys.

Running it again reuses the data folder: the config is kept, the panel re-import updates
rather than duplicates, unchanged surveys are not re-added, and the demo wave is opened only
when none is open.
"""

from __future__ import annotations

import logging
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import dump_toml, load_settings
from bot.resources import examples_dir

if TYPE_CHECKING:
    from bot.app import Bot
    from bot.config import Settings

logger = logging.getLogger(__name__)

DEMO_SURVEY = "gp-access-2026"

# Every field speaks each demo locale: a question text and one label per value, in order.
# The translations (cy, pl, ur, ro) are drafts until a fluent speaker reviews them.
_FIELDS: list[dict[str, Any]] = [
    {
        "name": "age_band",
        "values": ["16-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"],
        "text": {
            "en": "Which age group are you in?",
            "cy": "Beth yw eich oedran?",
            "pl": "Do jakiej grupy wiekowej należysz?",
            "ur": "آپ کی عمر کتنی ہے؟",
            "ro": "În ce grupă de vârstă vă încadrați?",
        },
        "labels": {
            locale: ["16-24", "25-34", "35-44", "45-54", "55-64", "65-74", "75+"]
            for locale in ("en", "cy", "pl", "ur", "ro")
        },
    },
    {
        "name": "sex",
        "values": ["female", "male", "other", "prefer_not_to_say"],
        "text": {
            "en": "What is your sex?",
            "cy": "Beth yw eich rhyw?",
            "pl": "Jaka jest Twoja płeć?",
            "ur": "آپ کی جنس کیا ہے؟",
            "ro": "Care este sexul dvs.?",
        },
        "labels": {
            "en": ["Female", "Male", "Other", "Prefer not to say"],
            "cy": ["Benyw", "Gwryw", "Arall", "Gwell gennyf beidio â dweud"],
            "pl": ["Kobieta", "Mężczyzna", "Inna", "Wolę nie podawać"],
            "ur": ["عورت", "مرد", "دیگر", "بتانا پسند نہیں"],
            "ro": ["Feminin", "Masculin", "Altul", "Prefer să nu spun"],
        },
    },
    {
        "name": "ethnicity",
        "values": ["white", "mixed", "asian", "black", "other", "prefer_not_to_say"],
        "text": {
            "en": "What is your ethnic group?",
            "cy": "Beth yw eich grŵp ethnig?",
            "pl": "Do jakiej grupy etnicznej należysz?",
            "ur": "آپ کا نسلی گروپ کیا ہے؟",
            "ro": "Care este grupul dvs. etnic?",
        },
        "labels": {
            "en": [
                "White",
                "Mixed or multiple",
                "Asian or Asian British",
                "Black, Black British, Caribbean or African",
                "Other",
                "Prefer not to say",
            ],
            "cy": [
                "Gwyn",
                "Cymysg neu aml-ethnig",
                "Asiaidd neu Asiaidd Prydeinig",
                "Du, Du Prydeinig, Caribïaidd neu Affricanaidd",
                "Arall",
                "Gwell gennyf beidio â dweud",
            ],
            "pl": [
                "Biała",
                "Mieszana lub wieloetniczna",
                "Azjatycka lub brytyjska azjatycka",
                "Czarna, czarna brytyjska, karaibska lub afrykańska",
                "Inna",
                "Wolę nie podawać",
            ],
            "ur": [
                "سفید فام",
                "مخلوط یا ایک سے زیادہ",
                "ایشیائی یا ایشیائی برطانوی",
                "سیاہ فام، سیاہ فام برطانوی، کیریبین یا افریقی",
                "دیگر",
                "بتانا پسند نہیں",
            ],
            "ro": [
                "Alb",
                "Mixt sau multiplu",
                "Asiatic sau britanic asiatic",
                "Negru, britanic negru, caraibian sau african",
                "Alt grup",
                "Prefer să nu spun",
            ],
        },
    },
    {
        # Taken from the postcode (examples/postcode_lookup.csv), not asked.
        "name": "imd_quintile",
        "derive_from": "postcode",
        "values": ["1", "2", "3", "4", "5"],
        "text": {
            "en": "How would you describe your area? (1 = most deprived, 5 = least)",
            "cy": "Sut fyddech chi'n disgrifio eich ardal? (1 = mwyaf difreintiedig, 5 = lleiaf)",
            "pl": "Jak oceniasz swoją okolicę? (1 = najuboższa, 5 = najzamożniejsza)",
            "ur": "آپ اپنے علاقے کو کیسا سمجھتے ہیں؟ (1 = سب سے زیادہ محروم، 5 = سب سے کم)",
            "ro": "Cum ați descrie zona dvs.? (1 = cea mai defavorizată, 5 = cea mai puțin)",
        },
        "labels": {
            "en": [
                "Most deprived",
                "More deprived",
                "In the middle",
                "Less deprived",
                "Least deprived",
            ],
            "cy": [
                "Mwyaf difreintiedig",
                "Mwy difreintiedig",
                "Yn y canol",
                "Llai difreintiedig",
                "Lleiaf difreintiedig",
            ],
            "pl": ["Najuboższa", "Uboższa", "Przeciętna", "Zamożniejsza", "Najzamożniejsza"],
            "ur": ["سب سے زیادہ محروم", "زیادہ محروم", "درمیانہ", "کم محروم", "سب سے کم محروم"],
            "ro": [
                "Cea mai defavorizată",
                "Mai defavorizată",
                "La mijloc",
                "Mai puțin defavorizată",
                "Cea mai puțin defavorizată",
            ],
        },
    },
    {
        "name": "locality",
        "derive_from": "postcode",
        "values": ["northvale_city", "eastmoor", "riverside", "high_fells", "southport_bay"],
        "text": {
            "en": "Which part of Northvale do you live in?",
            "cy": "Ym mha ran o Northvale ydych chi'n byw?",
            "pl": "W której części Northvale mieszkasz?",
            "ur": "آپ نارتھ ویل کے کس حصے میں رہتے ہیں؟",
            "ro": "În ce parte din Northvale locuiți?",
        },
        # Place names stay as they are signposted; Urdu gives them in its own script (the
        # English names are understood as replies too).
        "labels": {
            **{
                locale: ["Northvale City", "Eastmoor", "Riverside", "High Fells", "Southport Bay"]
                for locale in ("en", "cy", "pl", "ro")
            },
            "ur": ["نارتھ ویل سٹی", "ایسٹ مور", "ریور سائیڈ", "ہائی فیلز", "ساؤتھ پورٹ بے"],
        },
    },
]


# Northvale's population aged 16 and over, for the quotas plugin: shaped like an English ICS
# in the 2021 Census (age, sex, ethnicity) and the English Indices of Deprivation 2019 (IMD
# quintiles are 0.2 each nationally; a northern ICS has more people in the most deprived).
# Illustrative figures for a fictional area, not any real ICS's.
DEMO_POPULATION: dict[str, dict[str, float]] = {
    "age_band": {
        "16-24": 0.14,
        "25-34": 0.17,
        "35-44": 0.16,
        "45-54": 0.16,
        "55-64": 0.16,
        "65-74": 0.12,
        "75+": 0.09,
    },
    # The Census asked sex as female or male; the other answers have no population share.
    "sex": {"female": 0.51, "male": 0.49, "other": 0.0, "prefer_not_to_say": 0.0},
    "ethnicity": {
        "white": 0.79,
        "mixed": 0.03,
        "asian": 0.12,
        "black": 0.04,
        "other": 0.02,
        "prefer_not_to_say": 0.0,
    },
    "imd_quintile": {"1": 0.27, "2": 0.22, "3": 0.19, "4": 0.17, "5": 0.15},
    "locality": {
        "northvale_city": 0.36,
        "eastmoor": 0.19,
        "riverside": 0.17,
        "high_fells": 0.11,
        "southport_bay": 0.17,
    },
}


def demo_config(port: int) -> dict[str, Any]:
    return {
        "bot": {
            "name": "Northvale Citizens' Panel (demo)",
            "database": "panelbot.db",
            "timezone": "Europe/London",
            "default_locale": "en",
            "locales": ["en", "cy", "pl", "ur", "ro"],
            "contact": "the Northvale ICS engagement team (demo)",
            # A demo answers at any hour: no quiet hours for its broadcasts.
            "quiet_hours": False,
        },
        "web": {"host": "127.0.0.1", "port": port},
        "panel": {
            "fields": _FIELDS,
            # Postcode -> locality and IMD quintile for the fictional NV postcodes.
            "postcode_lookup": str(examples_dir() / "postcode_lookup.csv"),
        },
        # A demo panel is synthetic: the page may speak as any of its members.
        "channels": {"simulator": {"enabled": True, "demo": True, "allow_panellists": True}},
        # A target a little above the example panel's 240, so `quotas report` shows gaps.
        "plugins": {
            "quotas": {"panel_size_target": 300, "tolerance": 0.05, "population": DEMO_POPULATION}
        },
    }


def prepare_data_dir(data_dir: Path, port: int) -> Path:
    """Create the folder and its panelbot.toml (kept, with its port updated, on a re-run)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "panelbot.toml"
    if not config.exists():
        config.write_text(
            f"{_WRITTEN_BY}{config} <command>\n" + dump_toml(demo_config(port)),
            encoding="utf-8",
        )
    else:
        _mark_as_demo(config)
    return config


_WRITTEN_BY = "# Written by `panelbot demo`. Use it with: panelbot -c "


def _mark_as_demo(config: Path) -> None:
    """Add ``demo = true`` to a config an older ``panelbot demo`` wrote without it.

    Speaking as imported panellists now needs the marker; a config the user wrote, or one
    that already says either way, is left alone.
    """
    try:
        text = config.read_text(encoding="utf-8")
        simulator = tomllib.loads(text).get("channels", {}).get("simulator", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return  # load_settings reports what is wrong with it
    header = "\n[channels.simulator]\n"
    if not text.startswith(_WRITTEN_BY) or "demo" in simulator or header not in text:
        return
    config.write_text(text.replace(header, header + "demo = true\n", 1), encoding="utf-8")


_PANEL_IMPORTED = "demo_panel_imported"


async def load_examples(bot: Bot, settings: Settings) -> dict[str, Any]:
    """Import the example panel and surveys and open the demo wave (each step idempotent)."""
    from bot.engine.waves import launch
    from bot.models import utcnow
    from bot.panel import import_parsed, read_panel_file
    from bot.storage import surveys as survey_store
    from bot.surveys.loader import load_survey_file

    examples = examples_dir()
    # The example panel is imported once per data folder: a re-run must not undo what people
    # changed since (a language, an opt-out) nor add an audit row per panellist per start.
    done = await bot.db.fetchone("SELECT value FROM meta WHERE key = ?", (_PANEL_IMPORTED,))
    anyone = await bot.db.fetchone("SELECT 1 FROM panellists LIMIT 1")
    if done is None and anyone is None:
        parsed = read_panel_file(examples / "panel.csv", settings)
        report = await import_parsed(bot.db, bot.hash_key, settings, parsed, actor="demo")
        panel = report.summary()
    else:
        panel = "example panel imported before: kept as it is"
    if done is None:
        async with bot.db.transaction() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)",
                (_PANEL_IMPORTED, utcnow().isoformat()),
            )
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
    return {"panel": panel, "surveys": added_surveys, "wave": wave_id}


def settings_for(data_dir: Path, port: int) -> tuple[Path, Settings]:
    config = prepare_data_dir(data_dir, port)
    return config, load_settings(config)


DEMO_ADMIN = "demo-admin@example.org"
DEMO_ADMIN_FILE = "dashboard-admin.txt"


async def demo_admin(bot: Bot, data_dir: Path) -> tuple[str, str]:
    """The demo's first dashboard admin: (email, password).

    The password is random, made once per demo folder and kept there, owner-only, in
    ``dashboard-admin.txt`` so a second run prints the same one. Only ``panelbot demo``
    calls this: ``serve`` never makes an account or prints a password.
    """
    import secrets

    from bot import staff
    from bot.storage import staff as staff_store

    path = data_dir / DEMO_ADMIN_FILE
    password = ""
    try:
        password = path.read_text(encoding="utf-8").strip().splitlines()[-1]
    except (OSError, IndexError, UnicodeDecodeError):
        password = ""
    exists = await staff_store.by_email(bot.db.conn, DEMO_ADMIN) is not None
    if exists and len(password) >= staff.MIN_PASSWORD:
        return DEMO_ADMIN, password
    password = secrets.token_urlsafe(15)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(f"# The demo dashboard's admin ({DEMO_ADMIN}); demo only.\n{password}\n")
    await staff.add(bot.db, DEMO_ADMIN, "admin", password, reset=exists, actor="demo")
    return DEMO_ADMIN, password
