"""The console's faces of notifications: the "deliveries failing" line of the health panel
(absent while all is well) and a task's delivery record."""

from __future__ import annotations

from fleet_console.screens.task import notification_line
from fleet_console.widgets.governor_panel import render_overview, render_strip
from fleet_core.notify.status import DeliveryHealth
from fleet_core.overview import Overview


def overview(d: DeliveryHealth | None) -> Overview:
    return Overview(operators=[], total_active=0, global_cap=None, queued=0, deliveries=d)


def test_health_panel_says_when_deliveries_fail() -> None:
    fine = DeliveryHealth(pending=2, failing=0, dead=0, oldest_pending_s=1.0)
    assert "deliveries" not in render_overview(overview(fine)).plain
    assert "deliveries" not in render_strip(overview(None)).plain
    bad = DeliveryHealth(pending=3, failing=2, dead=1, oldest_pending_s=90.0)
    side = render_overview(overview(bad)).plain
    assert "deliveries failing: 2 retrying, 1 dead-lettered  (fleet notify status)" in side
    assert "deliveries failing: 2 retrying, 0 dead-lettered" in render_strip(
        overview(DeliveryHealth(3, 2, 0, None))).plain  # fmt: skip


def test_a_tasks_delivery_record() -> None:
    base = {"event": "task.merged", "channel": "discord", "attempts": 1, "last_status": 204,
            "last_error": None, "delivered_at": "2026-11-30T12:01:05+00:00", "dead_at": None}  # fmt: skip
    assert notification_line(base) == "task.merged      discord   delivered 12:01 (1 attempt)"
    dead = {**base, "channel": "telegram", "attempts": 8, "delivered_at": None,
            "dead_at": "2026-11-30T12:09:00+00:00", "last_error": "HTTP 500: error"}  # fmt: skip
    assert notification_line(dead).endswith("DEAD-LETTERED after 8 attempts: HTTP 500: error")
    retrying = {**dead, "dead_at": None, "attempts": 2}
    assert "retrying (2 attempts; last HTTP 500: error)" in notification_line(retrying)
