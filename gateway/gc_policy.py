"""The garbage collector's settings for a serving gateway (`yrdx serve`).

CPython collects its youngest generation every 700 net allocations of container objects by default, and what
survives a collection moves on towards the oldest generation, whose full collections walk every object the
process holds. A gateway holding thousands of connections (an overload of single requests: 8,000
client connections in `make bench`'s goal 5) holds hundreds of thousands of such objects: measured there (a
warm-up, then 30 s at twice its capacity), the JS gateway spent 13.5 s in collections (32 full ones of ~330 ms
each, each a stall of the event loop) and accepted 459–564 requests a second instead of its ~1,600. Almost
everything the gateway allocates is freed by reference counting, not by the collector, so collecting the young
generation every 50,000 allocations instead lost nothing measurable (peak RSS 313 against 310 MiB) and the
collections took 2.6 s: 1,370 requests a second accepted under the same overload. What start-up built (modules,
schemas, keys, configuration) is frozen out of the collections once the gateway serves.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # CPython's default is 700; the older generations keep theirs (10, 10)


def tune_collector() -> None:
    """Collect the young generation less often (before start-up)."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)


def freeze_startup() -> None:
    """Move every object start-up made into the permanent generation (once the gateway serves): the full
    collections no longer walk them."""
    gc.freeze()
