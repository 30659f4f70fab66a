"""Shared pytest set-up for the whole suite: hypothesis profiles and a heap factory.

Hypothesis runs derandomized by default (the same examples every run, so CI is
reproducible); HYPOTHESIS_PROFILE=explore searches with fresh randomness.
Deadlines are off: timing never decides a test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", deadline=None, print_blob=True, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def make_heap() -> Iterator[Callable[..., Any]]:
    """Factory for allocator.Heap objects that are closed at teardown."""
    from allocator import Heap

    heaps: list[Heap] = []

    def make(**kwargs: Any) -> Heap:
        heap = Heap(**kwargs)
        heaps.append(heap)
        return heap

    yield make
    for heap in heaps:
        heap.close()
