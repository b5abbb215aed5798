"""The collector's settings of a serving gateway (gateway/gc_policy.py): the young generation is collected every
50,000 allocations, the older ones keep theirs, and what start-up made is frozen out of the collections."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from gateway.gc_policy import YOUNG_THRESHOLD, freeze_startup, tune_collector


@pytest.fixture
def collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_the_young_generation_is_collected_less_often_and_the_older_ones_as_before(collector: None) -> None:
    _, older, oldest = gc.get_threshold()
    tune_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, older, oldest) and YOUNG_THRESHOLD > 700


def test_what_start_up_made_is_out_of_the_collections(collector: None) -> None:
    made_at_start = [[i] for i in range(1000)]  # containers the collector tracks
    freeze_startup()
    assert gc.get_freeze_count() >= len(made_at_start)
