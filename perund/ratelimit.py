"""Warnings that a flood cannot multiply: one line per interval, however many events."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

WARN_INTERVAL = 10.0
"""Seconds between two lines of one warning."""


class RateLimitedWarning:
    """A warning logged at most once per `interval` on `log`, with how many events it stands
    for: a flood is one line per interval, not one per event. Time is the `clock`'s."""

    def __init__(self, clock: Any, log: Logger, interval: float = WARN_INTERVAL) -> None:
        self._clock = clock
        self._log = log
        self.interval = interval
        self._last = float("-inf")
        self._count = 0

    def warn(self, template: str, **fields: object) -> None:
        """Count one event; log `template` (which may use `{times}`, the events since the last
        line) when the interval has passed since that line."""
        self._count += 1
        now = self._clock.seconds()
        if now - self._last >= self.interval:
            self._last = now
            self._log.warn(template, times=self._count, **fields)
            self._count = 0
