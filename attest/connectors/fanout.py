"""Fan-out: the one place that owns a connector's concurrency.

A connector describes *what* to read as `Task`s; `fan_out` decides *how*: a bounded pool of worker threads
(the connector's `concurrency` setting) runs each task's `fetch` (HTTP or SDK calls only), and the caller's
thread hands the result to the task's `then`, which yields records and further tasks ("members of group X"
once "groups" is read). Keeping `then` on one thread lets a connector keep its bookkeeping (what is still
open, what was already emitted) in plain local variables, without locks.

- Order: `ordered=False` hands results over as tasks finish (the fastest order); `ordered=True` in the
  order the tasks were submitted (a task yielded by `then` joins the queue at that point), so the output
  is the same run after run whatever the upstream's latency.
- Bounded: at most `workers` fetches run at once and at most `window` (2 x workers) unfinished ones are
  handed to the pool; the rest wait in a queue, so a million small tasks cost a million small tuples, not
  futures. (`ordered`: finished results wait for the slower ones before them, while the pool goes on.)
- Errors: a task's `on_error` turns its failure into records (a `PartFailed` for that part: the rest of
  the source still syncs) or re-raises it. Any other error (a fetch without `on_error`, or a `then` that
  raises) stops the fan-out: tasks not started are dropped, `halted` is set so fetches that watch it give
  up early, the running ones are waited for (no thread outlives the call) and the error propagates, the
  first one to happen (`ordered=False`) or the first in submission order (`ordered=True`).
- Cancellation: closing the generator (the consumer stopped reading) or setting `stop` from outside ends
  the fan-out the same way; an outside `stop` raises `Cancelled`, so a partial read is never mistaken for
  a whole one. The fan-out only reads `stop` (the caller may use the same event for its own hand-over);
  it signals its own end through `halted`.

`read_ahead` runs a whole reading (a fan-out, say) on one producer thread ahead of its consumer: the
connector's `sync()` keeps requesting while the sync engine stages what was already read.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

__all__ = ["Cancelled", "FanOutStats", "Task", "fan_out", "read_ahead"]


class Cancelled(Exception):
    """The fan-out was stopped from outside (`stop` set) before every task was read."""


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of reading.

    `key` names it (in errors and for the connector's own bookkeeping); `fetch()` runs on a worker and
    does I/O only; `then(result)` runs on the caller's thread and yields records and further Tasks (no
    `then`: fetch's result itself is that iterable); `on_error(exc)`, when given, yields what a failure of
    this task means (e.g. PartFailed) instead of stopping the run, or re-raises."""

    key: Hashable
    fetch: Callable[[], Any]
    then: Callable[[Any], Iterable[Any]] | None = None
    on_error: Callable[[BaseException], Iterable[Any]] | None = None


@dataclass
class FanOutStats:
    """What a fan-out did (for tests and benchmarks): tasks run, the most fetches that ran at once."""

    tasks: int = 0
    max_running: int = 0
    running: int = 0


def fan_out(tasks: Iterable[Task], *, workers: int, ordered: bool = False, stop: threading.Event | None = None,
            halted: threading.Event | None = None, window: int | None = None, name: str = "fanout",
            stats: FanOutStats | None = None) -> Iterator[Any]:
    """Run `tasks` (and every task their `then` yields) on at most `workers` threads; yield the records.

    See the module docstring for order, errors and cancellation."""
    workers = max(1, int(workers))
    window = max(workers, window or workers * 2)
    stop = stop if stop is not None else threading.Event()
    halted = halted if halted is not None else threading.Event()
    stats = stats if stats is not None else FanOutStats()
    lock = threading.Lock()
    backlog: deque[Task] = deque(tasks)
    pending: deque[tuple[Task, Future]] = deque()  # submitted, not yet handed over (submission order)
    inflight: set[Future] = set()  # submitted, not finished: at most `window`
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    def run(task: Task) -> Any:
        if stop.is_set() or halted.is_set():
            raise Cancelled(f"{name}: stopped before {task.key!r} was read")
        with lock:
            stats.tasks += 1
            stats.running += 1
            stats.max_running = max(stats.max_running, stats.running)
        try:
            return task.fetch()
        finally:
            with lock:
                stats.running -= 1

    def pump() -> None:
        """Hand queued tasks to the pool while fewer than `window` of its futures are unfinished."""
        nonlocal inflight
        inflight = {f for f in inflight if not f.done()}
        while backlog and len(inflight) < window:
            task = backlog.popleft()
            future = pool.submit(run, task)
            pending.append((task, future))
            inflight.add(future)

    def outcome(task: Task, future: Future) -> Iterable[Any]:
        exc = future.exception()
        if exc is not None:
            if task.on_error is None or isinstance(exc, Cancelled):
                raise exc
            return task.on_error(exc)
        result = future.result()
        return task.then(result) if task.then is not None else (result if result is not None else ())

    def finished() -> list[tuple[Task, Future]]:
        """The tasks to hand over now: every finished one (`ordered`: the finished ones at the head of the
        submission order). Waits for one, refilling the pool meanwhile, so a slow task at the head of an
        ordered fan-out never leaves workers idle."""
        while True:
            if stop.is_set():
                raise Cancelled(f"{name}: stopped")
            if ordered:
                out = []
                while pending and pending[0][1].done():
                    out.append(pending.popleft())
            else:
                out = [(t, f) for t, f in pending if f.done()]
                for item in out:
                    pending.remove(item)
            if out:
                return out
            wait(inflight, timeout=0.5, return_when=FIRST_COMPLETED)
            pump()

    completed = False
    try:
        pump()
        while pending:
            if stop.is_set():
                raise Cancelled(f"{name}: stopped")
            for task, future in finished():
                for item in outcome(task, future):
                    if isinstance(item, Task):
                        backlog.append(item)
                    else:
                        yield item
                pump()
        completed = True
    finally:
        if not completed:
            halted.set()  # fetches that watch it stop early; tasks not started yet never start
        backlog.clear()
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def read_ahead(produce: Callable[[threading.Event], Iterable[Any]], *, batch: int = 2000, depth: int = 32,
               name: str = "read-ahead", join_timeout: float = 60.0) -> Iterator[Any]:
    """Run `produce(stop)` on its own thread and yield its items, handed over in batches through a bounded
    queue (`depth` batches of `batch` items), so requests keep flowing while the caller stages records
    into the database. The producer's error is raised here, after the items before it; when the caller
    stops reading (closes this generator), `stop` is set and the producer is joined."""
    batches: queue.Queue[list[Any] | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: list[Any] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                batches.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def producer() -> None:
        chunk: list[Any] = []
        try:
            for item in produce(stop):
                chunk.append(item)
                if len(chunk) >= batch:
                    if not put(chunk):
                        return
                    chunk = []
            put(chunk)
            put(None)
        except BaseException as exc:  # handed to the consumer, which raises it
            put(exc)

    thread = threading.Thread(target=producer, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = batches.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item
    finally:
        stop.set()
        thread.join(timeout=join_timeout)
