-- Reverses 0005_repositories. Policies and the index go with their tables.
DROP TABLE IF EXISTS fleet_repository_grants;
DROP TABLE IF EXISTS fleet_repositories;
