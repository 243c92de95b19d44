"""The chain reads a watcher makes (`ChainView`), and one node's view shared by its sessions'
watchers (`SharedChainView`): their polls share the head, the block hashes, the timestamp and
the log requests, so a node with many sessions asks the chain about as often as one with one.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from perund.chain.backend import ChainBackend
from perund.chain.results import ChainEvent

_T = TypeVar("_T")


class ChainView(Protocol):
    """The chain reads a watcher needs (`ChainBackend` has them; so has `SharedChainView`)."""

    def events(self, from_block: int, to_block: int) -> Deferred[list[ChainEvent]]:
        """Every Adjudicator event in blocks `from_block..to_block` (inclusive), in order."""
        ...

    def block_number(self) -> Deferred[int]:
        """The newest block's number."""
        ...

    def block_hash(self, number: int) -> Deferred[bytes | None]:
        """Block `number`'s hash now; None if there is no such block."""
        ...

    def forget(self) -> None:
        """A reorganisation replaced blocks: drop whatever was learnt of them."""
        ...

    def chain_time(self) -> Deferred[int]:
        """The newest block's timestamp."""
        ...


class SharedChainView:
    """One node's view of the chain, shared by its sessions' watchers.

    The newest block number and a block's hash are fetched at most once per `max_age` seconds,
    the newest block's timestamp once per block, and the logs of a block range once (the last
    few ranges are kept): sessions whose cursors agree, as they do once they are caught up,
    share each request. Concurrent identical requests share one call too.
    """

    def __init__(self, reactor: Any, chain: ChainBackend, *, max_age: float = 0.5,
                 ranges_kept: int = 8) -> None:
        self._reactor = reactor
        self.chain = chain
        self.max_age = max_age
        self.ranges_kept = ranges_kept
        self._head: tuple[int, float] | None = None
        self._head_call: _InFlight[int] | None = None
        self._time: tuple[int, int] | None = None
        self._time_call: tuple[int, _InFlight[int]] | None = None
        self._ranges: dict[tuple[int, int], list[ChainEvent]] = {}
        self._range_calls: dict[tuple[int, int], _InFlight[list[ChainEvent]]] = {}
        self._hashes: dict[int, tuple[_InFlight[bytes | None], float]] = {}
        self.requests = 0
        """Calls made to the chain (for tests and metrics)."""

    def block_number(self) -> Deferred[int]:
        """The newest block's number, at most `max_age` seconds old."""
        return Deferred.fromCoroutine(self._block_number())

    async def _block_number(self) -> int:
        now = self._reactor.seconds()
        if self._head is not None and now - self._head[1] < self.max_age:
            return self._head[0]
        if self._head_call is None or self._head_call.done:
            self.requests += 1
            self._head_call = _InFlight(Deferred.fromCoroutine(self._fetch_head()))
        return await self._head_call.wait()

    async def _fetch_head(self) -> int:
        number = await self.chain.block_number()
        self._head = (number, self._reactor.seconds())
        return number

    def chain_time(self) -> Deferred[int]:
        """The timestamp of the newest block (as of `block_number`)."""
        return Deferred.fromCoroutine(self._chain_time())

    async def _chain_time(self) -> int:
        number = await self._block_number()
        if self._time is not None and self._time[0] == number:
            return self._time[1]
        call = self._time_call
        if call is None or call[0] != number or call[1].done:
            self.requests += 1
            call = self._time_call = (number, _InFlight(self.chain.chain_time()))
        timestamp = await call[1].wait()
        self._time = (number, timestamp)
        return timestamp

    def block_hash(self, number: int) -> Deferred[bytes | None]:
        """Block `number`'s hash, at most `max_age` seconds old."""
        now = self._reactor.seconds()
        known = self._hashes.get(number)
        if known is None or (known[0].done and now - known[1] >= self.max_age):
            self.requests += 1
            known = self._hashes[number] = (_InFlight(self.chain.block_hash(number)), now)
            for stale in [n for n, (call, at) in self._hashes.items()
                          if call.done and now - at >= self.max_age]:
                del self._hashes[stale]
        return known[0].wait()

    def forget(self) -> None:
        """Drop what is kept of the chain: a watcher saw a reorganisation (the backend then
        forgets its accounts' nonces too)."""
        self._head = None
        self._time = None
        self._ranges.clear()
        self._hashes.clear()
        self.chain.forget()

    def events(self, from_block: int, to_block: int) -> Deferred[list[ChainEvent]]:
        """Every event in blocks `from_block..to_block`: read once for every watcher asking
        (they share the list and only read it)."""
        key = (from_block, to_block)
        events = self._ranges.get(key)
        if events is not None:
            return succeed(events)
        call = self._range_calls.get(key)
        if call is None or call.done:
            self.requests += 1
            call = self._range_calls[key] = _InFlight(Deferred.fromCoroutine(self._fetch(key)))
            if call.done:
                del self._range_calls[key]
        return call.wait()

    def events_again(self, from_block: int, to_block: int) -> Deferred[list[ChainEvent]]:
        """The events of blocks `from_block..to_block` read from the chain again, never from
        what was kept: a node that left some out of its first answer may have them now."""
        return self.chain.events(from_block, to_block)

    async def _fetch(self, key: tuple[int, int]) -> list[ChainEvent]:
        try:
            events = await self.chain.events(key[0], key[1])
        finally:
            self._range_calls.pop(key, None)
        self._ranges[key] = events
        while len(self._ranges) > self.ranges_kept:
            del self._ranges[next(iter(self._ranges))]
        return events


class _InFlight(Generic[_T]):
    """One call to the chain and everyone waiting for its result (also after it came)."""

    def __init__(self, call: Deferred[_T]) -> None:
        self._waiters: list[Deferred[_T]] = []
        self.done = False
        self._outcome: _T | Failure | None = None
        call.addCallbacks(self._finish, self._finish)

    def wait(self) -> Deferred[_T]:
        waiter: Deferred[_T] = Deferred()
        if self.done:
            self._fire(waiter)
        else:
            self._waiters.append(waiter)
        return waiter

    def _finish(self, outcome: _T | Failure) -> None:
        self.done, self._outcome = True, outcome
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._fire(waiter)

    def _fire(self, waiter: Deferred[_T]) -> None:
        outcome = self._outcome
        if isinstance(outcome, Failure):
            waiter.errback(outcome)
        else:
            waiter.callback(outcome)  # type: ignore[arg-type]
