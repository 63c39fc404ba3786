"""Regenerate examples/panel.csv: a synthetic panel for a fictional English ICS ("Northvale").

Shares are rounded from England's 2021 Census (age, sex, ethnicity) with IMD quintiles
equal by construction; nothing here describes a real person. About one in eight prefers a
language other than English (Welsh, Polish and Romanian among White panellists, Urdu among
Asian ones): expected shares are about 88% en, 4% cy, 4% pl, 2% ur and 2% ro, which a
sample of 240 only roughly meets. Numbers are in the valid +4474001xxxxx range that
phonenumbers accepts; they are only ever sent to local fakes.

    python examples/make_panel.py > examples/panel.csv
"""

from __future__ import annotations

import csv
import random
import sys

SIZE = 240
SEED = 2026

AGE = {"16-24": 13, "25-34": 17, "35-44": 16, "45-54": 17, "55-64": 15, "65-74": 12, "75+": 10}
SEX = {"female": 50, "male": 48, "other": 1, "prefer_not_to_say": 1}
ETHNICITY = {"white": 81, "asian": 10, "black": 4, "mixed": 3, "other": 2}
LOCALITY = {
    "northvale_city": 34,
    "eastmoor": 20,
    "riverside": 18,
    "high_fells": 12,
    "southport_bay": 16,
}
# Preferred language by ethnic group (a share of that group), so that the overall shares come
# out near en 88, cy 4, pl 4, ur 2, ro 2.
LOCALE_BY_ETHNICITY = {
    "white": {"en": 87, "cy": 5, "pl": 5, "ro": 3},
    "asian": {"en": 80, "ur": 20},
}
ENGLISH_ONLY = {"en": 100}


def draw(rng: random.Random, shares: dict[str, int]) -> str:
    return rng.choices(list(shares), weights=list(shares.values()))[0]


def share_at(roll: float, shares: dict[str, int]) -> str:
    """The entry of ``shares`` that a uniform ``roll`` in [0, 1) falls on."""
    total = sum(shares.values())
    running = 0
    for key, weight in shares.items():
        running += weight
        if roll * total < running:
            return key
    return key


def main() -> None:
    rng = random.Random(SEED)
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(
        [
            "phone",
            "telegram_chat_id",
            "locale",
            "consent_at",
            "age_band",
            "sex",
            "ethnicity",
            "imd_quintile",
            "locality",
        ]
    )
    for i in range(SIZE):
        phone = f"+4474001{i + 100:05d}"
        day = rng.randint(1, 28)
        month = rng.randint(1, 10)
        # One roll for the language, taken where the draw always was so that the other
        # columns stay as they were; it is read once the ethnic group is known.
        locale_roll = rng.random()
        age, sex, ethnicity = draw(rng, AGE), draw(rng, SEX), draw(rng, ETHNICITY)
        locale = share_at(locale_roll, LOCALE_BY_ETHNICITY.get(ethnicity, ENGLISH_ONLY))
        writer.writerow(
            [
                phone,
                "",
                locale,
                f"2026-{month:02d}-{day:02d}",
                age,
                sex,
                ethnicity,
                str(i % 5 + 1),
                draw(rng, LOCALITY),
            ]
        )


if __name__ == "__main__":
    main()
