"""Work of the training pipeline run at a lower CPU priority than the rest of its process.

A version's precompute (ranking every user, packing and writing the lists) is seconds of CPU on every core it
can get. On a host that also serves, it takes the cores from the web workers, and their p99 grows while a
version is written (docs/PERFORMANCE.md). At a lower priority it yields them whenever both want them and takes
whatever is idle otherwise, so on a host of its own it runs as fast as before.

On Linux the nice value belongs to a thread, and threads inherit it from the thread that starts them: a thread
of its own, lowered once, runs the work (and the ranking threads it starts), while the worker process's other
threads and later tasks (the live refresh, whose freshness must not wait on the web tier) keep their priority.
A thread cannot raise its priority again without privileges, hence a thread rather than lowering the task's own.
Elsewhere the work runs as is.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Run = Callable[..., Any]  # run(fn, *args) -> fn(*args)'s result, its exception raised in the caller


def _lower_own_priority(niceness: int) -> None:
    own = threading.get_native_id()
    os.setpriority(os.PRIO_PROCESS, own, os.getpriority(os.PRIO_PROCESS, own) + niceness)  # the kernel stops at 19


@contextlib.contextmanager
def lowered(niceness: int) -> Iterator[Run]:
    """A runner of calls in one thread whose nice value is ``niceness`` above the caller's (at most 19).

    ``niceness`` 0, or a platform where nice values are not per thread, runs the calls in the caller's thread.
    Leaving the context waits for a call in progress (the caller's own exception, e.g. Celery's soft time
    limit, still ends the work at the next call).
    """
    if niceness == 0 or sys.platform != "linux":
        yield lambda fn, *args: fn(*args)
        return
    with ThreadPoolExecutor(1, "lowered", initializer=_lower_own_priority, initargs=(niceness,)) as pool:
        yield lambda fn, *args: pool.submit(fn, *args).result()
