-- Reverses 0003_signing_keys. The policy and index go with the table.
DROP TABLE IF EXISTS fleet_signing_keys;
