"""SQLite WAL checkpoints off the event loop (gateway/state/sweeper.py run_checkpoints, StateStore.checkpoint): a
commit no longer checkpoints at SQLite's default 1,000 pages; the upkeep connection copies the log into the
database file in a worker thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from gateway.state import Decision, StateStore, StateUnavailable
from gateway.state.sweeper import run_checkpoints


def rows_in_the_database_file(path: Path) -> int:
    """The dedupe marks the main file holds, the WAL ignored (immutable: SQLite reads the file alone)."""
    db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'seen'").fetchone() is None:
            return 0  # not even the schema has been checkpointed yet
        return int(db.execute("SELECT count(*) FROM seen").fetchone()[0])
    finally:
        db.close()


def test_commits_leave_the_log_to_the_checkpoint_which_copies_it_into_the_database(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = StateStore(path)
    try:
        for i in range(1500):  # each commit appends pages: past SQLite's default 1,000, far below ours
            store.mark_seen([Decision(f"m{i}", "delivered", f"t:0:{i}")])
        assert rows_in_the_database_file(path) == 0  # no commit checkpointed on its own
        store.checkpoint()
        assert rows_in_the_database_file(path) == 1500
    finally:
        store.close()
    store.checkpoint()  # a closed store: nothing to do, no error


async def test_the_loop_checkpoints_in_a_worker_thread_and_survives_a_failure(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    store = StateStore(path)
    threads: list[str] = []
    real = store.checkpoint

    def checkpoint() -> None:
        threads.append(threading.current_thread().name)
        if len(threads) == 1:
            raise StateUnavailable("locked")
        real()

    store.checkpoint = checkpoint  # type: ignore[method-assign]
    store.mark_seen([Decision("m1", "delivered", "t:0:1")])
    task = asyncio.create_task(run_checkpoints(store, 0.01))
    try:
        for _ in range(300):
            if rows_in_the_database_file(path) == 1:
                break
            await asyncio.sleep(0.01)
        assert not task.done() and len(threads) >= 2
    finally:
        task.cancel()
        store.close()
    assert rows_in_the_database_file(path) == 1
    assert threading.main_thread().name not in threads
