"""`Deadlines`: when pending requests time out, kept with one timed call for all of them.

A payer sends a request per payment, and nearly every one is answered within milliseconds.
`Deferred.addTimeout` cost each a timed call scheduled and cancelled, a cancellable chain
and two callbacks: about 7 % of a busy payer's time (docs/performance.md). Here a request's
deadline is one entry in an insertion-ordered dict per timeout length (so each dict is in
deadline order), removed when it is settled, and a single timed call wakes at the earliest
deadline there was when it was set; it finds that request settled, usually, and sets itself
for the oldest still waiting. So a stream of answered requests costs a dict insertion and
deletion each, and one wake-up per timeout length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger()


class Deadline:
    """One request's place in `Deadlines`."""

    __slots__ = ("expire", "group")

    def __init__(self, expire: Callable[[], None], group: dict[Deadline, float]) -> None:
        self.expire = expire
        self.group = group

    def cancel(self) -> None:
        """Its request is settled: `expire` is not called (idempotent)."""
        self.group.pop(self, None)


class Deadlines:
    """Calls each added `expire` once its `timeout` has passed, unless it was cancelled first."""

    def __init__(self, clock: IReactorTime) -> None:
        # zope interfaces do not type-check as protocols (their methods have no `self`).
        self._seconds: Callable[[], float] = cast(Any, clock).seconds
        self._call_later: Callable[..., DelayedCall] = cast(Any, clock).callLater
        self._groups: dict[float, dict[Deadline, float]] = {}
        """Pending deadlines (to the time each is due) by timeout length; each dict in the order
        they were added, which is the order they are due in."""
        self._call: DelayedCall | None = None
        self._call_at = 0.0

    def add(self, timeout: float, expire: Callable[[], None]) -> Deadline:
        """Call `expire` in `timeout` seconds unless the deadline is cancelled first."""
        group = self._groups.get(timeout)
        if group is None:
            group = self._groups[timeout] = {}
        at = self._seconds() + timeout
        deadline = Deadline(expire, group)
        group[deadline] = at
        if self._call is None or at < self._call_at:
            self._wake_at(at)
        return deadline

    def stop(self) -> None:
        """Drop every deadline and the timed call (the manager stopped: its requests failed
        with their connections)."""
        self._groups.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def _wake_at(self, at: float) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call_at = at
        delay = max(0.0, at - self._seconds())
        self._call = self._call_later(delay, self._expire)

    def _expire(self) -> None:
        self._call = None
        now = self._seconds()
        expired: list[Deadline] = []
        earliest: float | None = None
        for timeout, group in list(self._groups.items()):
            while group:
                deadline, at = next(iter(group.items()))
                if at > now:
                    if earliest is None or at < earliest:
                        earliest = at
                    break
                del group[deadline]
                expired.append(deadline)
            if not group:
                del self._groups[timeout]
        if earliest is not None:
            self._wake_at(earliest)
        for deadline in expired:
            try:
                deadline.expire()
            except Exception:
                log.failure("a request's timeout failed")
