-- Reverses 0002_admission.
DROP FUNCTION IF EXISTS fleet_admission_state(TEXT, TEXT[], BOOLEAN);
DROP FUNCTION IF EXISTS fleet_active_total(TEXT[]);
ALTER TABLE fleet_config DROP CONSTRAINT IF EXISTS valid_config_tier;
ALTER TABLE fleet_config DROP COLUMN IF EXISTS tier;
DROP TABLE IF EXISTS fleet_spawn_queue;
