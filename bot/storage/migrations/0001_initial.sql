-- panelbot schema, version 1. Every time is UTC ISO-8601 text; JSON columns hold JSON text.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE panellists (
    id             INTEGER PRIMARY KEY,
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'active', 'opted_out', 'unreachable', 'erased')),
    locale         TEXT,
    demographics   TEXT NOT NULL DEFAULT '{}',
    consent_at     TEXT,
    consent_method TEXT,
    -- Sign-up conversation state while pending: 'language', 'consent', 'field:<name>'.
    stage          TEXT,
    stage_misses   INTEGER NOT NULL DEFAULT 0,
    link_code      TEXT UNIQUE,
    source         TEXT NOT NULL DEFAULT 'chat',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    opted_out_at   TEXT,
    erased_at      TEXT
);
CREATE INDEX panellists_status ON panellists (status);

-- One row per way of reaching a panellist. Erasure deletes these rows.
CREATE TABLE addresses (
    id           INTEGER PRIMARY KEY,
    panellist_id INTEGER NOT NULL REFERENCES panellists (id) ON DELETE CASCADE,
    channel      TEXT NOT NULL,
    address      TEXT NOT NULL,
    last_inbound_at TEXT,
    created_at   TEXT NOT NULL,
    UNIQUE (channel, address)
);
CREATE INDEX addresses_panellist ON addresses (panellist_id);

-- Numbers and chats never to be messaged again without fresh consent, stored as a keyed
-- hash (HMAC-SHA256) so the list itself holds no phone numbers.
CREATE TABLE suppressions (
    address_hash TEXT PRIMARY KEY,
    reason       TEXT NOT NULL CHECK (reason IN ('erased', 'opted_out', 'declined')),
    created_at   TEXT NOT NULL
);

CREATE TABLE surveys (
    id           INTEGER PRIMARY KEY,
    survey_id    TEXT NOT NULL,
    version      INTEGER NOT NULL,
    title        TEXT NOT NULL,
    definition   TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    UNIQUE (survey_id, version)
);

CREATE TABLE waves (
    id              INTEGER PRIMARY KEY,
    survey_row_id   INTEGER NOT NULL REFERENCES surveys (id),
    status          TEXT NOT NULL CHECK (status IN ('scheduled', 'open', 'closed')),
    sample_size     INTEGER,
    include_new     INTEGER NOT NULL DEFAULT 0,
    opens_at        TEXT NOT NULL,
    closes_at       TEXT NOT NULL,
    reminder_at     TEXT,
    reminded_at     TEXT,
    opened_at       TEXT,
    closed_at       TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX waves_status ON waves (status);

CREATE TABLE invitations (
    id           INTEGER PRIMARY KEY,
    wave_id      INTEGER NOT NULL REFERENCES waves (id),
    panellist_id INTEGER REFERENCES panellists (id) ON DELETE SET NULL,
    -- waiting: another survey is open for this person; sent: the session has started.
    status       TEXT NOT NULL CHECK (status IN ('waiting', 'sent', 'completed', 'expired')),
    created_at   TEXT NOT NULL,
    sent_at      TEXT,
    reminded_at  TEXT,
    UNIQUE (wave_id, panellist_id)
);
CREATE INDEX invitations_panellist ON invitations (panellist_id, status);

CREATE TABLE survey_sessions (
    id            INTEGER PRIMARY KEY,
    wave_id       INTEGER NOT NULL REFERENCES waves (id),
    survey_row_id INTEGER NOT NULL REFERENCES surveys (id),
    panellist_id  INTEGER REFERENCES panellists (id) ON DELETE SET NULL,
    state         TEXT NOT NULL CHECK (state IN ('active', 'completed', 'closed', 'stopped')),
    current_question TEXT,
    misses        INTEGER NOT NULL DEFAULT 0,
    answered      INTEGER NOT NULL DEFAULT 0,
    started_at    TEXT NOT NULL,
    finished_at   TEXT
);
-- One open survey per panellist.
CREATE UNIQUE INDEX survey_sessions_one_active ON survey_sessions (panellist_id) WHERE state = 'active';
CREATE INDEX survey_sessions_wave ON survey_sessions (wave_id, state);

CREATE TABLE answers (
    id            INTEGER PRIMARY KEY,
    session_id    INTEGER NOT NULL REFERENCES survey_sessions (id),
    wave_id       INTEGER NOT NULL REFERENCES waves (id),
    survey_row_id INTEGER NOT NULL REFERENCES surveys (id),
    question_id   TEXT NOT NULL,
    value         TEXT NOT NULL,
    answered_at   TEXT NOT NULL,
    UNIQUE (session_id, question_id)
);
CREATE INDEX answers_wave ON answers (wave_id, question_id);

CREATE TABLE inbound_messages (
    id                  INTEGER PRIMARY KEY,
    channel             TEXT NOT NULL,
    provider_message_id TEXT NOT NULL,
    panellist_id        INTEGER REFERENCES panellists (id) ON DELETE SET NULL,
    text                TEXT,
    received_at         TEXT NOT NULL,
    UNIQUE (channel, provider_message_id)
);
CREATE INDEX inbound_panellist ON inbound_messages (panellist_id);

CREATE TABLE outbox (
    id                  INTEGER PRIMARY KEY,
    idempotency_key     TEXT NOT NULL UNIQUE,
    panellist_id        INTEGER REFERENCES panellists (id) ON DELETE SET NULL,
    channel             TEXT NOT NULL,
    address             TEXT,
    text                TEXT,
    kind                TEXT NOT NULL,
    priority            INTEGER NOT NULL,
    template            TEXT,
    extra               TEXT NOT NULL DEFAULT '{}',
    status              TEXT NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'failed', 'held', 'cancelled')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     TEXT NOT NULL,
    provider_message_id TEXT,
    error_code          TEXT,
    error_class         TEXT,
    last_error          TEXT,
    created_at          TEXT NOT NULL,
    sent_at             TEXT,
    updated_at          TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, priority, next_attempt_at) WHERE status = 'queued';
CREATE INDEX outbox_address ON outbox (channel, address);
CREATE INDEX outbox_provider ON outbox (channel, provider_message_id);
CREATE INDEX outbox_panellist ON outbox (panellist_id);

CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY,
    at           TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    panellist_id INTEGER,
    detail       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_panellist ON audit_log (panellist_id);
