"""Regenerate examples/panel.csv: a synthetic panel for a fictional English ICS ("Northvale").

Shares are rounded from England's 2021 Census (age, sex, ethnicity) with IMD quintiles
equal by construction; nothing here describes a real person. Numbers are in the valid
+4474001xxxxx range that phonenumbers accepts; they are only ever sent to local fakes.

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
LOCALE = {"en": 100}


def draw(rng: random.Random, shares: dict[str, int]) -> str:
    return rng.choices(list(shares), weights=list(shares.values()))[0]


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
        writer.writerow(
            [
                phone,
                "",
                draw(rng, LOCALE),
                f"2026-{month:02d}-{day:02d}",
                draw(rng, AGE),
                draw(rng, SEX),
                draw(rng, ETHNICITY),
                str(i % 5 + 1),
                draw(rng, LOCALITY),
            ]
        )


if __name__ == "__main__":
    main()
