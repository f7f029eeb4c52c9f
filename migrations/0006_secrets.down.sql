-- Reverses 0006_secrets. Policies, triggers and constraints go with the tables.
DROP TABLE IF EXISTS fleet_master_key;
DROP TABLE IF EXISTS fleet_secrets;
