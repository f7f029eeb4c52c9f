-- Reverses 0005_repositories. The repositories' read policy looks into the grants, so it goes
-- first; the other policies and the index go with their tables.
DROP POLICY IF EXISTS fleet_repositories_read ON fleet_repositories;
DROP TABLE IF EXISTS fleet_repository_grants;
DROP TABLE IF EXISTS fleet_repositories;
