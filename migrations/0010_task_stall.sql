-- 0010_task_stall: the stall warning of a running task (no new commit for the stall time,
-- counted from the agent's start or its last commit, whichever is later): when it fired,
-- since when, and how many minutes, shown by `fleet show`, the console and the API.
ALTER TABLE fleet_tasks ADD COLUMN stall_warning JSONB;
