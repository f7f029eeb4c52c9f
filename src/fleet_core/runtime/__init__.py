"""Agent runtime, local mode: git worktrees, tmux on a private socket, the launcher."""
