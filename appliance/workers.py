"""Worker processes that load, list and read segments carried whole, so an import uses both
cores: the Automerge binding holds the GIL, threads would not help.

A small pool (min(2, cpus)) started on first use from a "forkserver" context - the node's
asyncio process is never forked. Each worker caps its address space and turns whatever the
binding raises on crafted bytes (including pyo3's PanicException) into a refusal; a worker
that dies (killed, out of memory) breaks the pool, which is then rebuilt, and the item it held
is refused - the node never dies. Workers return plain picklable values, so the parent never
loads the document itself."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TextIO

from automerge._automerge import Document

from appliance import documents, ids, segments
from appliance.changes import ChangeHeader
from appliance.errors import ChangeRejected
from appliance.view_rows import view_row
from appliance.wholes import MAX_WHOLE_BYTES

WORKER_MEMORY_BYTES = 1024 * 1024 * 1024  # address space of one worker: a 2 MiB segment needs far less


@dataclass(frozen=True)
class WholeReading:
    """What a worker found in a segment carried whole: every change's header (in the
    document's causal order), its messages read with the admins it was given and - when the
    node already holds part of the document - every change's bytes, to import as chunks."""

    doc_id: str
    # Plain tuples, not dataclasses: they cross the process boundary about six times faster.
    changes: tuple[tuple[bytes, bytes, int, tuple[bytes, ...]], ...]  # hash, actor, seq, deps
    messages: tuple[tuple[Any, ...], ...]  # message view rows, values in VIEW_COLUMNS order
    raw_changes: tuple[bytes, ...]

    def headers(self) -> list[ChangeHeader]:
        return [ChangeHeader(*change) for change in self.changes]


@dataclass(frozen=True)
class WholeRefused:
    """A segment a worker could not read, and why."""

    doc_id: str
    reason: str


def read_whole(doc_id: str, data: bytes, admins: frozenset[str], as_changes: bool) -> WholeReading | WholeRefused:
    """In a worker: loads `data` and lists its changes; reads its messages, or (`as_changes`)
    keeps every change's bytes instead."""
    try:
        with documents.binding_errors(f"{doc_id}: cannot load the segment"):
            doc = Document.load(data)
            changes = doc.get_changes([])
            headers = tuple((c.hash, c.actor_id, c.seq, tuple(c.deps)) for c in changes)
            raw = tuple(c.raw_bytes for c in changes) if as_changes else ()
            states = () if as_changes else segments.read_messages(doc, admins)
            channel_id = documents.parse_doc_id(doc_id).channel_id
            messages = tuple(view_row(channel_id, doc_id, state) for state in states if ids.is_message_id(state.message_id))
    except documents.DocumentError as exc:
        return WholeRefused(doc_id, str(exc))
    except MemoryError:
        return WholeRefused(doc_id, f"{doc_id}: the segment needs more than {WORKER_MEMORY_BYTES:,} bytes of memory to load")
    return WholeReading(doc_id, headers, messages, raw)


def _start_worker(node_pid: int) -> None:
    """A worker's initialiser: caps its memory, so a crafted segment that balloons on load
    fails with MemoryError here rather than taking the machine's; and ends it when the node's
    process ends. A worker keeps the fork server alive and waits on a queue it holds both ends
    of: after a kill -9 of the node nothing else would end either."""
    import resource
    import select
    import threading
    import time

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = WORKER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(WORKER_MEMORY_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        node: int | None = os.pidfd_open(node_pid)
    except ProcessLookupError:
        os._exit(0)
    except OSError:  # a kernel before 5.3: ask every second instead
        node = None

    def end_with_the_node() -> None:
        if node is not None:
            select.select([node], [], [])  # readable once the node's process has ended
        else:
            while _alive(node_pid):
                time.sleep(1)
        os._exit(0)

    threading.Thread(target=end_with_the_node, name="end-with-the-node", daemon=True).start()


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """A worker needs nothing of the program that opened the node, but multiprocessing imports
    that program's main module in each worker it starts (0.2-0.4 s for the CLI; a script
    without an `if __name__ == "__main__"` guard would even run again). Workers start inside
    the submission, on this thread: for that while the main module names no file to import."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    spec, path = getattr(main, "__spec__", None), main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = spec
        if path is not None:
            main.__file__ = path


@contextlib.contextmanager
def _stderr_with_a_descriptor() -> Iterator[None]:
    """multiprocessing hands its helper processes stderr's file descriptor. A console that
    captures output (Textual) leaves sys.stderr without one (fileno -1): lend them the
    process's own stderr, or /dev/null, for the while."""
    try:
        usable = sys.stderr is not None and sys.stderr.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        usable = False
    if usable:
        yield
        return
    saved = sys.stderr
    with open(os.devnull, "w") as devnull:
        sys.stderr = sys.__stderr__ if sys.__stderr__ is not None and _has_descriptor(sys.__stderr__) else devnull
        try:
            yield
        finally:
            sys.stderr = saved


def _has_descriptor(stream: TextIO) -> bool:
    try:
        return stream.fileno() >= 0
    except (AttributeError, OSError, ValueError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class WorkerPool:
    """The node's pool of segment readers. Nothing starts until the first segment is read: a
    node opened for one CLI command that imports no whole segment pays nothing for it."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or min(2, os.cpu_count() or 1)
        self._executor: Executor | None = None

    def _pool(self) -> Executor:
        if self._executor is None:
            # Imported here: multiprocessing is not loaded by a node that never reads a whole.
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import forkserver, resource_tracker

            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])  # each worker forks with the binding already loaded
            try:
                with _stderr_with_a_descriptor(), _main_module_hidden():
                    # Both helper processes start now, while stderr has a descriptor to hand them.
                    resource_tracker.ensure_running()
                    forkserver.ensure_running()
                    self._executor = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(),))
            except (OSError, ValueError) as exc:
                raise ChangeRejected(f"cannot start the processes that read segments carried whole: {exc}") from exc
        return self._executor

    async def read(self, doc_id: str, data: bytes, admins: frozenset[str], *, as_changes: bool = False) -> WholeReading:
        """One segment read in a worker; ChangeRejected when it cannot be read (too large,
        refused by the binding, or the worker died)."""
        from concurrent.futures.process import BrokenProcessPool

        if len(data) > MAX_WHOLE_BYTES:
            raise ChangeRejected(f"{doc_id}: a segment carried whole is {len(data):,} bytes, over the limit of {MAX_WHOLE_BYTES:,}")
        pool = self._pool()
        try:
            with _main_module_hidden():  # a worker is started by this submission, if one is needed
                reading = asyncio.get_running_loop().run_in_executor(pool, read_whole, doc_id, data, admins, as_changes)
            result = await reading
        except BrokenProcessPool as exc:
            self._discard(pool)
            raise ChangeRejected(f"{doc_id}: the worker reading it died ({exc})") from exc
        if isinstance(result, WholeRefused):
            raise ChangeRejected(result.reason)
        return result

    async def read_all(self, items: Sequence[tuple[str, bytes, bool]], admins: frozenset[str]) -> list[WholeReading]:
        """(doc id, data, as_changes) items read concurrently; the first refusal raises once
        every item is done (nothing is left running behind the caller)."""
        results = await asyncio.gather(*(self.read(doc_id, data, admins, as_changes=as_changes) for doc_id, data, as_changes in items), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, WholeReading)]

    def _discard(self, pool: Executor) -> None:
        """A broken pool is shut down and forgotten; the next read starts a fresh one."""
        if self._executor is pool:
            self._executor = None
        pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
