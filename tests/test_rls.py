"""Row-level security binds the engine's role: tenants see and change only their own rows."""

from __future__ import annotations

import asyncpg
import pytest

from conftest import Pg, new_task
from fleet_core.db.database import Database, Tenant, check_engine_role
from fleet_core.errors import BadInputError, TaskNotFoundError, UnsafeRoleError
from fleet_core.lifecycle import TaskStatus
from fleet_core.registry import TaskRegistry

TENANT_TABLES = (
    "fleet_tasks",
    "fleet_notifications",
    "fleet_config",
    "fleet_outbox",
    "fleet_audit",
    "fleet_spawn_queue",
    "fleet_secrets",
    "fleet_notify_channels",
    "fleet_reviews",
)


async def seed(su: asyncpg.Connection, alice: TaskRegistry):
    rec = await alice.create(new_task())
    done = await alice.transition(rec.id, TaskStatus.CANCELLED, expected_version=0)  # audit+outbox
    await su.execute(
        "INSERT INTO fleet_notifications (task_id, channel, payload, operator_id) "
        "VALUES ($1, 'cli', '{}', 'alice')",
        rec.id,
    )
    await su.execute("INSERT INTO fleet_config (operator_id) VALUES ('alice')")
    await su.execute(
        "INSERT INTO fleet_notify_channels (operator_id, channel) VALUES ('alice', 'desktop')"
    )
    await su.execute(
        "INSERT INTO fleet_spawn_queue (operator_id, tier, request) VALUES ('alice', 'builder', '{}')"
    )
    await su.execute(
        "INSERT INTO fleet_secrets (operator_id, name, nonce, ciphertext) "
        "VALUES ('alice', 'API_KEY', $1, $2)",
        bytes(12), bytes(32),
    )  # fmt: skip
    await su.execute(
        "INSERT INTO fleet_reviews (task_id, operator_id, attempt, head_sha, reviewer, kind, "
        "model, verdict) VALUES ($1, 'alice', 1, 'abc', 'logic', 'demo', 'demo', 'approve')",
        rec.id,
    )
    return done


async def test_other_operator_cannot_touch_tasks(
    su: asyncpg.Connection, alice: TaskRegistry, bob: TaskRegistry
) -> None:
    live = await alice.create(new_task())
    assert await bob.find(live.id) is None
    assert await bob.query() == []
    assert await bob.count_by_status() == {}
    assert await bob.count_active("alice") == 0  # the filter says alice, RLS says bob
    with pytest.raises(TaskNotFoundError):
        await bob.transition(live.id, TaskStatus.CANCELLED, expected_version=0)
    with pytest.raises(TaskNotFoundError):
        await bob.record_failure(live.id, {"x": 1}, expected_version=0)
    with pytest.raises(TaskNotFoundError):
        await bob.update_metadata(live.id, {"ci_status": "failing"}, expected_version=0)
    done = await alice.transition(live.id, TaskStatus.CANCELLED, expected_version=0)
    with pytest.raises(TaskNotFoundError):
        await bob.delete(done.id)
    assert (await alice.get(live.id)).status is TaskStatus.CANCELLED
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # WITH CHECK
        await bob.create(new_task(), operator_id="alice")


async def test_other_tables_are_isolated(
    su: asyncpg.Connection, db: Database, alice: TaskRegistry
) -> None:
    task = await seed(su, alice)
    async with db.tx(Tenant.operator("bob")) as conn:
        for table in TENANT_TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        assert await conn.execute("UPDATE fleet_config SET preferred_model = 'x'") == "UPDATE 0"
        assert await conn.execute("DELETE FROM fleet_notifications") == "DELETE 0"
        assert await conn.execute("DELETE FROM fleet_config") == "DELETE 0"
        assert await conn.execute("DELETE FROM fleet_spawn_queue") == "DELETE 0"
        assert await conn.execute("DELETE FROM fleet_secrets") == "DELETE 0"
        assert await conn.execute("UPDATE fleet_secrets SET nonce = nonce") == "UPDATE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with db.tx(Tenant.operator("bob")) as conn:
            await conn.execute(
                "INSERT INTO fleet_notifications (task_id, channel, payload, operator_id) "
                "VALUES ($1, 'cli', '{}', 'alice')",
                task.id,
            )
    async with db.tx(Tenant.operator("alice")) as conn:
        for table in TENANT_TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") >= 1, table


async def test_no_tenant_setting_sees_nothing(su: asyncpg.Connection, pg: Pg, alice) -> None:
    await seed(su, alice)
    conn = await asyncpg.connect(pg.engine_dsn)
    try:
        for table in TENANT_TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        assert await conn.execute("UPDATE fleet_tasks SET model = 'x'") == "UPDATE 0"
        assert await conn.execute("DELETE FROM fleet_tasks") == "DELETE 0"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description,"
                " branch, repository) VALUES ('alice','demo','m','docs','d','b','/r')"
            )
        # The audit trail is append-only for the engine.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM fleet_audit")
    finally:
        await conn.close()
    assert await su.fetchval("SELECT count(*) FROM fleet_tasks") == 1


async def test_admin_sees_all(su: asyncpg.Connection, alice, bob, admin: TaskRegistry) -> None:
    await alice.create(new_task())
    await bob.create(new_task())
    assert {r.operator_id for r in await admin.query()} == {"alice", "bob"}
    assert await admin.count_all_active() == 2


async def test_engine_connection_is_the_restricted_role(db: Database) -> None:
    async with db.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT current_user AS u, rolsuper, rolbypassrls FROM pg_roles "
            "WHERE rolname = current_user"
        )
        owned = await conn.fetchval(
            "SELECT count(*) FROM pg_class WHERE pg_has_role(current_user, relowner, 'USAGE') "
            "AND relkind = 'r' AND relnamespace = 'public'::regnamespace"
        )
    assert (row["u"], row["rolsuper"], row["rolbypassrls"], owned) == (
        "fleet_engine", False, False, 0
    )  # fmt: skip


@pytest.mark.parametrize("who", ["superuser", "owner"])
async def test_engine_refuses_roles_that_bypass_rls(pg: Pg, who: str) -> None:
    dsn = pg.superuser_dsn if who == "superuser" else pg.owner_dsn
    conn = await asyncpg.connect(dsn)
    try:
        with pytest.raises(UnsafeRoleError):
            await check_engine_role(conn)
    finally:
        await conn.close()
    with pytest.raises(UnsafeRoleError):
        await Database.connect(dsn, owner_dsn=dsn, mode="embedded")


def test_tenant_validation() -> None:
    with pytest.raises(BadInputError):
        Tenant.operator("")
    with pytest.raises(BadInputError):
        Tenant.operator("alice'; DROP TABLE fleet_tasks; --")
    with pytest.raises(BadInputError):
        Tenant(None, False)
    assert Tenant.admin().is_admin


async def test_global_active_count_reveals_only_a_number(
    su: asyncpg.Connection, db: Database, alice: TaskRegistry
) -> None:
    await alice.create(new_task())
    await alice.create(new_task(branch="fleet/other"))
    async with db.tx(Tenant.operator("bob")) as conn:
        assert await conn.fetchval("SELECT fleet_active_total($1)", ["proposed"]) == 2
        assert await conn.fetchval("SELECT count(*) FROM fleet_tasks") == 0
        # the admin setting of the function does not leak into the caller's transaction
        assert await conn.fetchval("SELECT current_setting('app.is_admin', true)") == "false"
