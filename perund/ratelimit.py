"""Warnings that a flood cannot multiply: one line per interval, however many events."""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from perund.words import plural

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

    def warn(self, template: str, counted: str | tuple[str, str] = "time",
             **fields: object) -> None:
        """Count one event; log `template` when the interval has passed since the last line.
        The template may use `{times}`, the events since that line, or `{counted}`: that
        number with `counted`, the noun for one event (or the noun for one and for several),
        in the right number."""
        self._count += 1
        now = self._clock.seconds()
        if now - self._last >= self.interval:
            self._last = now
            noun, nouns = (counted, None) if isinstance(counted, str) else counted
            self._log.warn(template, times=self._count,
                           counted=plural(self._count, noun, nouns), **fields)
            self._count = 0


class WorkAllowance:
    """A token bucket of work units (records scanned, say): up to `burst` at once, refilled at
    `rate` a second on the `clock`. One user's costly calls then take at most that share of the
    reactor, however many they send at once."""

    def __init__(self, clock: Any, rate: float, burst: int) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self._units = float(burst)
        self._at = clock.seconds()

    def available(self) -> int:
        """Whole units that may be spent now."""
        now = self._clock.seconds()
        self._units = min(float(self.burst), self._units + (now - self._at) * self.rate)
        self._at = now
        return int(self._units + 1e-6)  # a refill of exactly N units is N, not N - 1

    def spend(self, units: int) -> None:
        """Take `units` (what the work really cost; at most what `available` said)."""
        self._units = max(0.0, self._units - units)

    def seconds_until(self, units: int) -> float:
        """How long until `units` are available."""
        return max(0.0, (min(units, self.burst) - self._units) / self.rate)


class Allowances:
    """A `WorkAllowance` per key (a party: a session, the operator), made at its first use.
    Past `kept` keys the idle ones (allowance full) are forgotten, and all of them if none is
    idle: forgetting one only gives it a fresh burst."""

    def __init__(self, clock: Any, rate: float, burst: int, kept: int) -> None:
        self._clock = clock
        self.rate = rate
        self.burst = burst
        self.kept = kept
        self._of: dict[str, WorkAllowance] = {}

    def of(self, key: str) -> WorkAllowance:
        """`key`'s allowance."""
        allowance = self._of.get(key)
        if allowance is None:
            if len(self._of) >= self.kept:
                self._of = {k: a for k, a in self._of.items() if a.available() < self.burst}
                if len(self._of) >= self.kept:
                    self._of.clear()
            allowance = self._of[key] = WorkAllowance(self._clock, self.rate, self.burst)
        return allowance


class LineBudget:
    """At most `lines` log lines per `interval` for one kind of event that a flood can
    multiply (one per connection, one per key): the first ones of an interval are logged as
    they come (`take` says so), the rest counted and told in one line at the first event of
    a later interval. Unlike `RateLimitedWarning`, a handful of events keep each its own line
    (its own reason and peer)."""

    def __init__(self, clock: Any, log: Logger, what: str | tuple[str, str],
                 lines: int = 20, interval: float = WARN_INTERVAL) -> None:
        """`what` names one event (`dropped peer connection`), or one and several where the
        plural is not that with an "s"."""
        self._clock = clock
        self._log = log
        self.what, self.whats = (what, what + "s") if isinstance(what, str) else what
        self.lines = lines
        self.interval = interval
        self._started = float("-inf")
        self._used = 0
        self.suppressed = 0
        """Events of the current interval that were not logged."""

    def take(self) -> bool:
        """Count one event; whether to log it."""
        now = self._clock.seconds()
        if now - self._started >= self.interval:
            if self.suppressed:
                self._log.warn("{more} not logged (at most {lines} lines in {interval} s)",
                               count=self.suppressed, what=self.whats, lines=self.lines,
                               interval=self.interval, more=plural(
                                   self.suppressed, f"more {self.what} was",
                                   f"more {self.whats} were"))
            self._started = now
            self._used = 0
            self.suppressed = 0
        if self._used < self.lines:
            self._used += 1
            return True
        self.suppressed += 1
        return False
