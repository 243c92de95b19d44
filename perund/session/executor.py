"""The channel client's event execution: the core's events, in order, each write as durable as
the event that follows it needs (docs/specification.md §5, docs/protocol.md "Durability by
interest").

Rules, stated once:

- events run in the order the core produced them, those of one transition and those of the
  transitions after it, across channels: no message overtakes one emitted before it;
- a `Persist` is written to the store at once, when its transition's events are handed in (so
  every write of one reactor turn shares one commit and one fsync: group commit); one without
  `write` is only noted by the store;
- a `Persist` with `wait` holds back every later event until its write is durable (the store's
  `when_durable`); one without `wait` holds back nothing;
- once the store has failed to make a write durable, the events after any `Persist` are not
  run, except what the chain asks for (`broken`); events of transitions that write nothing still
  run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from twisted.logger import Logger

from perund.channel import events as ev
from perund.errors import PerundError, StoreError
from perund.storage import ChannelStore

log = Logger(namespace="perund.client")

Events = Sequence[ev.Event]
Broken = Callable[[str, list[ev.Event]], None]
"""Told, in order, that a write failed (why), with the events of its transition that were
not run because of it."""


class _Written:
    """Where a `Persist` stood among its transition's events: the events after it wait until
    its write is `durable`, or do not run if it `failed`."""

    __slots__ = ("blocked", "durable", "failed")

    def __init__(self, durable: bool, failed: str | None = None) -> None:
        self.durable = durable
        self.failed = failed
        self.blocked = False  # the executor waits for it


class _Pending:
    """A transition's events, from `at` on not run yet."""

    __slots__ = ("at", "steps")

    def __init__(self, steps: list[ev.Event | _Written]) -> None:
        self.steps = steps
        self.at = 0


class Executor:
    """Runs the core's events through `handlers` (one per event type but `Persist`, which it
    carries out on `store` itself) in the order of the module docstring. `is_broken` says
    whether the store has failed; `broken` is told, in order, of each transition cut short."""

    def __init__(self, store: ChannelStore,
                 handlers: Mapping[Any, Callable[[Any], None]], *,
                 is_broken: Callable[[], str | None], broken: Broken) -> None:
        self._store = store
        self._handlers = handlers
        self._is_broken = is_broken
        self._broken = broken
        self._backlog: deque[_Pending] = deque()
        self._running = False

    def execute(self, events: Events) -> None:
        """Write the transition's `Persist`s now and run its other events in turn."""
        store = self._store
        steps: list[ev.Event | _Written] = []
        for i, event in enumerate(events):
            if type(event) is not ev.Persist:
                steps.append(event)
                continue
            try:
                if event.write:
                    store.put(event.channel, event.by_us)
                else:
                    store.note(event.channel)
            except PerundError as exc:
                steps.append(_Written(False, str(exc)))
                steps.extend(events[i + 1:])
                break
            written = _Written(False)
            if not (event.wait and store.when_durable(partial(self._settled, written))):
                written.durable = True
            steps.append(written)
        self._backlog.append(_Pending(steps))
        self._run()

    def _run(self) -> None:
        if self._running:
            return  # an event's handler handed in more: the loop below gets to them in turn
        self._running = True
        try:
            backlog, handlers = self._backlog, self._handlers
            while backlog:
                pending = backlog[0]
                steps = pending.steps
                while pending.at < len(steps):
                    step = steps[pending.at]
                    if type(step) is _Written:
                        failed = step.failed or self._is_broken()
                        if failed is not None:
                            rest = [s for s in steps[pending.at + 1:]
                                    if not isinstance(s, _Written)]
                            pending.at = len(steps)
                            self._broken(failed, rest)
                            break
                        if not step.durable:
                            step.blocked = True
                            return
                        pending.at += 1
                        continue
                    pending.at += 1
                    try:
                        handlers[type(step)](step)
                    except Exception:
                        log.failure("executing {event} failed", event=type(step).__name__)
                backlog.popleft()
        finally:
            self._running = False

    def _settled(self, written: _Written, error: StoreError | None) -> None:
        """The store made `written` durable (`error` None), or could not."""
        if error is None:
            written.durable = True
        else:
            written.failed = str(error)
        if written.blocked:
            written.blocked = False
            self._run()
