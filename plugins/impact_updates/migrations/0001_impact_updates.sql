-- impact_updates plugin, schema version 1: the decision register and the "you said, we did"
-- updates sent after decisions. Every time is UTC ISO-8601 text (dates: YYYY-MM-DD).
-- Survey links use the survey's text id (surveys.survey_id), so every version counts.
-- Panellists may be erased (their row deleted): references to them become NULL.

-- The register: what the panel said, what was done, by whom, and where it stands.
CREATE TABLE impact_decisions (
    id          INTEGER PRIMARY KEY,
    title       TEXT NOT NULL,
    you_said    TEXT NOT NULL,
    we_did      TEXT NOT NULL,
    decided_on  TEXT,                      -- date the decision was taken, YYYY-MM-DD
    decided_by  TEXT,                      -- board or committee (--by)
    owner       TEXT,                      -- senior person accountable (--owner)
    status      TEXT NOT NULL DEFAULT 'decided'
                CHECK (status IN ('proposed', 'decided', 'implemented')),
    link        TEXT,                      -- http(s) only
    created_by  TEXT NOT NULL DEFAULT 'cli',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- Surveys that informed a decision (before) or asked about it (after: follow-ups).
CREATE TABLE impact_decision_surveys (
    decision_id INTEGER NOT NULL REFERENCES impact_decisions (id) ON DELETE CASCADE,
    survey_id   TEXT NOT NULL,
    role        TEXT NOT NULL DEFAULT 'informed' CHECK (role IN ('informed', 'follow_up')),
    PRIMARY KEY (decision_id, survey_id)
);
CREATE INDEX impact_decision_surveys_survey ON impact_decision_surveys (survey_id);

-- A finding quoted with a decision, frozen when it was recorded: later answers never
-- change what the register said. share = count / n; quote is the sentence in the
-- default locale ("62% of you said booking was hard (n=412)").
CREATE TABLE impact_findings (
    id          INTEGER PRIMARY KEY,
    decision_id INTEGER NOT NULL REFERENCES impact_decisions (id) ON DELETE CASCADE,
    survey_id   TEXT NOT NULL,
    question_id TEXT NOT NULL,
    option_id   TEXT,                      -- NULL: the most chosen option at the time
    option_text TEXT,                      -- the option's label (default locale) at the time
    count       INTEGER NOT NULL CHECK (count >= 0),
    n           INTEGER NOT NULL CHECK (n >= count),
    share       REAL NOT NULL CHECK (share >= 0 AND share <= 1),
    quote       TEXT NOT NULL,
    computed_at TEXT NOT NULL
);
CREATE INDEX impact_findings_decision ON impact_findings (decision_id);

-- One broadcast about a decision. The database is the truth; scheduler jobs are rebuilt
-- from the rows still 'scheduled' on start (job id 'impact_updates:update:<id>').
--   scheduled  waiting for due_at
--   sending    audience resolved into impact_recipients; messages being queued in batches
--   sent       every treatment recipient has its outbox row (holdout rows may still wait)
--   held       fell due while the bot was down, past misfire_grace: held_reason says why;
--              staff release it (impact release ID, or impact schedule again)
--   cancelled  impact cancel ID (queued outbox rows not yet sent are cancelled too)
CREATE TABLE impact_updates (
    id               INTEGER PRIMARY KEY,
    decision_id      INTEGER NOT NULL REFERENCES impact_decisions (id) ON DELETE CASCADE,
    -- manual: impact schedule; auto: auto_schedule on recording; status: a status change
    trigger          TEXT NOT NULL DEFAULT 'manual' CHECK (trigger IN ('manual', 'auto', 'status')),
    -- participants: answered any question of a linked survey; panel: every active,
    -- reachable panellist; field: demographics[audience_field] = audience_value.
    audience         TEXT NOT NULL CHECK (audience IN ('participants', 'panel', 'field')),
    audience_field   TEXT,
    audience_value   TEXT,
    due_at           TEXT NOT NULL,
    status           TEXT NOT NULL DEFAULT 'scheduled'
                     CHECK (status IN ('scheduled', 'sending', 'sent', 'held', 'cancelled')),
    held_reason      TEXT,
    -- Engagement loop options (I2's behaviour; stored here when scheduled).
    holdout_share    REAL NOT NULL DEFAULT 0 CHECK (holdout_share >= 0 AND holdout_share < 1),
    holdout_released_at TEXT,              -- when the holdout group's messages were queued
    follow_up_survey_id TEXT,              -- surveys.survey_id, sent with/after the update
    follow_up_wave_id   INTEGER REFERENCES waves (id),
    feedback         INTEGER NOT NULL DEFAULT 1 CHECK (feedback IN (0, 1)),
    -- Filled when the audience is resolved (status -> sending).
    audience_size    INTEGER,              -- treatment + holdout
    participants     INTEGER,              -- people who answered a linked survey ("one of 412")
    created_by       TEXT NOT NULL DEFAULT 'cli',
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    cancelled_at     TEXT,
    updated_at       TEXT NOT NULL
);
CREATE INDEX impact_updates_decision ON impact_updates (decision_id);
CREATE INDEX impact_updates_status ON impact_updates (status, due_at);

-- One row per person an update is for, written once when the audience is resolved.
-- The message's idempotency key in the outbox is 'impact:<update_id>:<panellist_id>'.
--   grp       treatment: sent now; holdout: the randomised share that waits
--   state     pending (to render) | queued (outbox_id set) | waiting (holdout, not yet
--             released) | skipped (no longer reachable when rendered) | cancelled
--   took_part 1 when the person answered a linked survey (their "own part" line)
CREATE TABLE impact_recipients (
    id           INTEGER PRIMARY KEY,
    update_id    INTEGER NOT NULL REFERENCES impact_updates (id) ON DELETE CASCADE,
    panellist_id INTEGER REFERENCES panellists (id) ON DELETE SET NULL,
    locale       TEXT NOT NULL,
    grp          TEXT NOT NULL DEFAULT 'treatment' CHECK (grp IN ('treatment', 'holdout')),
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'queued', 'waiting', 'skipped', 'cancelled')),
    took_part    INTEGER NOT NULL DEFAULT 0 CHECK (took_part IN (0, 1)),
    outbox_id    INTEGER REFERENCES outbox (id) ON DELETE SET NULL,
    queued_at    TEXT,
    UNIQUE (update_id, panellist_id)
);
CREATE INDEX impact_recipients_state ON impact_recipients (update_id, state);
CREATE INDEX impact_recipients_panellist ON impact_recipients (panellist_id);

-- A reply to an update's one-tap question ("Was this useful? 1 Yes 2 No"); one per person
-- per update (a second reply replaces the answer). Written by I2's loop.py.
CREATE TABLE impact_feedback (
    id           INTEGER PRIMARY KEY,
    update_id    INTEGER NOT NULL REFERENCES impact_updates (id) ON DELETE CASCADE,
    panellist_id INTEGER REFERENCES panellists (id) ON DELETE SET NULL,
    useful       INTEGER NOT NULL CHECK (useful IN (0, 1)),
    inbound_id   INTEGER REFERENCES inbound_messages (id) ON DELETE SET NULL,
    received_at  TEXT NOT NULL,
    UNIQUE (update_id, panellist_id)
);
CREATE INDEX impact_feedback_update ON impact_feedback (update_id);
