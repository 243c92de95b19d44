"""Fixtures every test folder may use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings
from twisted.logger import globalLogPublisher

# A test's outcome never depends on how fast a shared machine runs it: no per-example deadline
# (hypothesis's default of 200 ms failed property tests on a loaded 2-core CI machine).
settings.register_profile("perund", deadline=None)
settings.load_profile("perund")


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Every twisted.logger event emitted during the test."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)
