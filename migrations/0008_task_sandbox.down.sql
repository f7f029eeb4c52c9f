ALTER TABLE fleet_tasks DROP COLUMN sandbox;
