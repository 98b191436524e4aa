"""The node's upkeep: the store maintenance kept off the post path, done in bounded slices by one
background task the node starts when it opens and stops when it closes.

Three jobs, at most one slice of one of them per step:
- snapshots: a document with pending local changes is snapshotted when the node has been idle
  for IDLE_AFTER_S; a segment that filled up at the first lull (LULL_S without a write: saving a
  full segment holds the event loop for ~10 ms, which a post arriving meanwhile would wait out);
  a document past the replica's SNAPSHOT_BOUND pending changes at once. Nothing acknowledged
  depends on them: loading replays the change log past the snapshot, so a crash before one loses
  nothing.
- WAL checkpoints: the writer thread never checkpoints on commit; a PASSIVE checkpoint (which
  never blocks a writer) runs from its own thread at a lull, and every CHECKPOINT_EVERY writes
  however busy, so the log is reused rather than grown. Should readers keep it from being copied
  while it passes FORCE_CHECKPOINT_PAGES, a TRUNCATE checkpoint waits for them and empties it.
- search index merges: automatic merging is off (migration 0007); a `merge` writing at most
  MERGE_PAGES pages runs on the writer thread slice after slice at a lull, until there is
  nothing left to merge, and every MERGE_EVERY writes however busy (before FTS5's crisis bound
  of 1,024 segments makes a commit merge them itself). Searches read unmerged segments too.

While posts come back to back, what runs between them costs the next post: a checkpoint shares
the disk with its commit, a merge slice (a commit of its own, ~1 ms) queues before it on the
writer thread. They run at most once every 128 and 512 writes then, under 1% of posts. The
node counts as busy while a write holds the write lock (a bulk post signs for a while before it
writes), not only when a write has just committed.

`step()` is the whole policy and takes its time from the injected clock; `start()` runs it every
TICK_S."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import Connection

from appliance.errors import RallypointError
from appliance.services.replica import ReplicaService
from appliance.store import Checkpoint, Storage

TICK_S = 0.05
IDLE_AFTER_S = 0.3  # no write for this long: the node is idle
LULL_S = 0.05  # no write for this long: a pause between bursts
CHECKPOINT_EVERY = 128  # writes between passive checkpoints while the node is busy (~14 pages a post)
FORCE_CHECKPOINT_PAGES = 16_384  # a log this long (64 MiB of 4 KiB pages) is emptied even if readers wait
MERGE_EVERY = 512  # writes between index merge slices while busy: half the crisis bound (migration 0007)
MERGE_PAGES = 16  # pages one merge slice writes at most: what a post may wait behind

_MERGE = text(f"INSERT INTO messages_fts(messages_fts, rank) VALUES ('merge', {MERGE_PAGES})")
_TOTAL_CHANGES = text("SELECT total_changes()")


def _merge_slice(conn: Connection) -> bool:
    """One bounded merge of the search index; whether it found anything to merge (FTS5 says so
    through the connection's change count: 2 or more rows written)."""
    before: int = conn.execute(_TOTAL_CHANGES).scalar_one()
    conn.execute(_MERGE)
    return bool(conn.execute(_TOTAL_CHANGES).scalar_one() - before >= 2)


class Upkeep:
    def __init__(self, store: Storage, replica: ReplicaService, note_skipped: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        """`note_skipped` hears of a slice that failed (a full disk, say); it is tried again later."""
        self._store = store
        self._replica = replica
        self._note_skipped = note_skipped
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        writes = self._store.writes
        self._seen = writes  # the store's write count when last looked at, the upkeep's own writes included
        self._active_at = clock()  # when a write not the upkeep's own was last seen
        self._checkpointed = writes  # write counts at the last checkpoint, the last merge slice
        self._merged = writes
        self._merging = self._store.is_sqlite  # whether the last merge slice found work (or writes came since)
        # What the upkeep did, for the benchmark and the tests.
        self.snapshots = 0
        self.checkpoints = 0
        self.forced_checkpoints = 0
        self.merges = 0

    async def step(self) -> str | None:
        """Does at most one slice of work and says which ("snapshot", "checkpoint", "merge"),
        None when there was nothing to do."""
        now, writes = self._clock(), self._store.writes
        if writes != self._seen or self._replica.writing():
            self._active_at, self._seen = now, writes
            self._merging = self._store.is_sqlite
        quiet = now - self._active_at
        try:
            return await self._slice(writes, quiet >= IDLE_AFTER_S, quiet >= LULL_S)
        finally:
            self._seen = self._store.writes  # its own writes do not make the node busy

    async def _slice(self, writes: int, idle: bool, lull: bool) -> str | None:
        due = self._replica.snapshots_due() or (self._replica.filled_segments() if lull else []) or (sorted(self._replica.pending_snapshots()) if idle else [])
        if due:
            await self._replica.snapshot(due[0])
            self.snapshots += 1
            return "snapshot"
        if writes - self._checkpointed >= CHECKPOINT_EVERY or (lull and writes != self._checkpointed):
            self._checkpointed = writes
            log, copied = await self._store.checkpoint(Checkpoint.PASSIVE)
            self.checkpoints += 1
            if log >= FORCE_CHECKPOINT_PAGES and copied < log:
                await self._store.checkpoint(Checkpoint.TRUNCATE)
                self.forced_checkpoints += 1
            return "checkpoint"
        if self._merging and (lull or writes - self._merged >= MERGE_EVERY):
            self._merged = writes
            self._merging = await self._store.write(_merge_slice)
            self.merges += 1
            return "merge"
        return None

    def start(self) -> None:
        """Runs the upkeep in the background of the running event loop, until `stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rallypoint-upkeep")

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except RallypointError as exc:  # a full disk, say: the post path says so itself; try again later
                self._note_skipped(f"store upkeep (snapshots, checkpoints, index merges) is waiting: {exc}")
            await asyncio.sleep(TICK_S)

    async def stop(self) -> None:
        """Cancels the background task and waits for it; the caller flushes what is pending."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
