ALTER TABLE fleet_tasks DROP COLUMN stall_warning;
