"""TaskRegistry: every read and write of fleet_tasks, through tenant-scoped transactions.

Transitions are conditional UPDATEs on (id, version); zero rows is a StaleVersionError, an
InvalidTransitionError or a TaskNotFoundError, told apart by one follow-up read. A terminal
transition writes its audit row (INV-016) and queues its notification event in the outbox
(INV-018) in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn
from uuid import UUID

import asyncpg

from fleet_core.audit import record_terminal
from fleet_core.notify.record import queue_transition

if TYPE_CHECKING:
    from fleet_core.db.database import Conn
from fleet_core.db.database import Database, QueryClass, Tenant
from fleet_core.errors import (
    ActiveTaskDeletionError,
    AmbiguousTaskIdError,
    BadInputError,
    DuplicateTaskError,
    InvalidTransitionError,
    StaleVersionError,
    TaskNotFoundError,
)
from fleet_core.lifecycle import (
    SLOT_HOLDING,
    SOURCES,
    SUMMARY_ACTIVE,
    SUMMARY_COMPLETED,
    SUMMARY_FAILED,
    TERMINAL,
    TaskStatus,
)
from fleet_core.models import (
    AgentType,
    FleetStatusSummary,
    NewTask,
    TaskRecord,
    TaskType,
    TaskUpdate,
)

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
PREFIX_RE = re.compile(r"^[0-9a-fA-F-]{4,36}$")


def _record(row: asyncpg.Record) -> TaskRecord:
    return TaskRecord.model_validate(dict(row))


def _uuid(task_id: UUID | str) -> UUID:
    if isinstance(task_id, UUID):
        return task_id
    try:
        return UUID(task_id)
    except ValueError:
        raise BadInputError("task_id", f"{task_id!r} is not a task id") from None


def _update(update: TaskUpdate | Mapping[str, Any] | None) -> TaskUpdate:
    if update is None:
        return TaskUpdate()
    if isinstance(update, TaskUpdate):
        return update
    return TaskUpdate.model_validate(dict(update))


class TaskRegistry:
    """The task table as seen by one tenant (an operator, or the engine acting as admin)."""

    def __init__(self, db: Database, tenant: Tenant) -> None:
        self.db = db
        self.tenant = tenant

    @asynccontextmanager
    async def _conn(
        self, conn: Conn | None, query_class: QueryClass = QueryClass.POINT
    ) -> AsyncIterator[Conn]:
        """Join the caller's transaction when given one, else open our own."""
        if conn is not None:
            yield conn
            return
        async with self.db.tx(self.tenant, query_class) as own:
            yield own

    # -- create and read -----------------------------------------------------------------------

    async def create(
        self,
        task: NewTask,
        *,
        operator_id: str | None = None,
        conn: Conn | None = None,
    ) -> TaskRecord:
        """Insert at `proposed`; a repeated idempotency key raises DuplicateTaskError."""
        operator = operator_id or self.tenant.operator_id
        if not operator:
            raise BadInputError("operator", "creating a task needs an operator id")
        data = task.model_dump(mode="json")
        cols = ["operator_id", *data]
        params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        sql = (
            f"INSERT INTO fleet_tasks ({', '.join(cols)}) VALUES ({params}) "
            "ON CONFLICT (operator_id, idempotency_key) DO NOTHING RETURNING *"
        )
        async with self._conn(conn) as c:
            row = await c.fetchrow(sql, operator, *data.values())
            if row is None:
                existing = await c.fetchval(
                    "SELECT id FROM fleet_tasks WHERE operator_id = $1 AND idempotency_key = $2",
                    operator,
                    task.idempotency_key,
                )
                raise DuplicateTaskError(str(existing))
        return _record(row)

    async def find(self, task_id: UUID | str, *, conn: Conn | None = None) -> TaskRecord | None:
        async with self._conn(conn) as c:
            row = await c.fetchrow("SELECT * FROM fleet_tasks WHERE id = $1", _uuid(task_id))
        return None if row is None else _record(row)

    async def get(self, task_id: UUID | str, *, conn: Conn | None = None) -> TaskRecord:
        rec = await self.find(task_id, conn=conn)
        if rec is None:
            raise TaskNotFoundError(str(task_id))
        return rec

    async def resolve(self, id_or_prefix: str) -> TaskRecord:
        """A full id or a unique prefix of one (at least 4 characters), like git."""
        text = id_or_prefix.strip().lower()
        if not PREFIX_RE.match(text):
            raise BadInputError(
                "task_id", f"{id_or_prefix!r} is not a task id or a prefix of 4+ hex characters"
            )
        if len(text) == 36:
            return await self.get(text)
        async with self._conn(None) as c:
            rows = await c.fetch(
                "SELECT * FROM fleet_tasks WHERE id::text LIKE $1 ORDER BY created_at LIMIT 6",
                text + "%",
            )
        if not rows:
            raise TaskNotFoundError(id_or_prefix)
        if len(rows) > 1:
            raise AmbiguousTaskIdError(id_or_prefix, [str(r["id"]) for r in rows])
        return _record(rows[0])

    async def query(
        self,
        *,
        operator_id: str | None = None,
        status: TaskStatus | Iterable[TaskStatus] | None = None,
        agent_type: AgentType | None = None,
        task_type: TaskType | None = None,
        since: datetime | None = None,
        limit: int = DEFAULT_LIMIT,
        conn: Conn | None = None,
    ) -> list[TaskRecord]:
        """Newest first. RLS limits rows to the tenant whatever the filters say."""
        if not 1 <= limit <= MAX_LIMIT:
            raise BadInputError("limit", f"must be between 1 and {MAX_LIMIT}")
        where: list[str] = []
        args: list[Any] = []

        def add(clause: str, value: Any) -> None:
            args.append(value)
            where.append(clause.format(n=len(args)))

        if operator_id is not None:
            add("operator_id = ${n}", operator_id)
        if status is not None:
            statuses = [status] if isinstance(status, TaskStatus) else list(status)
            add("status = ANY(${n}::text[])", [s.value for s in statuses])
        if agent_type is not None:
            add("agent_type = ${n}", agent_type.value)
        if task_type is not None:
            add("task_type = ${n}", task_type.value)
        if since is not None:
            add("created_at >= ${n}", since)
        args.append(limit)
        sql = "SELECT * FROM fleet_tasks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY created_at DESC, id LIMIT ${len(args)}"
        async with self._conn(conn, QueryClass.LIST) as c:
            rows = await c.fetch(sql, *args)
        return [_record(r) for r in rows]

    async def count_by_status(
        self, *, operator_id: str | None = None, conn: Conn | None = None
    ) -> dict[TaskStatus, int]:
        sql = "SELECT status, count(*) AS n FROM fleet_tasks"
        args: list[Any] = []
        if operator_id is not None:
            sql += " WHERE operator_id = $1"
            args.append(operator_id)
        async with self._conn(conn, QueryClass.LIST) as c:
            rows = await c.fetch(sql + " GROUP BY status", *args)
        return {TaskStatus(r["status"]): r["n"] for r in rows}

    async def summary(
        self, *, status: Iterable[TaskStatus] | None = None, limit: int = DEFAULT_LIMIT
    ) -> FleetStatusSummary:
        """Counts over every visible task (not just the page), the queued spawns and the
        newest `limit` tasks, in one transaction."""
        async with self._conn(None, QueryClass.LIST) as c:
            counts = await self.count_by_status(conn=c)
            tasks = await self.query(status=status, limit=limit, conn=c)
            queued = int(await c.fetchval("SELECT count(*) FROM fleet_spawn_queue"))

        def total(group: frozenset[TaskStatus]) -> int:
            return sum(n for s, n in counts.items() if s in group)

        return FleetStatusSummary(
            active=total(SUMMARY_ACTIVE),
            completed=total(SUMMARY_COMPLETED),
            failed=total(SUMMARY_FAILED),
            queued=queued,
            tasks=tasks,
        )

    async def count_active(self, operator_id: str, *, conn: Conn | None = None) -> int:
        """Slot-holding tasks of one operator (what the concurrency limit counts)."""
        async with self._conn(conn) as c:
            n = await c.fetchval(
                "SELECT count(*) FROM fleet_tasks WHERE operator_id = $1 AND status = ANY($2)",
                operator_id,
                [s.value for s in SLOT_HOLDING],
            )
        return int(n)

    async def count_all_active(self, *, conn: Conn | None = None) -> int:
        async with self._conn(conn) as c:
            n = await c.fetchval(
                "SELECT count(*) FROM fleet_tasks WHERE status = ANY($1)",
                [s.value for s in SLOT_HOLDING],
            )
        return int(n)

    async def list_live(self, *, host_id: str | None = None) -> list[TaskRecord]:
        """Non-terminal tasks (for reconcile and the monitor), optionally of one host."""
        args: list[Any] = [[s.value for s in TERMINAL]]
        sql = "SELECT * FROM fleet_tasks WHERE status <> ALL($1::text[])"
        if host_id is not None:
            args.append(host_id)
            sql += " AND host_id = $2"
        async with self._conn(None, QueryClass.LIST) as c:
            rows = await c.fetch(sql + " ORDER BY created_at", *args)
        return [_record(r) for r in rows]

    # -- change --------------------------------------------------------------------------------

    async def transition(
        self,
        task_id: UUID | str,
        to_status: TaskStatus,
        *,
        expected_version: int,
        update: TaskUpdate | Mapping[str, Any] | None = None,
        audit_detail: Mapping[str, Any] | None = None,
        conn: Conn | None = None,
    ) -> TaskRecord:
        """Move a task to `to_status` if it is still at `expected_version` and the edge is
        legal (VALID_TRANSITIONS), writing `update`'s fields in the same statement."""
        tid = _uuid(task_id)
        to_status = TaskStatus(to_status)
        terminal = to_status in TERMINAL
        changes = _update(update)
        sets, args = changes.assignments(5)
        # A subquery in RETURNING sees the row as it was before this statement.
        returning = "*, (SELECT p.status FROM fleet_tasks p WHERE p.id = $1) AS from_status"
        if terminal and "completed_at" not in changes.model_fields_set:
            sets.append("completed_at = now()")
        set_sql = ", ".join(["status = $3", "version = version + 1", *sets])
        sql = (
            f"UPDATE fleet_tasks SET {set_sql} "
            f"WHERE id = $1 AND version = $2 AND status = ANY($4::text[]) RETURNING {returning}"
        )
        sources = [s.value for s in SOURCES[to_status]]
        async with self._conn(conn) as c:
            row = await c.fetchrow(sql, tid, expected_version, to_status.value, sources, *args)
            if row is None:
                await self._explain_miss(c, tid, expected_version, to_status)
            rec = _record(row)
            if terminal:
                await record_terminal(c, rec, row["from_status"], audit_detail)
            else:  # every transition is an event (NATS, channels that ask for it)
                await queue_transition(c, rec, row["from_status"], audit_detail)
        return rec

    async def _explain_miss(
        self, c: Conn, tid: UUID, expected: int, to_status: TaskStatus
    ) -> NoReturn:
        cur = await c.fetchrow("SELECT status, version FROM fleet_tasks WHERE id = $1", tid)
        if cur is None:
            raise TaskNotFoundError(str(tid))
        if cur["version"] != expected:
            raise StaleVersionError(str(tid), expected, cur["version"])
        raise InvalidTransitionError(str(tid), cur["status"], to_status.value)

    async def update_metadata(
        self,
        task_id: UUID | str,
        update: TaskUpdate | Mapping[str, Any],
        *,
        expected_version: int,
        conn: Conn | None = None,
    ) -> TaskRecord:
        """Change fields without changing status (ci_status, last activity, ...), versioned."""
        tid = _uuid(task_id)
        changes = _update(update)
        sets, args = changes.assignments(3)
        if not sets:
            raise BadInputError("update", "no fields to update")
        sql = (
            f"UPDATE fleet_tasks SET {', '.join(['version = version + 1', *sets])} "
            "WHERE id = $1 AND version = $2 RETURNING *"
        )
        async with self._conn(conn) as c:
            row = await c.fetchrow(sql, tid, expected_version, *args)
            if row is None:
                cur = await c.fetchval("SELECT version FROM fleet_tasks WHERE id = $1", tid)
                if cur is None:
                    raise TaskNotFoundError(str(tid))
                raise StaleVersionError(str(tid), expected_version, cur)
        return _record(row)

    async def record_failure(
        self,
        task_id: UUID | str,
        failure_context: Mapping[str, Any],
        *,
        expected_version: int,
        conn: Conn | None = None,
    ) -> TaskRecord | None:
        """Count one failure and store its context, atomically, only while the task is still at
        `expected_version` (else StaleVersionError, DESIGN §3) and retry_count < max_retries
        (INV-017). None when the budget is already spent."""
        tid = _uuid(task_id)
        async with self._conn(conn) as c:
            row = await c.fetchrow(
                """UPDATE fleet_tasks
                      SET retry_count = retry_count + 1, failure_context = $3,
                          version = version + 1
                    WHERE id = $1 AND version = $2 AND retry_count < max_retries
                RETURNING *""",
                tid,
                expected_version,
                dict(failure_context),
            )
            if row is None:
                cur = await c.fetchval("SELECT version FROM fleet_tasks WHERE id = $1", tid)
                if cur is None:
                    raise TaskNotFoundError(str(tid))
                if cur != expected_version:
                    raise StaleVersionError(str(tid), expected_version, cur)
                return None
        return _record(row)

    async def delete(self, task_id: UUID | str) -> TaskRecord:
        """Remove a terminal task's row (its audit trail stays); others raise."""
        tid = _uuid(task_id)
        async with self._conn(None) as c:
            row = await c.fetchrow(
                "DELETE FROM fleet_tasks WHERE id = $1 AND status = ANY($2::text[]) RETURNING *",
                tid,
                [s.value for s in TERMINAL],
            )
            if row is None:
                status = await c.fetchval("SELECT status FROM fleet_tasks WHERE id = $1", tid)
                if status is None:
                    raise TaskNotFoundError(str(tid))
                raise ActiveTaskDeletionError(str(tid), status)
        return _record(row)
