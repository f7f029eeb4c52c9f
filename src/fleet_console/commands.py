"""The command palette (ctrl+p): every verb of the fleet screen, on the selected task."""

from __future__ import annotations

from collections.abc import AsyncIterator

from textual.command import DiscoveryHit, Hit, Hits, Provider

VERBS = [
    ("spawn", "New task: spawn an agent"),
    ("stop", "Stop the selected task"),
    ("retry", "Retry the selected task"),
    ("merge", "Merge the selected task's PR"),
    ("delete", "Delete the selected task"),
    ("attach", "Attach to the selected task's agent (tmux)"),
    ("logs", "Open the selected task: log, details, CI, audit"),
    ("filter", "Filter the tasks"),
]


class FleetCommands(Provider):
    def _actions(self) -> list[tuple[str, str]]:
        screen = self.screen
        return [(verb, text) for verb, text in VERBS if hasattr(screen, f"action_{verb}")]

    async def discover(self) -> Hits:
        for verb, text in self._actions():
            yield DiscoveryHit(text, self._runner(verb), help=f"key of the fleet screen: {verb}")

    async def search(self, query: str) -> AsyncIterator[Hit]:
        matcher = self.matcher(query)
        for verb, text in self._actions():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), self._runner(verb))

    def _runner(self, verb: str):  # type: ignore[no-untyped-def]
        screen = self.screen

        async def run() -> None:
            await screen.run_action(verb)

        return run
