-- 0005_repositories: the repositories agents may work in, and who may use each one.
--
-- A spawn names a repository that is granted to its operator (by name or by path); nothing
-- else is guessed from the file system. A repository's settings stay in its .fleet.toml and
-- in fleet.toml's [repos] (DESIGN §9); this table says only which directory it is and who
-- may use it. An operator sees the repositories granted to them (and of the grants only
-- their own); only admin transactions add, grant, revoke or remove.

CREATE TABLE fleet_repositories (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL,
    path        TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT valid_repository_name CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    CONSTRAINT valid_repository_path CHECK (path LIKE '/%' AND length(path) <= 500),
    CONSTRAINT valid_repository_created_by CHECK (created_by <> ''),
    CONSTRAINT fleet_repositories_name UNIQUE (name),
    CONSTRAINT fleet_repositories_path UNIQUE (path)
);

CREATE TABLE fleet_repository_grants (
    repository_id BIGINT NOT NULL REFERENCES fleet_repositories (id) ON DELETE CASCADE,
    operator_id   TEXT NOT NULL,
    granted_by    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (repository_id, operator_id),
    CONSTRAINT valid_grant_operator_id CHECK (operator_id <> ''),
    CONSTRAINT valid_grant_granted_by CHECK (granted_by <> '')
);

CREATE INDEX fleet_repository_grants_operator_idx ON fleet_repository_grants (operator_id);

-- Row-level security ------------------------------------------------------------------------
-- Reading: an operator's own grants, and the repositories those grants name; everything for
-- an admin transaction. Writing: admin transactions only (separate policies, so that a
-- tenant's USING clause never lets it update or delete a row it can merely see).

ALTER TABLE fleet_repository_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_repository_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_repository_grants_read ON fleet_repository_grants FOR SELECT
    USING (operator_id = current_setting('app.operator_id', true)
           OR current_setting('app.is_admin', true) = 'true');
CREATE POLICY fleet_repository_grants_admin ON fleet_repository_grants FOR ALL
    USING (current_setting('app.is_admin', true) = 'true')
    WITH CHECK (current_setting('app.is_admin', true) = 'true');

ALTER TABLE fleet_repositories ENABLE ROW LEVEL SECURITY;
ALTER TABLE fleet_repositories FORCE ROW LEVEL SECURITY;
CREATE POLICY fleet_repositories_read ON fleet_repositories FOR SELECT
    USING (current_setting('app.is_admin', true) = 'true'
           OR EXISTS (SELECT 1 FROM fleet_repository_grants g
                       WHERE g.repository_id = fleet_repositories.id
                         AND g.operator_id = current_setting('app.operator_id', true)));
CREATE POLICY fleet_repositories_admin ON fleet_repositories FOR ALL
    USING (current_setting('app.is_admin', true) = 'true')
    WITH CHECK (current_setting('app.is_admin', true) = 'true');

GRANT SELECT, INSERT, DELETE ON fleet_repositories, fleet_repository_grants TO fleet_engine;
