DROP TABLE fleet_switches;
ALTER TABLE fleet_tasks DROP COLUMN demo;
