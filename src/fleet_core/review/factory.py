"""A reviewer for a spec: the demo reviewer, an HTTP provider or an agent CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet_core.review.reviewers import DemoReviewer, Reviewer
from fleet_core.review.settings import CLI_KINDS, HTTP_KINDS, ReviewerSpec, ReviewSettings

if TYPE_CHECKING:
    from fleet_core.conductor import Conductor


class NoReviewerError(Exception):
    pass


def build_reviewer(
    spec: ReviewerSpec, conductor: Conductor, settings: ReviewSettings, *, lead: bool
) -> Reviewer:
    if spec.kind == "demo":
        return DemoReviewer(spec.focus, lead=lead)
    if spec.kind in HTTP_KINDS:
        from fleet_core.review.http import KEY_NAMES, HttpReviewer

        key = settings.secret(KEY_NAMES[spec.kind])
        if not key:
            raise NoReviewerError(f"{spec.kind}: {KEY_NAMES[spec.kind]} is not set")
        return HttpReviewer(spec.kind, spec.focus, api_key=key, model=spec.model,
                            base_url=settings.urls.get(spec.kind))  # fmt: skip
    if spec.kind in CLI_KINDS:
        from fleet_core.review.cli import CliReviewer

        runtime = conductor.runtime
        return CliReviewer(spec.kind, spec.focus, model=spec.model,
                           confinement=runtime.confinement, paths=runtime.paths,
                           owner=runtime.agent_owner, timeout_s=settings.cli_timeout_s)  # fmt: skip
    raise NoReviewerError(f"unknown reviewer kind {spec.kind!r}")
