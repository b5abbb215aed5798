"""The state's upkeep in the background, in a worker thread so that the event loop serves meanwhile: the
retention sweep (README "Retention of the state"), StateStore.sweep every `state.retention.sweep_interval_s`, and
the database log's checkpoints, StateStore.checkpoint every CHECKPOINT_INTERVAL_S (on SQLite a commit that had to
checkpoint stalled the loop for up to ~200 ms). Upkeep: an error is logged and counted, and the next round tries
again; it never stops the gateway or fails its health checks."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.metrics import Metrics
from gateway.state.store import StateStore

log = logging.getLogger(__name__)

# Often enough that the WAL stays a few MiB at thousands of transactions a second, so each checkpoint is short.
CHECKPOINT_INTERVAL_S = 0.5


async def sweep_once(store: StateStore, metrics: Metrics) -> dict[str, int] | None:
    """One sweep: the rows deleted per table (those with any), or None when it failed."""
    try:
        counts = await asyncio.to_thread(store.sweep, time.time())
    except Exception as e:  # any error: a bug must not end the retention of personal data for good either
        metrics.state_sweep_failures.inc()
        log.error("state sweep failed; tried again at the next round", extra={"error": f"{type(e).__name__}: {e}"})
        return None
    deleted = {table: n for table, n in counts.items() if n}
    for table, n in deleted.items():
        metrics.state_swept.labels(table).inc(n)
    if deleted:
        log.info("state rows past their retention deleted", extra={"deleted": deleted})
    return deleted


async def run_sweeper(store: StateStore, interval_s: float, metrics: Metrics) -> None:
    while True:
        await sweep_once(store, metrics)
        await asyncio.sleep(interval_s)


async def run_checkpoints(store: StateStore, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(store.checkpoint)
        except Exception as e:  # noqa: BLE001 (the next round tries again; a commit checkpoints past the limit)
            log.warning("state checkpoint failed; tried again at the next round",
                        extra={"error": f"{type(e).__name__}: {e}"})
