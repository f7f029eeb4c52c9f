-- 0016_task_runtime: where a task's agent runs, decided at spawn (the spawn's choice, else its
-- agent type's, its repository's, the global setting) and kept by its retries: `local` (tmux,
-- bubblewrap) or `container` (a hardened container through the Docker Engine API). A container
-- task's `sandbox` is `container`.
ALTER TABLE fleet_tasks ADD COLUMN runtime TEXT NOT NULL DEFAULT 'local';
ALTER TABLE fleet_tasks ADD CONSTRAINT valid_runtime CHECK (runtime IN ('local', 'container'));
ALTER TABLE fleet_tasks DROP CONSTRAINT valid_sandbox;
ALTER TABLE fleet_tasks ADD CONSTRAINT valid_sandbox CHECK (sandbox IN ('bwrap', 'none', 'container'));
