"""The shared fan-out engine (attest/connectors/fanout.py): bounded workers, order, errors, cancellation.

No sleeps: tasks are held back and released with threading.Events, and every wait has a timeout so a
broken engine fails the test instead of hanging it."""

from __future__ import annotations

import threading

import pytest

from attest.connectors.base import Note, PartFailed
from attest.connectors.fanout import Cancelled, FanOutStats, Task, fan_out, read_ahead

TIMEOUT = 10


def threads(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(name)]


def test_tasks_yield_records_and_further_tasks():
    """"groups" yields a task per group; each group's members come out after it, in submission order."""
    directory = {"admins": ["ann", "bob"], "devs": ["cid"], "empty": []}

    def members(group):
        return Task(("members", group), lambda: list(directory[group]),
                    then=lambda ids: [f"{group}:{uid}" for uid in ids])

    def groups_read(names):
        for name in names:
            yield f"group {name}"
            yield members(name)

    out = list(fan_out([Task("groups", lambda: sorted(directory), then=groups_read),
                        Task("note", lambda: [Note("read")])], workers=3, ordered=True, name="t-spawn"))
    assert out == ["group admins", "group devs", "group empty", Note("read"), "admins:ann", "admins:bob", "devs:cid"]
    assert threads("t-spawn") == []


def _two_tasks_second_finishes_first():
    second_done = threading.Event()

    def first():
        assert second_done.wait(TIMEOUT), "the second task never ran alongside the first"
        return ["first"]

    def second():
        second_done.set()
        return ["second"]

    return [Task("first", first), Task("second", second)]


def test_ordered_output_follows_submission_not_finishing_order():
    assert list(fan_out(_two_tasks_second_finishes_first(), workers=2, ordered=True)) == ["first", "second"]


def test_unordered_output_comes_as_tasks_finish():
    second_handed_over = threading.Event()

    def first():
        assert second_handed_over.wait(TIMEOUT), "the second task's result was not handed over before the first's"
        return ["first"]

    def second_then(result):
        second_handed_over.set()
        return result

    tasks = [Task("first", first), Task("second", lambda: ["second"], then=second_then)]
    assert list(fan_out(tasks, workers=2)) == ["second", "first"]


@pytest.mark.parametrize("ordered", [False, True])
def test_no_more_fetches_run_at_once_than_workers(ordered):
    running, peak, lock = 0, 0, threading.Lock()
    ran_on: set[str] = set()
    full = threading.Event()  # set once `workers` fetches run at the same time

    def fetch(i):
        nonlocal running, peak
        with lock:
            ran_on.add(threading.current_thread().name)
            running += 1
            peak = max(peak, running)
            if running == 3:
                full.set()
        full.wait(TIMEOUT)  # the first three meet here: the pool really runs three at once
        with lock:
            running -= 1
        return [i]

    stats = FanOutStats()
    out = list(fan_out([Task(i, lambda i=i: fetch(i)) for i in range(40)], workers=3, ordered=ordered, stats=stats))
    assert sorted(out) == list(range(40))
    assert peak == 3 and stats.max_running == 3 and stats.tasks == 40
    assert len(ran_on) == 3  # three worker threads, no more
    if ordered:
        assert out == list(range(40))


def test_first_error_propagates_and_nothing_more_starts():
    started = []
    stop = threading.Event()

    def fetch(i):
        started.append(i)
        if i == 0:
            raise RuntimeError("HTTP 500 on task 0")
        assert stop.wait(TIMEOUT), "the fan-out did not tell running fetches to stop"
        return [i]

    def tasks():
        for i in range(100):
            yield Task(i, lambda i=i: fetch(i))

    with pytest.raises(RuntimeError, match="HTTP 500 on task 0"):
        list(fan_out(tasks(), workers=2, halted=stop, name="t-error"))
    assert len(started) <= 4  # the running ones and the window's queued ones, never the backlog
    assert threads("t-error") == []


def test_ordered_error_is_the_first_in_submission_order():
    later_failed = threading.Event()

    def first():
        assert later_failed.wait(TIMEOUT)
        raise ValueError("the first task's error")

    def second():
        later_failed.set()
        raise KeyError("the second task's error")

    with pytest.raises(ValueError, match="the first task's error"):
        list(fan_out([Task(1, first), Task(2, second)], workers=2, ordered=True))


def test_on_error_turns_a_failed_part_into_records_and_the_rest_syncs():
    def account(n):
        if n == "222":
            raise PermissionError("AccessDenied on sts:AssumeRole")
        return [f"account {n}"]

    tasks = [Task(n, lambda n=n: account(n), on_error=lambda exc, n=n: [PartFailed(f"aws:{n}", str(exc))])
             for n in ("111", "222", "333")]
    out = list(fan_out(tasks, workers=2, ordered=True))
    assert out == ["account 111", PartFailed("aws:222", "AccessDenied on sts:AssumeRole"), "account 333"]


def test_on_error_may_reraise_what_is_not_a_part_failure():
    def boom():
        raise LookupError("401: bad token")

    def only_permission_errors(exc):
        if not isinstance(exc, PermissionError):
            raise exc
        return [PartFailed("p", str(exc))]

    with pytest.raises(LookupError, match="bad token"):
        list(fan_out([Task("x", boom, on_error=only_permission_errors)], workers=2))


def test_an_error_in_then_stops_the_fan_out_without_leaking_threads():
    gate = threading.Event()

    def slow():
        gate.wait(TIMEOUT)
        return []

    def bad(_result):
        gate.set()
        raise TypeError("odd payload")

    with pytest.raises(TypeError, match="odd payload"):
        list(fan_out([Task("bad", lambda: 1, then=bad), Task("slow", slow)], workers=2, ordered=True,
                     name="t-then"))
    assert threads("t-then") == []


def test_closing_the_generator_stops_running_fetches_and_starts_no_more():
    stop = threading.Event()
    started = []

    def fetch(i):
        started.append(i)
        if i > 0:
            assert stop.wait(TIMEOUT), "the fan-out did not tell running fetches to stop"
        return [i]

    gen = fan_out([Task(i, lambda i=i: fetch(i)) for i in range(50)], workers=2, ordered=True, halted=stop,
                  name="t-close")
    assert next(gen) == 0
    gen.close()
    assert stop.is_set()
    assert threads("t-close") == []
    assert len(started) <= 5


def test_an_outside_stop_raises_cancelled_instead_of_a_partial_result():
    stop = threading.Event()
    release = threading.Event()

    def first():
        stop.set()  # the consumer went away while this was read
        return ["first"]

    def blocked():
        release.wait(TIMEOUT)
        return ["late"]

    out = []
    with pytest.raises(Cancelled):
        try:
            for item in fan_out([Task(1, first), Task(2, blocked)], workers=2, stop=stop, name="t-stop"):
                out.append(item)
        finally:
            release.set()
    assert "late" not in out
    assert threads("t-stop") == []


def test_an_error_does_not_set_the_callers_stop():
    """The caller may use `stop` for its own hand-over (Okta's reader thread puts the error in a queue
    while `stop` is clear): the fan-out reads it and never sets it."""
    stop, halted = threading.Event(), threading.Event()

    def boom():
        raise RuntimeError("HTTP 500")

    with pytest.raises(RuntimeError):
        list(fan_out([Task("x", boom)], workers=2, stop=stop, halted=halted))
    assert halted.is_set() and not stop.is_set()


def test_a_slow_task_at_the_head_of_an_ordered_fan_out_does_not_hold_the_others_back():
    """Ordered output waits for the head, but the pool goes on reading what follows it meanwhile."""
    others, lock, all_others_read = 0, threading.Lock(), threading.Event()

    def head():
        assert all_others_read.wait(TIMEOUT), "the tasks after a slow head were not read while it ran"
        return ["head"]

    def other(i):
        nonlocal others
        with lock:
            others += 1
            if others == 20:
                all_others_read.set()
        return [i]

    tasks = [Task("head", head)] + [Task(i, lambda i=i: other(i)) for i in range(20)]
    assert list(fan_out(tasks, workers=2, ordered=True)) == ["head", *range(20)]


def test_read_ahead_reads_before_the_consumer_asks_and_keeps_the_order():
    produced, ahead = [], threading.Event()

    def produce(stop):
        for i in range(10):
            produced.append(i)
            if i == 7:
                ahead.set()
            yield i

    gen = read_ahead(produce, batch=2, depth=4, name="t-ahead")
    assert next(gen) == 0
    assert ahead.wait(TIMEOUT), "the producer did not read ahead of the consumer"
    assert list(gen) == list(range(1, 10))
    assert threads("t-ahead") == []


def test_read_ahead_raises_the_producers_error_after_what_came_before():
    def produce(stop):
        yield from range(5)
        raise RuntimeError("HTTP 500 on the last page")

    out = []
    with pytest.raises(RuntimeError, match="HTTP 500"):
        for item in read_ahead(produce, batch=2):
            out.append(item)
    assert out == [0, 1, 2, 3]  # the half-filled batch before the error is not handed over, as before


def test_closing_read_ahead_stops_the_producer():
    def produce(stop):
        i = 0
        while not stop.is_set():
            yield i
            i += 1

    gen = read_ahead(produce, batch=3, depth=2, name="t-ahead-close")
    assert [next(gen) for _ in range(5)] == [0, 1, 2, 3, 4]
    gen.close()
    assert threads("t-ahead-close") == []
