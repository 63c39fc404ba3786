-- Every sub-panel lottery run by `panelbot panel select`, kept for audit: what was asked
-- (size, algorithm, the quota file's SHA-256, the seed), what the distribution promised
-- (minimum and per-profile selection probabilities) and who was drawn, in order.
-- Panellist ids only: no names or addresses.
CREATE TABLE quotas_selections (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    actor TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    seed INTEGER NOT NULL,
    quota_file_sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    pool_size INTEGER NOT NULL,
    household_field TEXT,
    minimum_probability REAL,
    probabilities TEXT NOT NULL,
    selected TEXT NOT NULL,
    reserves TEXT NOT NULL
);
