-- At most one waiting update (scheduled, sending or held) per decision. schedule() checks
-- this inside its write transaction; the index makes a second live update impossible even
-- from a writer that skips the check. Databases that already hold several (the race this
-- closes) keep the oldest and have the later ones cancelled, so the index can be built.
UPDATE impact_updates
   SET status = 'cancelled',
       held_reason = 'duplicate of an earlier update of the same decision',
       cancelled_at = COALESCE(cancelled_at, updated_at)
 WHERE status IN ('scheduled', 'sending', 'held')
   AND id NOT IN (
       SELECT MIN(id) FROM impact_updates
        WHERE status IN ('scheduled', 'sending', 'held')
        GROUP BY decision_id
   );
CREATE UNIQUE INDEX impact_updates_one_waiting ON impact_updates (decision_id)
    WHERE status IN ('scheduled', 'sending', 'held');
