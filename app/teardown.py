"""Emptying a web worker's large memories without a pause: the entries are freed a little at a time.

At a model swap a worker drops what belonged to the replaced version: up to a thousand kept feeds (their
rankings and rendered entries) and ten thousand memoised lists. Cleared in one call, they are freed in one go
while the call holds the GIL, and every request of the worker waits for it: tens of milliseconds with full
memories at 100,000 users (the commit that added this module gives the ad hoc measurement), once per worker
and published version. Handed to :func:`release_gradually` instead, they are freed by a background
thread in slices of :data:`SLICE_SECONDS`, each followed by a pause in which the requests run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import MutableMapping
from typing import Any

SLICE_SECONDS = 0.0005  # freeing at most this long at a time ...
PAUSE_SECONDS = 0.001  # ... then letting the requests have the GIL for this long


def release_gradually(entries: MutableMapping[Any, Any]) -> None:
    """Free ``entries`` (a mapping nothing else refers to any more) in a background thread, a slice at a time."""
    if entries:
        threading.Thread(target=_drain, args=(entries,), name="release", daemon=True).start()


def _drain(entries: MutableMapping[Any, Any]) -> None:
    while entries:
        stop = time.perf_counter() + SLICE_SECONDS
        while entries and time.perf_counter() < stop:
            entries.popitem()
        time.sleep(PAUSE_SECONDS)
