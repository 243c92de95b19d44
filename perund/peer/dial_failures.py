"""When a peer's failing dials are worth a log line.

A peer that is down is dialled again every few seconds for as long as the session wants it;
one line per dial would bury everything else in the log. The first failure is logged, then
a failure that differs (another error, another endpoint), and otherwise one line after a
minute, after ten minutes and then hourly, each with the number of dials that failed since
the line before; reaching the peer again is one line more.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

REPORT_AFTER = (60.0, 600.0)
"""Seconds after a run's first failure when a run that fails the same way is logged again."""
REPORT_EVERY = 3600.0
"""Then once every so many seconds."""
RESOLVING = "(finding the endpoint)"
"""The endpoint a run counts a failure of the session's resolver under (it has no endpoint)."""


class DialLine(enum.Enum):
    """What a failed dial's log line says."""

    FIRST = "first"
    """The first failure since the peer was last reached (or ever)."""
    CHANGED = "changed"
    """It fails in another way than the line before said (another error or endpoint)."""
    STILL = "still"
    """It fails as before, and a line is due (after 1 min, 10 min, then hourly)."""


@dataclass
class DialFailures:
    """One peer's run of failed dials since it was last reached; its times are the reactor's."""

    failed: int = 0
    """Dials that failed in this run."""
    unlogged: int = 0
    """Of those, the ones that failed since the last line."""
    since: float | None = None
    """When the run's first dial failed; None when there is no run."""
    said: tuple[str, str] | None = None
    """The endpoint and error the last line named."""
    next_line: float = 0.0
    """When a run that fails as before is worth its next line."""
    lines: int = 0
    """Lines of this run that said it still fails."""
    traced: bool = False
    """Whether a bug's traceback (a resolver that raised) was logged: once for the peer, so it
    outlives the run."""

    def record(self, now: float, endpoint: str, error: str) -> tuple[DialLine, int] | None:
        """Count a failed dial at `now`: what its log line says and how many dials failed
        since the line before (this one included), or None for no line."""
        self.failed += 1
        self.unlogged += 1
        if self.since is None:
            self.since, self.said, self.lines = now, (endpoint, error), 0
            self.next_line = now + REPORT_AFTER[0]
            line = DialLine.FIRST
        elif (endpoint, error) != self.said:
            self.said = endpoint, error
            line = DialLine.CHANGED
        elif now < self.next_line:
            return None
        else:
            self.lines += 1
            self.next_line = (self.since + REPORT_AFTER[self.lines]
                              if self.lines < len(REPORT_AFTER) else now + REPORT_EVERY)
            line = DialLine.STILL
        count, self.unlogged = self.unlogged, 0
        return line, count

    def reached(self) -> tuple[int, float] | None:
        """The peer is connected: how many dials failed in the run and when it began (None if
        none did); the run is over."""
        if self.since is None:
            return None
        run = self.failed, self.since
        self.failed, self.unlogged, self.since, self.said, self.lines = 0, 0, None, None, 0
        return run
