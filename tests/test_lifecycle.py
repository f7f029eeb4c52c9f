from fleet_core.lifecycle import (
    LIVE,
    SLOT_HOLDING,
    SOURCES,
    TERMINAL,
    VALID_TRANSITIONS,
    TaskStatus,
    can_transition,
)

S = TaskStatus

# DESIGN §3, written out independently of the module under test.
DESIGN_EDGES = {
    ("proposed", "spawning"), ("proposed", "cancelled"),
    ("spawning", "running"), ("spawning", "failed"), ("spawning", "cancelled"),
    ("running", "pr_created"), ("running", "failed"), ("running", "cancelled"),
    ("running", "ready"),  # a review-type task: its report is its DoD (issue 14; not in §3 yet)
    ("pr_created", "reviewing"), ("pr_created", "failed"), ("pr_created", "cancelled"),
    ("reviewing", "ready"), ("reviewing", "rejected"), ("reviewing", "cancelled"),
    ("ready", "merged"), ("ready", "failed"), ("ready", "cancelled"),
    ("failed", "retrying"), ("failed", "abandoned"), ("failed", "cancelled"),
    ("rejected", "retrying"), ("rejected", "abandoned"), ("rejected", "cancelled"),
    ("retrying", "spawning"), ("retrying", "abandoned"), ("retrying", "cancelled"),
}  # fmt: skip


def test_transitions_match_design() -> None:
    edges = {(a.value, b.value) for a, targets in VALID_TRANSITIONS.items() for b in targets}
    assert edges == DESIGN_EDGES
    assert len(TaskStatus) == 12


def test_named_sets() -> None:
    assert {s.value for s in TERMINAL} == {"merged", "abandoned", "cancelled"}
    assert {s.value for s in SLOT_HOLDING} == {
        "proposed", "spawning", "running", "pr_created", "reviewing", "retrying"
    }  # fmt: skip
    assert {s.value for s in LIVE} == {"spawning", "running"}
    assert not SLOT_HOLDING & TERMINAL


def test_no_self_transitions_and_sources_are_inverse() -> None:
    for a in TaskStatus:
        assert not can_transition(a, a)
        for b in TaskStatus:
            assert (a in SOURCES[b]) == can_transition(a, b)
