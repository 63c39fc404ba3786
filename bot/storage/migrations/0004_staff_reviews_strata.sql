-- Issues 12 and 14: what the core keeps for the quotas plugin's stratified waves, the staff
-- dashboard's accounts and sessions, and stakeholders' reviews of draft surveys.

-- The fields a wave's sample is stratified by (a JSON list), kept until the wave opens.
ALTER TABLE waves ADD COLUMN stratify_by TEXT;

-- Dashboard accounts. Passwords are argon2 hashes; ten failures in a row lock the account
-- until locked_until. Staff actions go to audit_log with actor 'staff:<id>'.
-- AUTOINCREMENT: an id is never given again after `staff remove`, so the audit log's
-- 'staff:<id>' always means the account that acted, never a later one.
CREATE TABLE staff (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    email           TEXT NOT NULL UNIQUE COLLATE NOCASE,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    password_hash   TEXT NOT NULL,
    failed_logins   INTEGER NOT NULL DEFAULT 0,
    locked_until    TEXT,
    disabled        INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    last_login_at   TEXT
);

-- A signed-in browser. The cookie carries the random token, signed; only its SHA-256 is
-- kept here, so a copy of the database does not sign anyone in. Logout deletes the row.
CREATE TABLE staff_sessions (
    token_hash      TEXT PRIMARY KEY,
    staff_id        INTEGER NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    csrf_token      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL
);
CREATE INDEX staff_sessions_staff ON staff_sessions (staff_id);

-- A signed link that lets someone without an account (Healthwatch, a voluntary group) try a
-- draft survey in a sandbox and comment on it. Nothing they answer reaches the panel.
CREATE TABLE survey_shares (
    id              INTEGER PRIMARY KEY,
    survey_id       TEXT NOT NULL,
    token_hash      TEXT NOT NULL UNIQUE,
    label           TEXT,
    created_by      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    revoked_at      TEXT
);
CREATE INDEX survey_shares_survey ON survey_shares (survey_id);

CREATE TABLE survey_share_comments (
    id              INTEGER PRIMARY KEY,
    share_id        INTEGER NOT NULL REFERENCES survey_shares (id) ON DELETE CASCADE,
    question_id     TEXT,
    locale          TEXT,
    reviewer        TEXT,
    body            TEXT NOT NULL,
    created_at      TEXT NOT NULL
);
CREATE INDEX survey_share_comments_share ON survey_share_comments (share_id);
