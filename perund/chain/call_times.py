"""How long the chain node takes to answer: every JSON-RPC exchange's seconds, for the
`perund_chain_call_seconds` histogram and for the node's estimate of how long answering a
dispute takes now (`perund.challenge_watch`).

The exchanges run on the chain pool's threads, so the record is kept under a lock.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Final

from perund.metrics import CALL_BOUNDS, Histogram

RECENT_CALLS: Final = 64
"""How many of the latest exchanges `recent_p90` looks at."""


class ChainCallTimes:
    """The seconds of the chain client's JSON-RPC exchanges, answered or failed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._all = Histogram(CALL_BOUNDS)
        self._recent: deque[float] = deque(maxlen=RECENT_CALLS)

    def add(self, seconds: float) -> None:
        """Count one exchange (any thread)."""
        with self._lock:
            self._all.add(seconds)
            self._recent.append(seconds)

    def histogram(self) -> Histogram:
        """Every exchange so far, as a copy."""
        copy = Histogram(CALL_BOUNDS)
        with self._lock:
            copy.merge(self._all)
        return copy

    def recent_p90(self) -> float | None:
        """The 90th percentile of the latest `RECENT_CALLS` exchanges; None before any."""
        with self._lock:
            recent = sorted(self._recent)
        if not recent:
            return None
        return recent[min(len(recent) - 1, int(0.9 * len(recent)))]
