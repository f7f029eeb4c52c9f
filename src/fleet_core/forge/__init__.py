"""Forges: where a task's branch becomes a pull request, gets CI, review, and is merged."""
