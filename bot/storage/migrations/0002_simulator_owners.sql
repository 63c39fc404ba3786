-- Which browser (or API client) started each simulator person: the page and its API act
-- only for their own people. The browser holds a random cookie; only a keyed hash
-- (HMAC-SHA256) of it is kept here, and of the network address that made the person
-- (for the per-minute limit on new people).
CREATE TABLE simulator_owners (
    address     TEXT PRIMARY KEY,      -- NAME of a sim:NAME address
    owner_hash  TEXT NOT NULL,
    client_hash TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX simulator_owners_owner ON simulator_owners (owner_hash, created_at);
CREATE INDEX simulator_owners_client ON simulator_owners (client_hash, created_at);

-- A simulator address that goes (an erase, a declined sign-up) takes its owner row along.
CREATE TRIGGER simulator_owners_forget AFTER DELETE ON addresses
WHEN OLD.channel = 'sim'
BEGIN
    DELETE FROM simulator_owners WHERE address = OLD.address;
END;
