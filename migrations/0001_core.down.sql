-- Reverses 0001_core. Policies go with their tables.
DROP TABLE IF EXISTS fleet_audit;
DROP TABLE IF EXISTS fleet_outbox;
DROP TABLE IF EXISTS fleet_config;
DROP TABLE IF EXISTS fleet_notifications;
DROP TABLE IF EXISTS fleet_tasks CASCADE;
DROP FUNCTION IF EXISTS fleet_touch_updated_at();
