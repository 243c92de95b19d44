"""Fair turns of the reactor for the API's work, party by party (docs/security.md, "Fairness").

Every piece of API work, reading a message (parsing it, refusing what is over a limit) and
starting one call of a batch, is a job of its party: a session's full credentials, that
session's read-only credentials, or the operator. The scheduler starts jobs round-robin over
the parties that have some waiting, one job of each in turn, so a party's job waits behind at
most one job of every other party per round, however many each has queued. At most
`turn_jobs` calls' worth of jobs start in one reactor turn (reading a large batch counts for
more than one call), and none once the turn's jobs took `turn_seconds` of the reactor's
clock; the rest wait for the next turn (a `callLater(0)`), so the reactor reads the sockets
and runs its timers between turns. Jobs finish synchronously
or hand over to a Deferred: only their synchronous part counts as a job.

A job submitted while nothing waits and the turn's budget is not spent starts at once, on the
caller's stack: one client's call costs no reactor turn (bench/api.py).

Without it one user's batches took the reactor for seconds (an audit: 64 connections of
pipelined batches of `node_time` raised another user's median latency from 2 ms to 3.3 s):
every batch ran whole in one turn, and each read carried several.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Final, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

log = Logger(namespace="perund.api")

T = TypeVar("T")

TURN_JOBS: Final = 64
"""Calls' worth of jobs started in one reactor turn at most (a `node_time` call is some 30 µs
of the reactor; reading a message costs a call's worth per READ_BYTES_PER_CALL of it, a batch
of 100 about 13): a turn is a few milliseconds."""

TURN_SECONDS: Final = 0.004
"""A turn also ends once its jobs took this long of the reactor (reading batches that are
refused, say, costs more than their size tells)."""

READ_BYTES_PER_CALL: Final = 2048
"""Bytes of a message whose reading costs as much of a turn as starting one call."""


class FairScheduler:
    """Starts the jobs of many parties round-robin, at most `turn_jobs` per reactor turn."""

    def __init__(self, clock: Any, turn_jobs: int = TURN_JOBS,
                 turn_seconds: float = TURN_SECONDS) -> None:
        if turn_jobs < 1:
            raise ValueError("turn_jobs must be at least 1")
        self._clock = clock
        self.turn_jobs = turn_jobs
        self.turn_seconds = turn_seconds
        self._turn_began = 0.0
        self._queues: dict[Hashable, deque[tuple[Callable[[], None], int]]] = {}
        self._order: deque[Hashable] = deque()
        """The parties with jobs waiting, the next to start one first."""
        self._spent = 0
        """Jobs started in this reactor turn."""
        self._running = False
        self._turn: Any = None
        """The next turn (a DelayedCall), once a job started in this one."""
        self.started = 0
        """Jobs started in all (for tests and metrics)."""
        self.ready: Callable[[Hashable], bool] | None = None
        """Whether a party may start jobs now (None: always). One that may not is set aside
        until `wake` (a session whose clients have not taken the answers it had: its work
        waits, rather than add to what the node holds for it)."""
        self._parked: set[Hashable] = set()

    def waiting(self, party: Hashable | None = None) -> int:
        """Jobs not yet started: of `party`, or of every party."""
        if party is not None:
            queue = self._queues.get(party)
            return 0 if queue is None else len(queue)
        return sum(len(queue) for queue in self._queues.values())

    def submit(self, party: Hashable, job: Callable[[], None], cost: int = 1) -> None:
        """Start `job` in `party`'s turn: now if nothing waits and the turn has budget left,
        else later. `cost` is what it takes of the turn's budget, in calls' worth (reading a
        large batch costs more than starting one call). A job's exception is a bug: logged,
        and the next job starts."""
        queue = self._queues.get(party)
        if queue is None:
            queue = self._queues[party] = deque()
            self._order.append(party)
        queue.append((job, max(cost, 1)))
        if not self._running:
            self._drain()

    def run(self, party: Hashable, work: Callable[[], Deferred[T]],
            cost: int = 1) -> Deferred[T]:
        """`work()`, started in `party`'s turn (see `submit`); its result."""
        result: Deferred[T] = Deferred()

        def job() -> None:
            # A `work` that raises fails its result: a waiting caller (a batch's call slot,
            # an HTTP request) must not wait for ever.
            maybeDeferred(work).chainDeferred(result)

        self.submit(party, job, cost)
        return result

    def wake(self, party: Hashable) -> None:
        """`party` may start jobs again (see `ready`)."""
        if party in self._parked:
            self._parked.discard(party)
            self._order.append(party)
            if not self._running:
                self._drain()

    def _drain(self) -> None:
        """Start jobs round-robin until none waits or the turn's budget is spent."""
        self._running = True
        try:
            while self._order and self._spent < self.turn_jobs:
                if not self._spent:
                    self._turn_began = self._clock.seconds()
                elif self._clock.seconds() - self._turn_began >= self.turn_seconds:
                    self._spent = self.turn_jobs  # the turn is over: its budget is spent
                    break
                party = self._order.popleft()
                if self.ready is not None and not self.ready(party):
                    self._parked.add(party)
                    continue
                queue = self._queues[party]
                job, cost = queue.popleft()
                if queue:
                    self._order.append(party)
                else:
                    del self._queues[party]
                self._spent += cost
                self.started += 1
                try:
                    job()
                except Exception:
                    log.failure("an API job failed")
        finally:
            self._running = False
        if self._spent and self._turn is None:
            # The budget is the reactor turn's: a later turn starts afresh, after the reactor
            # has read the sockets (other users' requests) and run its timers.
            self._turn = self._clock.callLater(0, self._next_turn)

    def _next_turn(self) -> None:
        self._turn = None
        self._spent = 0
        if self._order:
            self._drain()
