"""Which forge serves a repository: its `forge` setting (.fleet.toml or the user's [repos]),
else GitHub when `origin` points at github.com, else the local forge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet_core.forge.base import Forge
from fleet_core.forge.github import GitHubForge
from fleet_core.forge.local import LocalForge
from fleet_core.forge.problems import PROBLEMS_FILE, ForgeProblems
from fleet_core.runtime.contained import Confinement
from fleet_core.runtime.git import git
from fleet_core.runtime.repo_config import RepoConfig, load_repo_config


class ForgeSet:
    def __init__(
        self,
        state_dir: Path,
        *,
        repos: dict[str, dict[str, Any]] | None = None,
        merge_method: str = "merge",
        ci_timeout_s: float = 600.0,
        gh: str = "gh",
        github: GitHubForge | None = None,
        confinement: Confinement | None = None,
    ) -> None:
        self.repos = repos or {}
        self.merge_method = merge_method
        self.local = LocalForge(
            state_dir, ci_command=self._ci_command, ci_timeout_s=ci_timeout_s,
            confinement=confinement,
        )  # fmt: skip
        self.github = github or GitHubForge(gh=gh, merge_method=merge_method)
        self.problems = ForgeProblems(state_dir / PROBLEMS_FILE)
        self._chosen: dict[Path, Forge] = {}

    def _config(self, repo: Path) -> RepoConfig:
        return load_repo_config(repo, self.repos)

    def _ci_command(self, repo: Path) -> list[str] | None:
        return self._config(repo).ci or None

    async def for_repo(self, repo: Path) -> Forge:
        if repo not in self._chosen:
            kind = self._config(repo).forge
            if kind is None:
                url = (await git(repo, "remote", "get-url", "origin", check=False)).stdout
                kind = "github" if "github.com" in url else "local"
            self._chosen[repo] = self.github if kind == "github" else self.local
        return self._chosen[repo]

    def all(self) -> list[Forge]:
        return [self.local, self.github]

    def health(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for forge in self.all():
            budget = forge.budget()
            out[forge.name] = {
                "health": forge.health() or "ok",
                "calls": forge.calls,
                "remaining": budget.remaining,
                "reset_at": budget.reset_at.isoformat() if budget.reset_at else None,
                "paused_until": budget.paused_until.isoformat() if budget.paused_until else None,
            }
        return out

    async def close(self) -> None:
        await self.local.close()
