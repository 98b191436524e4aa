"""Worker processes that load, list and read segments carried whole, apply a big import's
changes to segments held here, and make the parts of a compliance export, so an import and an
export use both cores: the Automerge binding holds the GIL, threads would not help.

A small pool (min(2, cpus)) from a "forkserver" context - the node's asyncio process is never
forked - started ahead of an import (`warm`: the LAN service as it starts, a courier import as it
scans the stick; `start_fork_server`: a one-shot CLI import boots the fork server before it
unlocks the node) or on first use. Each worker caps its address space and turns whatever the
binding raises on crafted bytes (including pyo3's PanicException) into a refusal; a worker
that dies (killed, out of memory) is replaced, and the item it held is refused - the node never
dies. Workers return plain picklable values, so the parent never
loads the document itself; they also check each segment against its authors' signatures and
build its rows, so the parent's work per change is one row handed to the database. What a
worker runs is in appliance/whole_reader.py, appliance/held_reader.py and
appliance/export_job.py (which opens the node's database itself, read-only: only its parts'
bytes come back)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from appliance import export_job, held_reader, whole_reader
from appliance.errors import ChangeRejected, MissingDependencies
from appliance.export_encoders import EncodedPart
from appliance.export_job import ExportJob, PartRefused
from appliance.held_reader import HeldApplied, HeldBatch, apply_held
from appliance.whole_reader import LogStamp, WholeAdmitted, WholeChanges, WorkRefused, admit_whole, list_whole, start_worker
from appliance.wholes import MAX_WHOLE_BYTES

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext

_WARM_UP_WAIT_S = 60.0  # a warm-up's submissions wait for no result: only a stuck fork server outlasts this
_PLACED_SLACK = 2  # jobs a segment's own worker may have beyond the least busy one's and still get it
_PLACES_REMEMBERED = 8192  # segments whose worker the pool remembers (the workers keep far fewer loaded)

_Result = TypeVar("_Result", WholeAdmitted, WholeChanges, HeldApplied)


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


class WorkerPool:
    """The node's pool of segment readers. Nothing starts until it is warmed or the first
    segment is read: a node opened for one CLI command that imports nothing pays nothing for it.

    Each worker is an executor of its own, so work on a segment can go back to the worker that
    last had it, which may still hold it loaded (appliance/kept_documents.py): a reaction into a
    segment received moments ago then costs no second load. Work with no segment, or whose
    worker is busier than another by more than _PLACED_SLACK jobs, goes to the least busy."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or min(2, os.cpu_count() or 1)
        self._executors: list[Executor | None] = [None] * self.workers
        self._busy = [0] * self.workers  # jobs submitted and not yet back, per worker
        self._placed: OrderedDict[str, int] = OrderedDict()  # segment -> the worker it last went to
        self._starting = threading.Lock()  # `warm` starts the workers on a thread while a read may start one too
        self._warming = False  # a warm-up is starting the workers on its thread
        self._warmed = threading.Event()  # ... and has started them (or failed to)

    @property
    def started(self) -> bool:
        """Whether every worker's executor exists (its process may still be starting)."""
        return all(executor is not None for executor in self._executors)

    async def warm(self) -> None:
        """Starts the fork server and every worker now, on a thread (0.1-0.3 s that would
        otherwise hold up the first segment read, and the event loop with it); while another
        warm-up runs, waits for it. A failure is left for the first read to report."""
        if not self.started:
            self._warming = True
            self._warmed.clear()
            with contextlib.suppress(ChangeRejected):
                await asyncio.to_thread(self._start_workers)
        else:
            await self._warm_up_done()

    async def _warm_up_done(self) -> None:
        """Waits, off the event loop, for a warm-up under way: a read submitted meanwhile would
        block the loop while the warm-up holds the pool to start its workers."""
        if self._warming:
            await asyncio.to_thread(self._warmed.wait, _WARM_UP_WAIT_S)

    def _start_workers(self) -> None:
        try:
            with _main_module_hidden():  # a submission starts its executor's worker
                started = [self._executor(index).submit(os.getpid) for index in range(self.workers)]
            for future in started:
                with contextlib.suppress(Exception):
                    future.result()
        finally:
            self._warming = False
            self._warmed.set()

    def _executor(self, index: int) -> Executor:
        """Worker `index`'s executor; a fresh one if its worker died while idle (killed, out of
        memory after its last job): nothing of its was running, so the next job need not fail."""
        with self._starting:
            executor = self._executors[index]
            # ProcessPoolExecutor sets _broken (its own, undocumented) once a worker died; read
            # defensively: a Python without it only loses this replacement, not the refusal.
            if executor is not None and getattr(executor, "_broken", False):
                executor.shutdown(wait=False, cancel_futures=True)
                executor = None
            return executor or self._new_executor(index)

    def _new_executor(self, index: int) -> Executor:
        from concurrent.futures import ProcessPoolExecutor

        context = _fork_server()
        try:
            with _stderr_with_a_descriptor(), _main_module_hidden():
                executor = ProcessPoolExecutor(1, mp_context=context, initializer=start_worker, initargs=(os.getpid(),))
        except (OSError, ValueError) as exc:
            raise ChangeRejected(f"cannot start the processes that read segments carried whole: {exc}") from exc
        self._executors[index] = executor
        return executor

    def _choose(self, segment: str | None) -> int:
        """The worker for a job: the one `segment` last went to, unless it is busier than the
        least busy by more than _PLACED_SLACK; else the least busy. Remembers the choice."""
        least = min(range(self.workers), key=self._busy.__getitem__)
        if segment is None:
            return least
        placed = self._placed.pop(segment, None)
        index = placed if placed is not None and self._busy[placed] - self._busy[least] <= _PLACED_SLACK else least
        self._placed[segment] = index
        if len(self._placed) > _PLACES_REMEMBERED:
            self._placed.popitem(last=False)
        return index

    async def admit(self, doc_id: str, data: bytes, signatures: Mapping[bytes, bytes], admins: frozenset[str], stamp: LogStamp) -> WholeAdmitted:
        """One segment read and checked against its authors' signatures in a worker
        (whole_reader.admit_whole); ChangeRejected when it cannot be read or admitted."""
        _check_size(doc_id, data)
        return await self._run(doc_id, WholeAdmitted, admit_whole, doc_id, data, signatures, admins, stamp)

    async def apply_held(self, batch: HeldBatch) -> HeldApplied:
        """One segment's incoming changes verified and applied in a worker
        (held_reader.apply_held); MissingDependencies when they build on changes the node lacks,
        ChangeRejected when they are refused. The segment as stored is the node's own: only the
        worker's memory cap bounds it."""
        return await self._run(batch.doc_id, HeldApplied, apply_held, batch)

    async def list_all(self, items: Sequence[tuple[str, bytes]]) -> list[WholeChanges]:
        """(doc id, data) items listed concurrently, every change with its bytes; the first
        refusal raises once every item is done (nothing is left running behind the caller)."""
        for doc_id, data in items:
            _check_size(doc_id, data)
        results = await asyncio.gather(*(self._run(doc_id, WholeChanges, list_whole, doc_id, data) for doc_id, data in items), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, WholeChanges)]

    async def export_part(self, job: ExportJob) -> EncodedPart:
        """One part of a compliance export read, built and encoded in a worker
        (export_job.run_job) - on a thread of this process for a store no other process reaches
        (in memory) -; ChangeRejected when it could not be made or the worker died."""
        label = f"a part of the export of #{job.channel.name}"
        if job.access.in_process_only:
            result: object = await asyncio.to_thread(export_job.run_job, job)
        else:
            result = await self._submit(label, export_job.run_job, job)
        if isinstance(result, PartRefused):
            raise ChangeRejected(result.reason)
        if not isinstance(result, EncodedPart):
            raise ChangeRejected(f"{label}: the worker returned {type(result).__name__}")
        return result

    async def _run(self, doc_id: str, expected: type[_Result], work: Callable[..., _Result | WorkRefused], *args: Any) -> _Result:
        """`work(*args)` on one segment in a worker (the one that last had it, if not too busy);
        ChangeRejected when the worker refuses it (MissingDependencies: it lacks earlier
        changes) or died."""
        result = await self._submit(doc_id, work, *args, segment=doc_id)
        if isinstance(result, WorkRefused):
            raise (MissingDependencies if result.missing else ChangeRejected)(result.reason)
        if not isinstance(result, expected):
            raise ChangeRejected(f"{doc_id}: the worker returned {type(result).__name__}, not {expected.__name__}")
        return result

    async def _submit(self, label: str, work: Callable[..., object], *args: Any, segment: str | None = None) -> object:
        """`work(*args)` in a worker (see `_choose`); ChangeRejected naming `label` when the
        worker died. A job cancelled after it reached its worker (an import or export that
        failed elsewhere) leaves that worker in a state nobody waits for - still busy, or about
        to die of what it was given, which its executor learns only later: the next job goes to
        a fresh one instead."""
        from concurrent.futures.process import BrokenProcessPool

        await self._warm_up_done()
        index = self._choose(segment)
        executor = self._executor(index)
        self._busy[index] += 1
        try:
            with _main_module_hidden():  # the worker is started by this submission, if it is not running
                submitted = executor.submit(work, *args)
            return await asyncio.wrap_future(submitted)
        except BrokenProcessPool as exc:
            self._discard(index, executor)
            raise ChangeRejected(f"{label}: the worker reading it died ({exc})") from exc
        except asyncio.CancelledError:
            if not submitted.cancelled():  # it was already handed to the worker
                self._discard(index, executor)
            raise
        finally:
            self._busy[index] -= 1

    def _discard(self, index: int, executor: Executor) -> None:
        """A broken worker's executor is shut down and forgotten; its next job starts a fresh one."""
        if self._executors[index] is executor:
            self._executors[index] = None
        executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        for index, executor in enumerate(self._executors):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
                self._executors[index] = None


def start_fork_server(*, for_export: bool = False) -> None:
    """Starts the process the workers fork from, and returns at once: it loads the Automerge
    binding and the readers (~0.1 s of its own) while the caller goes on - a one-shot command
    that is about to import calls this before it unlocks the node, so the workers fork at once
    when the import starts them. `for_export`: a compliance export is coming, and the server
    loads what its parts are made with too (SQLAlchemy and the store's driver: ~0.25 s more,
    which an import would wait for; without it each worker loads them at its first part).
    Nothing else starts; a failure is left for the pool to report."""
    with contextlib.suppress(ChangeRejected):
        _fork_server(for_export)


def _fork_server(for_export: bool = False) -> ForkServerContext:
    """The forkserver context, its server and resource tracker running (each started once per
    process, while stderr has a descriptor to hand them)."""
    # Imported here: multiprocessing is not loaded by a node that never reads a whole.
    import multiprocessing
    from multiprocessing import forkserver, resource_tracker

    context = multiprocessing.get_context("forkserver")
    # A worker runs concurrent.futures' worker loop: loaded in the server, each worker starts
    # without importing it (~10 ms of the first job's wait).
    preload = ["concurrent.futures.process", whole_reader.__name__, held_reader.__name__] + ([export_job.__name__] if for_export else [])
    context.set_forkserver_preload(preload)  # each worker forks with these loaded (where the server starts now)
    try:
        with _stderr_with_a_descriptor(), _main_module_hidden():
            resource_tracker.ensure_running()
            forkserver.ensure_running()
    except (OSError, ValueError) as exc:
        raise ChangeRejected(f"cannot start the processes that read segments carried whole: {exc}") from exc
    return context


async def settle(readings: Sequence[asyncio.Future[Any]]) -> None:
    """Cancels the readings still running and waits for them all: nothing runs on behind an
    import that ended early."""
    for reading in readings:
        reading.cancel()
    await asyncio.gather(*readings, return_exceptions=True)


def _check_size(doc_id: str, data: bytes) -> None:
    if len(data) > MAX_WHOLE_BYTES:
        raise ChangeRejected(f"{doc_id}: a segment carried whole is {len(data):,} bytes, over the limit of {MAX_WHOLE_BYTES:,}")
