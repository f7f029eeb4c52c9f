"""The review pipeline: when a task's CI passes, reviewers (the demo reviewer, HTTP model
providers, agent CLIs in JSON mode) read its PR's diff, each with a focus, and their verdicts
decide between `ready` and `rejected` (then retried with their comments)."""
