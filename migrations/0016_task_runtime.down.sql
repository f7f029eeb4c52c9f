ALTER TABLE fleet_tasks DROP CONSTRAINT valid_sandbox;
UPDATE fleet_tasks SET sandbox = 'none' WHERE sandbox = 'container';
ALTER TABLE fleet_tasks ADD CONSTRAINT valid_sandbox CHECK (sandbox IN ('bwrap', 'none'));
ALTER TABLE fleet_tasks DROP CONSTRAINT valid_runtime;
ALTER TABLE fleet_tasks DROP COLUMN runtime;
