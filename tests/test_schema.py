"""The schema as the database reports it, its CHECKs, and the migration runner."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from conftest import Pg
from fleet_core.db.bootstrap import OWNER_ROLE
from fleet_core.db.migrate import Migrator, discover, migrations_dir
from fleet_core.errors import MigrationError
from fleet_core.lifecycle import SLOT_HOLDING, TaskStatus
from fleet_core.models import AgentType, TaskType

T, TZ, I, J, U, B, VC = (
    "text",
    "timestamp with time zone",
    "integer",
    "jsonb",
    "uuid",
    "boolean",
    ("character varying"),
)
# (column, type, nullable) in table order.
COLUMNS = {
    "fleet_tasks": [
        ("id", U, False), ("operator_id", T, False), ("agent_type", T, False),
        ("model", T, False), ("task_type", T, False), ("description", T, False),
        ("branch", T, False), ("repository", T, False), ("base_branch", T, True),
        ("worktree_path", T, True), ("container_id", T, True), ("tmux_session", T, True),
        ("host_id", T, True), ("status", T, False), ("version", I, False),
        ("pr_number", I, True), ("ci_status", T, True), ("review_status", J, True),
        ("retry_count", I, False), ("max_retries", I, False), ("timeout_minutes", I, False),
        ("context_hash", T, True), ("prompt_hash", T, True), ("idempotency_key", T, True),
        ("context_overrides", J, False), ("failure_context", J, True),
        ("agent_identity_id", U, True), ("group_id", U, True), ("last_activity_at", TZ, True),
        ("spawned_at", TZ, True), ("completed_at", TZ, True), ("created_at", TZ, False),
        ("updated_at", TZ, False), ("sandbox", T, True), ("stall_warning", J, True),
        ("demo", B, False),
        ("runtime", T, False),
    ],
    "fleet_notifications": [
        ("id", U, False), ("task_id", U, True), ("channel", T, False), ("payload", J, False),
        ("delivered", B, False), ("attempts", I, False), ("last_error", T, True),
        ("delivered_at", TZ, True), ("created_at", TZ, False), ("outbox_id", U, True),
        ("operator_id", T, False), ("event_type", T, True), ("last_status", I, True),
        ("next_attempt_at", TZ, True), ("dead_at", TZ, True), ("updated_at", TZ, False),
    ],
    "fleet_config": [
        ("operator_id", T, False),
        ("notify_on_spawn", B, False), ("notify_on_complete", B, False),
        ("notify_on_failure", B, False), ("default_max_retries", I, False),
        ("default_timeout_minutes", I, False), ("preferred_model", T, True),
        ("created_at", TZ, False), ("updated_at", TZ, False), ("tier", T, True),
    ],
    "fleet_outbox": [
        ("id", U, False), ("operator_id", T, False), ("event_type", VC, False),
        ("payload", J, False), ("created_at", TZ, False), ("processed_at", TZ, True),
        ("retry_count", I, False), ("dedup_key", VC, True), ("error", T, True),
        ("next_attempt_at", TZ, False), ("locked_by", T, True), ("locked_until", TZ, True),
        ("dead_at", TZ, True), ("published_at", TZ, True),
    ],
    "fleet_notify_channels": [
        ("operator_id", T, False), ("channel", T, False), ("enabled", B, False),
        ("target", T, True), ("secret_enc", "bytea", True), ("events", "ARRAY", True),
        ("created_at", TZ, False), ("updated_at", TZ, False), ("secret_plain", T, True),
    ],
    "fleet_audit": [
        ("id", "bigint", False), ("task_id", U, True), ("operator_id", T, False),
        ("resource_type", T, False), ("event_type", T, False), ("from_status", T, True),
        ("to_status", T, True), ("detail", J, False), ("created_at", TZ, False),
    ],
    "fleet_spawn_queue": [
        ("id", "bigint", False), ("operator_id", T, False), ("tier", T, False),
        ("request", J, False), ("idempotency_key", T, True), ("created_at", TZ, False),
    ],
    "fleet_signing_keys": [
        ("kid", T, False), ("public_jwk", J, False), ("private_key_enc", "bytea", False),
        ("created_at", TZ, False), ("not_before", TZ, False), ("signing_until", TZ, True),
        ("verify_until", TZ, True),
    ],
    "fleet_secrets": [
        ("operator_id", T, False), ("name", T, False), ("nonce", "bytea", False),
        ("ciphertext", "bytea", False), ("set_at", TZ, False), ("updated_at", TZ, False),
    ],
    "fleet_master_key": [
        ("id", "boolean", False), ("fingerprint", T, False), ("created_at", TZ, False),
    ],
    "fleet_switches": [
        ("name", T, False), ("set_by", T, False), ("reason", T, False), ("set_at", TZ, False),
    ],
    "fleet_tokens": [
        ("jti", T, False), ("operator_id", T, False), ("tier", T, False),
        ("issued_at", TZ, False), ("expires_at", TZ, False), ("revoked_at", TZ, True),
    ],
    "fleet_repositories": [
        ("id", "bigint", False), ("name", T, False), ("path", T, False),
        ("created_by", T, False), ("created_at", TZ, False),
    ],
    "fleet_repository_grants": [
        ("repository_id", "bigint", False), ("operator_id", T, False),
        ("granted_by", T, False), ("created_at", TZ, False),
    ],
}  # fmt: skip

CONSTRAINTS = {
    "fleet_tasks": {
        "fleet_tasks_pkey", "fleet_tasks_idempotency_key", "valid_operator_id", "valid_status",
        "valid_agent_type", "valid_task_type", "valid_retry_count", "valid_max_retries",
        "valid_timeout_minutes", "valid_ci_status", "valid_pr_number", "valid_version",
        "valid_branch", "valid_sandbox", "valid_runtime",
    },
    "fleet_notifications": {
        "fleet_notifications_pkey", "fleet_notifications_task_id_fkey", "valid_channel",
        "valid_attempts", "fleet_notifications_outbox_id_fkey", "valid_notification_operator_id",
    },
    "fleet_config": {
        "fleet_config_pkey", "valid_config_operator_id", "valid_default_max_retries",
        "valid_default_timeout_minutes", "valid_config_tier",
    },
    "fleet_outbox": {"fleet_outbox_pkey", "fleet_outbox_dedup_key", "valid_outbox_operator_id"},
    "fleet_notify_channels": {
        "fleet_notify_channels_pkey", "valid_notify_operator_id", "valid_notify_channel",
        "valid_notify_secret", "valid_notify_target",
    },
    "fleet_audit": {"fleet_audit_pkey", "valid_audit_operator_id", "valid_audit_event_type"},
    "fleet_spawn_queue": {
        "fleet_spawn_queue_pkey", "valid_queue_operator_id", "valid_queue_tier",
        "fleet_spawn_queue_idempotency_key",
    },
    "fleet_signing_keys": {
        "fleet_signing_keys_pkey", "valid_signing_key_kid", "valid_signing_key_window",
    },
    "fleet_secrets": {
        "fleet_secrets_pkey", "valid_secret_operator_id", "valid_secret_name",
        "valid_secret_nonce", "valid_secret_ciphertext",
    },
    "fleet_master_key": {
        "fleet_master_key_pkey", "one_master_key", "valid_master_key_fingerprint",
    },
    "fleet_switches": {
        "fleet_switches_pkey", "valid_switch_name", "valid_switch_set_by", "valid_switch_reason",
    },
    "fleet_tokens": {
        "fleet_tokens_pkey", "valid_token_jti", "valid_token_operator_id", "valid_token_tier",
        "valid_token_lifetime",
    },
    "fleet_repositories": {
        "fleet_repositories_pkey", "fleet_repositories_name", "fleet_repositories_path",
        "valid_repository_name", "valid_repository_path", "valid_repository_created_by",
    },
    "fleet_repository_grants": {
        "fleet_repository_grants_pkey", "fleet_repository_grants_repository_id_fkey",
        "valid_grant_operator_id", "valid_grant_granted_by",
    },
}  # fmt: skip

_SLOT = ", ".join(f"'{s}'::text" for s in [
    "proposed", "spawning", "running", "pr_created", "reviewing", "retrying"])  # fmt: skip
INDEXES = {
    "fleet_tasks_pkey": "UNIQUE INDEX fleet_tasks_pkey ON public.fleet_tasks USING btree (id)",
    "fleet_tasks_operator_idx": "INDEX fleet_tasks_operator_idx ON public.fleet_tasks USING btree (operator_id)",
    "fleet_tasks_status_idx": "INDEX fleet_tasks_status_idx ON public.fleet_tasks USING btree (status)",
    "fleet_tasks_branch_idx": "INDEX fleet_tasks_branch_idx ON public.fleet_tasks USING btree (branch)",
    "fleet_tasks_created_at_idx": "INDEX fleet_tasks_created_at_idx ON public.fleet_tasks USING btree (created_at DESC)",
    "fleet_tasks_slot_holding_idx": "INDEX fleet_tasks_slot_holding_idx ON public.fleet_tasks USING btree (operator_id, status) "
    f"WHERE (status = ANY (ARRAY[{_SLOT}]))",
    "fleet_tasks_context_hash_idx": "INDEX fleet_tasks_context_hash_idx ON public.fleet_tasks USING btree (context_hash) WHERE (context_hash IS NOT NULL)",
    "fleet_tasks_agent_identity_idx": "INDEX fleet_tasks_agent_identity_idx ON public.fleet_tasks USING btree (agent_identity_id) WHERE (agent_identity_id IS NOT NULL)",
    "fleet_tasks_idempotency_key": "UNIQUE INDEX fleet_tasks_idempotency_key ON public.fleet_tasks USING btree (operator_id, idempotency_key)",
    "fleet_notifications_pkey": "UNIQUE INDEX fleet_notifications_pkey ON public.fleet_notifications USING btree (id)",
    "fleet_notifications_task_idx": "INDEX fleet_notifications_task_idx ON public.fleet_notifications USING btree (task_id)",
    "fleet_notifications_undelivered_idx": "INDEX fleet_notifications_undelivered_idx ON public.fleet_notifications USING btree (delivered, created_at) WHERE (delivered = false)",
    "fleet_config_pkey": "UNIQUE INDEX fleet_config_pkey ON public.fleet_config USING btree (operator_id)",
    "fleet_outbox_pkey": "UNIQUE INDEX fleet_outbox_pkey ON public.fleet_outbox USING btree (id)",
    "fleet_outbox_dedup_key": "UNIQUE INDEX fleet_outbox_dedup_key ON public.fleet_outbox USING btree (dedup_key)",
    "fleet_outbox_pending_idx": "INDEX fleet_outbox_pending_idx ON public.fleet_outbox USING btree (created_at) WHERE (processed_at IS NULL)",
    "fleet_outbox_due_idx": "INDEX fleet_outbox_due_idx ON public.fleet_outbox USING btree (next_attempt_at, created_at) WHERE ((processed_at IS NULL) AND (dead_at IS NULL))",
    "fleet_outbox_unpublished_idx": "INDEX fleet_outbox_unpublished_idx ON public.fleet_outbox USING btree (created_at, id) WHERE (published_at IS NULL)",
    "fleet_outbox_dead_idx": "INDEX fleet_outbox_dead_idx ON public.fleet_outbox USING btree (dead_at) WHERE (dead_at IS NOT NULL)",
    "fleet_notifications_outbox_channel": "UNIQUE INDEX fleet_notifications_outbox_channel ON public.fleet_notifications USING btree (outbox_id, operator_id, channel) WHERE (outbox_id IS NOT NULL)",
    "fleet_notifications_dead_idx": "INDEX fleet_notifications_dead_idx ON public.fleet_notifications USING btree (dead_at) WHERE (dead_at IS NOT NULL)",
    "fleet_notify_channels_pkey": "UNIQUE INDEX fleet_notify_channels_pkey ON public.fleet_notify_channels USING btree (operator_id, channel)",
    "fleet_audit_pkey": "UNIQUE INDEX fleet_audit_pkey ON public.fleet_audit USING btree (id)",
    "fleet_audit_task_idx": "INDEX fleet_audit_task_idx ON public.fleet_audit USING btree (task_id, created_at)",
    "fleet_audit_operator_idx": "INDEX fleet_audit_operator_idx ON public.fleet_audit USING btree (operator_id, created_at DESC)",
    "fleet_spawn_queue_pkey": "UNIQUE INDEX fleet_spawn_queue_pkey ON public.fleet_spawn_queue USING btree (id)",
    "fleet_spawn_queue_idempotency_key": "UNIQUE INDEX fleet_spawn_queue_idempotency_key ON public.fleet_spawn_queue USING btree (operator_id, idempotency_key)",
    "fleet_spawn_queue_order_idx": "INDEX fleet_spawn_queue_order_idx ON public.fleet_spawn_queue USING btree (operator_id, id)",
    "fleet_signing_keys_pkey": "UNIQUE INDEX fleet_signing_keys_pkey ON public.fleet_signing_keys USING btree (kid)",
    "fleet_signing_keys_one_signer": "UNIQUE INDEX fleet_signing_keys_one_signer ON public.fleet_signing_keys USING btree ((true)) WHERE (signing_until IS NULL)",
    "fleet_secrets_pkey": "UNIQUE INDEX fleet_secrets_pkey ON public.fleet_secrets USING btree (operator_id, name)",
    "fleet_master_key_pkey": "UNIQUE INDEX fleet_master_key_pkey ON public.fleet_master_key USING btree (id)",
    "fleet_switches_pkey": "UNIQUE INDEX fleet_switches_pkey ON public.fleet_switches USING btree (name)",
    "fleet_tokens_pkey": "UNIQUE INDEX fleet_tokens_pkey ON public.fleet_tokens USING btree (jti)",
    "fleet_tokens_issued_idx": "INDEX fleet_tokens_issued_idx ON public.fleet_tokens USING btree (issued_at DESC)",
    "fleet_repositories_pkey": "UNIQUE INDEX fleet_repositories_pkey ON public.fleet_repositories USING btree (id)",
    "fleet_repositories_name": "UNIQUE INDEX fleet_repositories_name ON public.fleet_repositories USING btree (name)",
    "fleet_repositories_path": "UNIQUE INDEX fleet_repositories_path ON public.fleet_repositories USING btree (path)",
    "fleet_repository_grants_pkey": "UNIQUE INDEX fleet_repository_grants_pkey ON public.fleet_repository_grants USING btree (repository_id, operator_id)",
    "fleet_repository_grants_operator_idx": "INDEX fleet_repository_grants_operator_idx ON public.fleet_repository_grants USING btree (operator_id)",
}  # fmt: skip
TRIGGERS = {
    ("fleet_tasks", "fleet_tasks_updated_at"),
    ("fleet_config", "fleet_config_updated_at"),
    ("fleet_secrets", "fleet_secrets_updated_at"),
    ("fleet_outbox", "fleet_outbox_wake"),
    ("fleet_notifications", "fleet_notifications_updated_at"),
    ("fleet_notify_channels", "fleet_notify_channels_updated_at"),
}


async def describe(conn: asyncpg.Connection) -> dict[str, object]:
    cols = await conn.fetch(
        """SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
            WHERE table_schema = 'public' AND table_name LIKE 'fleet\\_%'
              AND table_name <> 'fleet_schema_migrations'
            ORDER BY table_name, ordinal_position"""
    )
    columns: dict[str, list[tuple[str, str, bool]]] = {}
    for r in cols:
        columns.setdefault(r["table_name"], []).append(
            (r["column_name"], r["data_type"], r["is_nullable"] == "YES")
        )
    cons = await conn.fetch(
        """SELECT conrelid::regclass::text AS t, conname FROM pg_constraint
            WHERE connamespace = 'public'::regnamespace AND contype <> 'n'
              AND conrelid::regclass::text <> 'fleet_schema_migrations'"""
    )
    constraints: dict[str, set[str]] = {}  # (PostgreSQL 18 lists NOT NULL ones too: not here)
    for r in cons:
        constraints.setdefault(r["t"], set()).add(r["conname"])
    idx = await conn.fetch(
        """SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
            AND tablename <> 'fleet_schema_migrations'"""
    )
    indexes = {r["indexname"]: r["indexdef"].removeprefix("CREATE ") for r in idx}
    trg = await conn.fetch(
        "SELECT tgrelid::regclass::text AS t, tgname FROM pg_trigger WHERE NOT tgisinternal"
    )
    triggers = {(r["t"], r["tgname"]) for r in trg}
    return {
        "columns": columns,
        "constraints": constraints,
        "indexes": indexes,
        "triggers": triggers,
    }


async def test_schema_matches(su: asyncpg.Connection) -> None:
    got = await describe(su)
    assert got["columns"] == COLUMNS
    assert got["constraints"] == CONSTRAINTS
    assert got["indexes"] == INDEXES
    assert got["triggers"] == TRIGGERS


async def test_slot_index_matches_lifecycle() -> None:
    assert {s.value for s in SLOT_HOLDING} == set(
        _SLOT.replace("'::text", "").replace("'", "").split(", ")
    )


async def test_rls_enabled_and_forced(su: asyncpg.Connection) -> None:
    rows = await su.fetch(
        "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
        "WHERE relname = ANY($1::text[])",
        list(COLUMNS),
    )
    assert {r["relname"]: (r["relrowsecurity"], r["relforcerowsecurity"]) for r in rows} == {
        t: (True, True) for t in COLUMNS
    }


async def _insert_task(conn: asyncpg.Connection, **overrides: object) -> uuid.UUID:
    fields: dict[str, object] = {
        "operator_id": "alice", "agent_type": "demo", "model": "m", "task_type": "docs",
        "description": "d", "branch": "b", "repository": "/r",
    }  # fmt: skip
    fields.update(overrides)
    cols = ", ".join(fields)
    params = ", ".join(f"${i}" for i in range(1, len(fields) + 1))
    return await conn.fetchval(
        f"INSERT INTO fleet_tasks ({cols}) VALUES ({params}) RETURNING id", *fields.values()
    )


BAD_TASK_VALUES = [
    ("valid_operator_id", {"operator_id": ""}),
    ("valid_status", {"status": "sleeping"}),
    ("valid_agent_type", {"agent_type": "copilot"}),
    ("valid_task_type", {"task_type": "chores"}),
    ("valid_retry_count", {"retry_count": -1}),
    ("valid_retry_count", {"retry_count": 4, "max_retries": 3}),
    ("valid_max_retries", {"max_retries": -1}),
    ("valid_max_retries", {"max_retries": 11}),
    ("valid_timeout_minutes", {"timeout_minutes": 4}),
    ("valid_timeout_minutes", {"timeout_minutes": 481}),
    ("valid_ci_status", {"ci_status": "green"}),
    ("valid_pr_number", {"pr_number": 0}),
    ("valid_version", {"version": -1}),
    ("valid_branch", {"branch": ""}),
    ("valid_branch", {"branch": "b" * 129}),
]


@pytest.mark.parametrize(
    ("name", "bad"), BAD_TASK_VALUES, ids=[f"{n}-{v}" for n, v in BAD_TASK_VALUES]
)
async def test_task_checks_reject(
    su: asyncpg.Connection, name: str, bad: dict[str, object]
) -> None:
    with pytest.raises(asyncpg.CheckViolationError) as err:
        await _insert_task(su, **bad)
    assert err.value.constraint_name == name


async def test_every_enum_value_is_accepted(su: asyncpg.Connection) -> None:
    for status in TaskStatus:
        await _insert_task(su, status=status.value)
    for agent in AgentType:
        await _insert_task(su, agent_type=agent.value)
    for task_type in TaskType:
        await _insert_task(su, task_type=task_type.value)


async def test_other_checks_reject(su: asyncpg.Connection) -> None:
    tid = await _insert_task(su)
    cases = [
        ("valid_channel", "INSERT INTO fleet_notifications (task_id, channel, payload, "
         "operator_id) VALUES ($1, 'email', '{}', 'alice')", [tid]),
        ("valid_attempts", "INSERT INTO fleet_notifications (task_id, channel, payload, attempts, operator_id) "
         "VALUES ($1, 'cli', '{}', -1, 'alice')", [tid]),
        ("valid_config_operator_id", "INSERT INTO fleet_config (operator_id) VALUES ('')", []),
        ("valid_default_max_retries",
         "INSERT INTO fleet_config (operator_id, default_max_retries) VALUES ('a', 11)", []),
        ("valid_default_timeout_minutes",
         "INSERT INTO fleet_config (operator_id, default_timeout_minutes) VALUES ('a', 1)", []),
        ("valid_outbox_operator_id",
         "INSERT INTO fleet_outbox (operator_id, event_type, payload) VALUES ('', 'x', '{}')", []),
        ("valid_audit_operator_id",
         "INSERT INTO fleet_audit (operator_id, event_type) VALUES ('', 'fleet.x')", []),
        ("valid_audit_event_type",
         "INSERT INTO fleet_audit (operator_id, event_type) VALUES ('a', 'other')", []),
    ]  # fmt: skip
    for name, sql, args in cases:
        with pytest.raises(asyncpg.CheckViolationError) as err:
            await su.execute(sql, *args)
        assert err.value.constraint_name == name


async def test_updated_at_triggers(su: asyncpg.Connection) -> None:
    tid = await _insert_task(su)
    await su.execute("INSERT INTO fleet_config (operator_id) VALUES ('alice')")
    before = await su.fetchval("SELECT updated_at FROM fleet_tasks WHERE id = $1", tid)
    cfg_before = await su.fetchval("SELECT updated_at FROM fleet_config")
    await su.execute("UPDATE fleet_tasks SET model = 'other' WHERE id = $1", tid)
    await su.execute("UPDATE fleet_config SET preferred_model = 'x'")
    assert await su.fetchval("SELECT updated_at FROM fleet_tasks WHERE id = $1", tid) > before
    assert await su.fetchval("SELECT updated_at FROM fleet_config") > cfg_before


# -- the migration runner, on databases of their own --------------------------------------------


@pytest.fixture
async def scratch_db(pg: Pg) -> AsyncIterator[str]:
    name = f"fleet_scratch_{uuid.uuid4().hex[:8]}"
    su = await asyncpg.connect(pg.superuser_dsn)
    await su.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
    try:
        yield pg.cluster.info.dsn(OWNER_ROLE, name)
    finally:
        await su.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await su.close()


async def test_up_down_up_round_trip(scratch_db: str) -> None:
    conn = await asyncpg.connect(scratch_db)
    try:
        mig = Migrator(conn)
        assert [m.version for m in await mig.migrate()] == [m.version for m in discover()]
        first = await describe(conn)
        assert await mig.migrate() == []  # idempotent
        undone = await mig.down(len(discover()))
        assert [m.version for m in undone] == sorted((m.version for m in discover()), reverse=True)
        empty = await describe(conn)
        assert empty["columns"] == {} and empty["triggers"] == set()
        assert {s.state for s in await mig.status()} == {"pending"}
        await mig.migrate()
        assert await describe(conn) == first
        assert {s.state for s in await mig.status()} == {"applied"}
    finally:
        await conn.close()


async def test_changed_migration_is_refused(scratch_db: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy)
    conn = await asyncpg.connect(scratch_db)
    try:
        await Migrator(conn, discover(copy)).migrate()
        first = discover(copy)[0].up_path
        first.write_text(first.read_text() + "\n-- edited\n")
        with pytest.raises(MigrationError, match="was changed after it was applied"):
            await Migrator(conn, discover(copy)).migrate()
        assert next(s.state for s in await Migrator(conn, discover(copy)).status()) == "changed"
    finally:
        await conn.close()


async def test_down_file_required(tmp_path: Path) -> None:
    (tmp_path / "0001_x.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="no down file"):
        discover(tmp_path)


async def test_concurrent_migrations_are_safe(scratch_db: str) -> None:
    conns = [await asyncpg.connect(scratch_db) for _ in range(4)]
    try:
        results = await asyncio.gather(*(Migrator(c).migrate() for c in conns))
        assert sorted(len(r) for r in results) == [0, 0, 0, len(discover())]
        rows = await conns[0].fetchval("SELECT count(*) FROM fleet_schema_migrations")
        assert rows == len(discover())
    finally:
        for c in conns:
            await c.close()
