"""The outbox worker: delivery throughput to a loopback HTTP sink ÷ plain INSERTs of the
same events, and the delay from an event's commit to its arrival at the sink (median, p99)
at 1 and 100 events/s. A throwaway embedded cluster; the sink is a separate process (a
ThreadingHTTPServer answering 204 like a Discord webhook, recording when each event id
arrived).

- throughput: N events queued with the worker stopped (the baseline: INSERTs/s, one
  transaction each, as a transition queues them), then the worker started and timed until
  every event is delivered (events/s); the ratio delivered/s ÷ inserted/s per round.
- delay: events inserted at a fixed rate while the worker runs; each payload carries its
  commit time (time.time() right after COMMIT), the sink its arrival time.

    python benchmarks/bench_outbox.py [--rounds 3] [--events 500] [--slow 20] [--fast 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fleet_core.auth.secret_store import SecretStore
from fleet_core.config import Settings
from fleet_core.db.connect import cluster_for, open_database
from fleet_core.db.database import Database, Tenant
from fleet_core.notify.record import queue_event
from fleet_core.notify.service import NotifyService
from fleet_core.notify.settings import ChannelStore

SINK = r"""
import sys, threading, time
LOCK = threading.Lock()
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        line = f"{self.headers.get('X-Fleet-Event-Id')} {time.time()}\n"
        with LOCK:
            sys.stdout.write(line); sys.stdout.flush()
        self.send_response(204); self.send_header("Content-Length", "0"); self.end_headers()
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""
OP = "bench"


class Sink:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SINK], stdout=subprocess.PIPE,
                                     text=True)  # fmt: skip
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.arrivals: dict[str, float] = {}
        self.expected = 0
        self.cond = threading.Condition()
        threading.Thread(target=self._drain, daemon=True).start()  # a full pipe would block it

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            key, at = line.split()
            with self.cond:
                self.arrivals.setdefault(key, float(at))
                self.cond.notify_all()

    def read(self, n: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: len(self.arrivals) >= n, timeout=120)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


async def insert(db: Database, key: str) -> float:
    async with db.tx(Tenant.operator(OP)) as conn:
        payload = {"task_id": None, "to_status": "merged"}
        await queue_event(conn, operator_id=OP, event_type="task.merged", payload=payload,
                          dedup_key=key)  # fmt: skip
    return time.time()


async def settled(db: Database) -> int:
    async with db.tx(Tenant.admin()) as conn:
        n = await conn.fetchval("SELECT count(*) FROM fleet_outbox "
                                "WHERE processed_at IS NULL AND dead_at IS NULL")  # fmt: skip
    return int(n)


async def throughput(settings: Settings, db: Database, sink: Sink, n: int, r: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        await insert(db, f"tp{r}:{i}")
    inserts = n / (time.perf_counter() - t0)
    svc = NotifyService(settings, db, SecretStore.for_settings(settings, db))
    t0 = time.perf_counter()
    await svc.start()
    while await settled(db):  # noqa: ASYNC110 (the database is what changes)
        await asyncio.sleep(0.01)
    delivered = n / (time.perf_counter() - t0)
    await svc.stop()
    ratio = delivered / inserts
    print(f"round {r}: {inserts:.0f} inserts/s, {delivered:.0f} delivered/s, ratio {ratio:.3f}")
    return ratio


async def delays(
    settings: Settings, db: Database, sink: Sink, rate: float, n: int, tag: str
) -> tuple[float, float]:
    svc = NotifyService(settings, db, SecretStore.for_settings(settings, db))
    await svc.start()
    committed: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        key = f"{tag}:{i}"
        committed[key] = await insert(db, key)
    while await settled(db):  # noqa: ASYNC110 (the database is what changes)
        await asyncio.sleep(0.05)
    await svc.stop()
    sink.expected += n
    await asyncio.to_thread(sink.read, sink.expected)
    ms = sorted((sink.arrivals[k] - committed[k]) * 1000 for k in committed)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(f"{rate:g} events/s, {n} events: median {statistics.median(ms):.1f} ms, "
          f"p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")  # fmt: skip
    return statistics.median(ms), p99


async def main(rounds: int, events: int, slow: int, fast: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    sink = Sink()
    settings = Settings(data_dir=data, operator=OP, notify_desktop=False, host_id="bench")
    cluster = cluster_for(settings)
    db = await open_database(settings)
    try:
        store = ChannelStore(db, SecretStore.for_settings(settings, db))
        await store.set(OP, "discord", secret=f"http://127.0.0.1:{sink.port}/api/webhooks/1/b")
        ratios = []
        total = 0
        for r in range(rounds):
            ratios.append(await throughput(settings, db, sink, events, r))
            total += events
        sink.expected = total
        await asyncio.to_thread(sink.read, total)
        print(f"throughput ratio (delivered/s ÷ inserts/s): median {statistics.median(ratios):.3f}"
              f" (min {min(ratios):.3f}, max {max(ratios):.3f})")  # fmt: skip
        await delays(settings, db, sink, 1.0, slow, "slow")
        await delays(settings, db, sink, 100.0, fast, "fast")
    finally:
        await db.close()
        sink.stop()
        cluster.destroy()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--events", type=int, default=500)
    p.add_argument("--slow", type=int, default=20, help="events at 1/s")
    p.add_argument("--fast", type=int, default=1000, help="events at 100/s")
    a = p.parse_args()
    asyncio.run(main(a.rounds, a.events, a.slow, a.fast))
