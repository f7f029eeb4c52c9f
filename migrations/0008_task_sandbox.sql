-- 0008_task_sandbox: how a task's agent ran (`bwrap`, or `none` when it ran unsandboxed),
-- recorded at spawn; retries keep it (a sandboxed task never continues unsandboxed).
ALTER TABLE fleet_tasks ADD COLUMN sandbox TEXT;
ALTER TABLE fleet_tasks ADD CONSTRAINT valid_sandbox CHECK (sandbox IN ('bwrap', 'none'));
