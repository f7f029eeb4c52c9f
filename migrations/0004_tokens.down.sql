-- Reverses 0004_tokens. The policy and index go with the table.
DROP TABLE IF EXISTS fleet_tokens;
