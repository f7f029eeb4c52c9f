"""The governor panel: slots used per operator against their limit, the fleet-wide count and
cap, the queue, the monitor's health, the forges' budget and, when notifications fail, a
"deliveries failing" line."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from fleet_core.overview import Overview


def bar(used: int, limit: int, width: int = 8) -> str:
    if limit <= 0:
        return "·" * width
    filled = min(width, round(width * used / limit))
    return "█" * filled + "░" * (width - filled)


def render_overview(ov: Overview | None) -> Text:
    text = Text()
    if ov is None:
        text.append("starting the engine…", style="dim")
        return text
    text.append("Slots\n", style="bold")
    for load in ov.operators:
        style = "red" if load.active >= load.limit else ""
        # Whole words only: the tier's full name (a 34-column panel holds the longest).
        text.append(f"{load.operator_id[:10]:<10} ", style=style)
        text.append(f"{bar(load.active, load.limit, 6)} {load.active}/{load.limit} "
                    f"{load.tier.value}\n")  # fmt: skip
    cap = ov.global_cap
    text.append("fleet      ")
    if cap:
        text.append(f"{bar(ov.total_active, cap, 6)} {ov.total_active}/{cap}\n")
    else:
        text.append(f"{ov.total_active} active, no cap\n")
    text.append(f"queued     {ov.queued}\n", style="yellow" if ov.queued else "")
    m = ov.monitor
    text.append("\nMonitor\n", style="bold")
    if not m:
        text.append("off\n", style="dim")
    elif m.get("elsewhere"):  # another process is the engine; this console is its client
        text.append(f"{m['elsewhere']}\n", style="dim")
    else:
        state = "running" if m.get("running") else "stopped"
        last = m.get("last_cycle_ms")
        text.append(f"{state}, {m.get('cycles', 0)} cycles\n")
        text.append(f"last cycle {last:.0f} ms" if last is not None else "no cycle yet")
        errors = int(m.get("errors", 0))
        text.append(f", {errors} errors\n", style="red" if errors else "")
    if ov.unsandboxed:
        text.append("\nAgents run UNSANDBOXED\n", style="bold red")
        text.append(f"{ov.unsandboxed}\n", style="red")
    if ov.containers:
        text.append("\nContainers\n", style="bold")
        text.append(f"{ov.containers}\n", style="red")
    text.append("\nForges\n", style="bold")
    for name, f in ov.forges.items():
        health = str(f.get("health", "ok"))
        remaining = f.get("remaining")
        budget = f" ({remaining} calls left)" if remaining is not None else ""
        text.append(f"{name:<7}")
        text.append(f"{health}{budget}\n", style="" if health == "ok" else "yellow")
    _deliveries(text, ov, "\n")
    return text


def _deliveries(text: Text, ov: Overview, lead: str) -> None:
    """Only when something fails: retrying or dead-lettered notifications."""
    d = ov.deliveries
    if d is not None and not d.ok:
        text.append(lead)
        text.append(d.line(), style="red" if d.dead else "yellow")
        text.append("  (fleet notify status)" if d.dead else "")


def render_strip(ov: Overview | None) -> Text:
    """The same, in three lines under the table (narrower terminals)."""
    text = Text()
    if ov is None:
        text.append("starting the engine…", style="dim")
        return text
    text.append("Slots ", style="bold")
    for load in ov.operators[:4]:
        style = "red" if load.active >= load.limit else ""
        text.append(f"{load.operator_id[:12]} {load.active}/{load.limit}  ", style=style)
    cap = f"/{ov.global_cap}" if ov.global_cap else ""
    text.append(f"fleet {ov.total_active}{cap}  ")
    text.append(f"queued {ov.queued}\n", style="yellow" if ov.queued else "")
    m = ov.monitor
    text.append("Monitor ", style="bold")
    if m and m.get("elsewhere"):
        text.append(f"{m['elsewhere']}\n", style="dim")
    elif m:
        last = m.get("last_cycle_ms")
        state = "running" if m.get("running") else "stopped"
        text.append(f"{state}, {m.get('cycles', 0)} cycles")
        text.append(f", last {last:.0f} ms" if last is not None else "")
        errors = int(m.get("errors", 0))
        text.append(f", {errors} errors\n", style="red" if errors else "")
    else:
        text.append("off\n", style="dim")
    text.append("Forges ", style="bold")
    text.append("  ".join(f"{name}: {f.get('health', 'ok')}" for name, f in ov.forges.items()))
    _deliveries(text, ov, "  ")
    if ov.unsandboxed:
        text.append("  agents run UNSANDBOXED", style="bold red")
    if ov.containers:
        text.append(f"  {ov.containers}", style="bold red")
    return text


class GovernorPanel(Static):
    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.side = True
        self.last: Overview | None = None

    def show(self, ov: Overview | None) -> None:
        self.last = ov
        self.update(render_overview(ov) if self.side else render_strip(ov))

    def set_side(self, side: bool) -> None:
        if side != self.side:
            self.side = side
            self.show(self.last)
