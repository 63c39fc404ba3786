-- At most one waiting update (scheduled, sending or held) per decision. schedule() checks
-- this inside its write transaction; the index makes a second live update impossible even
-- from a writer that skips the check. Databases that already hold several (the race this
-- closes) keep the oldest and have the later ones cancelled, with their messages not yet
-- handed to a provider, so the index can be built and nobody gets the update twice more.
CREATE TEMP TABLE impact_duplicates AS
    SELECT id FROM impact_updates
     WHERE status IN ('scheduled', 'sending', 'held')
       AND id NOT IN (
           SELECT MIN(id) FROM impact_updates
            WHERE status IN ('scheduled', 'sending', 'held')
            GROUP BY decision_id
       );
UPDATE outbox
   SET status = 'cancelled', updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')
 WHERE status IN ('queued', 'held')
   AND id IN (SELECT outbox_id FROM impact_recipients
               WHERE update_id IN (SELECT id FROM impact_duplicates));
UPDATE impact_recipients
   SET state = 'cancelled'
 WHERE state IN ('pending', 'queued', 'waiting')
   AND update_id IN (SELECT id FROM impact_duplicates);
UPDATE impact_updates
   SET status = 'cancelled',
       held_reason = 'duplicate of an earlier update of the same decision',
       cancelled_at = COALESCE(cancelled_at, updated_at)
 WHERE id IN (SELECT id FROM impact_duplicates);
DROP TABLE temp.impact_duplicates;
CREATE UNIQUE INDEX impact_updates_one_waiting ON impact_updates (decision_id)
    WHERE status IN ('scheduled', 'sending', 'held');
