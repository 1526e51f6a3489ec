"""The precompute runs at a lower CPU priority in a thread of its own; the rest of the worker keeps its priority."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from common.config import Settings
from common.recs_cache import RecsCache
from tasks import pipeline, priority
from testing.factories import random_model

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="nice values are per thread on Linux only")


def own_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def where_it_runs() -> tuple[int, int, int]:
    """(this thread's id, its nice value, the nice value of a thread it starts)."""
    started: list[int] = []
    child = threading.Thread(target=lambda: started.append(own_niceness()))
    child.start()
    child.join()
    return threading.get_native_id(), own_niceness(), started[0]


def in_a_thread(fn):
    """``fn()`` run in a fresh thread (whose nice value a test may raise for good), its result returned."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()))
    thread.start()
    thread.join()
    return result[0]


def test_calls_run_in_one_lowered_thread_and_the_callers_priority_stays():
    def lowered_by_7():
        before = own_niceness()
        with priority.lowered(7) as run:
            first, second = run(where_it_runs), run(where_it_runs)
        return before, first, second, threading.get_native_id(), own_niceness()

    before, first, second, caller, after = in_a_thread(lowered_by_7)
    assert first[0] == second[0] != caller  # one thread of its own for every call
    assert first[1:] == (before + 7, before + 7)  # lowered, and so are the threads it starts (the ranking's)
    assert after == before


def test_the_lowered_niceness_stops_at_19():
    def inner():
        with priority.lowered(15) as run:
            return run(own_niceness)

    def nested():
        with priority.lowered(10) as outer:
            return outer(inner)

    assert in_a_thread(nested) == 19


def test_an_exception_of_the_call_reaches_the_caller():
    with priority.lowered(3) as run, pytest.raises(ZeroDivisionError):
        run(lambda: 1 / 0)


def test_zero_runs_in_the_callers_thread():
    with priority.lowered(0) as run:
        assert run(where_it_runs)[:2] == (threading.get_native_id(), own_niceness())


class RecordingCache(RecsCache):
    """The real cache, recording the thread and nice value each block of lists is written from."""

    writers: list[tuple[int, int]]

    def write_user_lists(self, *args, **kwargs):
        self.writers.append((threading.get_native_id(), own_niceness()))
        return super().write_user_lists(*args, **kwargs)


@pytest.mark.parametrize("niceness", [10, 0])
def test_the_precompute_ranks_and_writes_at_precompute_niceness(cache, niceness):
    recording = RecordingCache(cache.client, cache.prefix)
    recording.writers = []
    model = random_model(num_users=5000, num_items=30, dim=4)
    settings = Settings(top_k=10, publish_write_rate=0, precompute_niceness=niceness)

    def precompute():
        return pipeline.precompute_users(settings, recording, "20261130T000000Z-0000000b", model, 0, 5000)

    caller = in_a_thread(lambda: (threading.get_native_id(), own_niceness(), precompute()))
    assert caller[2] == 5000 and len(recording.writers) == 3  # blocks of 2000
    assert {niceness_of for _, niceness_of in recording.writers} == {caller[1] + niceness}
    assert ({thread for thread, _ in recording.writers} == {caller[0]}) is (niceness == 0)
    assert recording.user_reads("user-4999", list_version="20261130T000000Z-0000000b").list_blob is not None
