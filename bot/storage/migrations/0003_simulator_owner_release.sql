-- A simulator person who says no to joining (or sends STOP before joining) loses their
-- address, and with it everything kept of the conversation; the name itself stays the
-- browser's that had it, marked released_at, so that only that browser learns what
-- happened, and nobody else takes the name and reads or speaks on as them. A released
-- name is forgotten a day later (bot.web.simulator.UNUSED_CLAIM_DAYS). An erasure deletes
-- the owner row itself (bot/storage/panel_data.py).
ALTER TABLE simulator_owners ADD COLUMN released_at TEXT;

DROP TRIGGER simulator_owners_forget;

CREATE TRIGGER simulator_owners_release AFTER DELETE ON addresses
WHEN OLD.channel = 'sim'
BEGIN
    UPDATE simulator_owners SET released_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')
    WHERE address = OLD.address;
END;
