-- Who the quotas plugin moved from the waitlist to the panel, and when: an audit trail of
-- admissions when room opened in a group (the panellist's own status lives in the core).
CREATE TABLE quotas_admissions (
    id INTEGER PRIMARY KEY,
    panellist_id INTEGER NOT NULL,
    admitted_at TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX quotas_admissions_panellist ON quotas_admissions (panellist_id);
