"""ChainWatcher: follows the Adjudicator's events for one session's channels (PROTOCOL.md §4).

Every `poll_interval` it asks the backend for the events of the blocks after its cursor, up to
the newest block `confirmations` deep, and feeds those about a watched channel into the channel
core as inputs (`Registered`, `Concluded`). Only then does it persist the new cursor, after the
channel records those inputs changed: a crash between the two replays the events (the core
ignores what it has seen), never skips one. There is no look-back window: a session that was
closed for a week resumes from where it stopped.

It also keeps the contract's clock for running disputes: once a registered state's timeout has
passed it feeds `ChallengeExpired`, which makes the core conclude. Chains mine blocks only when
there are transactions (dev chains) or every few seconds, so "now" on the chain is estimated as
the latest block's timestamp plus the time since that block was first seen; a conclude sent a
little early reverts with `ChallengeNotOver` and is simply fed again later.

The watcher talks to the chain only through `ChainBackend` (its own thread pool) and to the
channels only through the `WatchedChannels` protocol, so it runs entirely on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from perund.chain.backend import ChainBackend
from perund.chain.results import ChainEvent
from perund.channel.changes import ChallengeExpired, Change, Concluded, Registered
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.errors import PerundError

log = Logger(namespace="perund.watcher")


class WatchedChannels(Protocol):
    """The channels a watcher follows and where their news goes (a session's ChannelClient)."""

    @property
    def channels(self) -> Mapping[ChannelID, Channel]:
        """Every channel of the session by ID (closed ones are skipped)."""
        ...

    def chain_input(self, channel_id: ChannelID, change: Change) -> None:
        """Feed news from the chain into the channel's core."""
        ...


class CursorStore(Protocol):
    """Where the watcher keeps its block cursor (a session's `SessionStore`)."""

    def block_cursor(self) -> int | None:
        """The last block whose events were handled, or None before the first poll."""
        ...

    def set_block_cursor(self, block: int) -> None:
        """Record the cursor (durable after the next flush)."""
        ...

    def flush(self) -> Deferred[None] | None:
        """Make every write so far durable; None when nothing is pending."""
        ...


def change_of(event: ChainEvent) -> Change | None:
    """The core input an Adjudicator event stands for, or None for events the core does not
    take (deposits and payouts: funding reads the holdings, payouts follow `Concluded`)."""
    args = event.args
    if event.name == "Registered":
        balances = tuple(tuple(int(b) for b in row) for row in args["balances"])
        return Registered(int(args["version"]), int(args["timeout"]), bool(args["isFinal"]),
                          balances)
    if event.name == "Concluded":
        return Concluded(int(args["version"]))
    return None


class ChainWatcher:
    """Follows the chain for one session; `start` it after the session's channels are restored,
    `stop` it before the session's store closes."""

    def __init__(
        self,
        reactor: Any,
        chain: ChainBackend,
        store: CursorStore,
        channels: WatchedChannels,
        *,
        poll_interval: float = 1.0,
        confirmations: int = 0,
        conclude_retry: float = 30.0,
    ) -> None:
        self._reactor = reactor
        self.chain = chain
        self.store = store
        self.watched = channels
        self.poll_interval = poll_interval
        self.confirmations = confirmations
        self.conclude_retry = conclude_retry
        """Seconds before `ChallengeExpired` is fed again for a dispute not yet concluded."""
        self.cursor: int | None = store.block_cursor()
        self._running = False
        self._loop: Deferred[None] | None = None
        self._sleeping: Deferred[None] | None = None
        self._head: tuple[int, int, float] | None = None
        """(number, timestamp, reactor time first seen) of the newest block seen."""
        self._expiry_fed: dict[ChannelID, tuple[int, float]] = {}
        """Per disputed channel: the registered version `ChallengeExpired` was fed for, when."""
        self.polls = 0
        """Completed polls (for tests and metrics)."""

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Set the first cursor if there is none, then poll in the background; fires after the
        first poll (so disputes that happened while the node was down are handled at once)."""
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        if self.cursor is None:
            if any(c.phase is not Phase.CLOSED for c in self.watched.channels.values()):
                # Channels from before the watcher kept a cursor: read their whole history.
                self.cursor = 0
            else:
                # A new session: nothing it will ever watch can be in an existing block.
                head = await self.chain.block_number()
                self.cursor = max(0, head - self.confirmations)
            self.store.set_block_cursor(self.cursor)
            flushed = self.store.flush()
            if flushed is not None:
                await flushed
        self._running = True
        await self._poll_logged()
        if self._running:
            self._loop = Deferred.fromCoroutine(self._run())

    def stop(self) -> Deferred[None]:
        """Stop polling; fires once a poll in progress has finished."""
        self._running = False
        if self._sleeping is not None:
            sleeping, self._sleeping = self._sleeping, None
            sleeping.cancel()
        loop, self._loop = self._loop, None
        if loop is None:
            return Deferred.fromCoroutine(_nothing())
        return loop

    async def _run(self) -> None:
        while self._running:
            self._sleeping = deferLater(self._reactor, self.poll_interval, lambda: None)
            try:
                await self._sleeping
            except Exception:  # cancelled by stop()
                return
            self._sleeping = None
            if not self._running:
                return
            await self._poll_logged()

    async def _poll_logged(self) -> None:
        try:
            await self.poll()
        except PerundError as exc:
            # The chain is unreachable or slow: try again at the next poll, from the same cursor.
            log.warn("watcher: polling the chain failed: {error}", error=exc)
        except Exception:
            log.failure("watcher: poll failed")

    # -- one poll -------------------------------------------------------------------------------

    async def poll(self) -> None:
        """Handle the events of the newly confirmed blocks, then the expired challenges."""
        cursor = self.cursor
        if cursor is None:
            raise AssertionError("poll before start")
        batch = await self.chain.events_after(cursor, None, confirmations=self.confirmations)
        if not self._running:
            return
        channels = self.watched.channels
        for event in batch.events:
            channel_id = event.channel_id
            if channel_id is None:
                continue
            cid = ChannelID(channel_id)
            channel = channels.get(cid)
            if channel is None or channel.phase is Phase.CLOSED:
                continue
            change = change_of(event)
            if change is None:
                continue
            log.info("watcher: channel {channel_id}: {event} in block {block}",
                     channel_id="0x" + cid.hex(), event=_describe(event),
                     block=event.block_number)
            self.watched.chain_input(cid, change)
        if batch.cursor != cursor:
            # After the inputs above: their channel records are written first, so the cursor
            # never gets durable without them.
            self.store.set_block_cursor(batch.cursor)
            self.cursor = batch.cursor
            flushed = self.store.flush()
            if flushed is not None:
                await flushed
        await self._expire_challenges()
        self.polls += 1

    async def _expire_challenges(self) -> None:
        disputed = [c for c in self.watched.channels.values()
                    if c.phase is Phase.DISPUTED and c.dispute is not None]
        self._expiry_fed = {c.channel_id: self._expiry_fed[c.channel_id] for c in disputed
                            if c.channel_id in self._expiry_fed}
        if not disputed:
            return
        now = await self._chain_now()
        seconds = self._reactor.seconds()
        for channel in disputed:
            dispute = channel.dispute
            assert dispute is not None
            if now < dispute.timeout:
                continue
            fed = self._expiry_fed.get(channel.channel_id)
            if fed is not None and fed[0] == dispute.version and (
                    seconds - fed[1] < self.conclude_retry):
                continue
            self._expiry_fed[channel.channel_id] = (dispute.version, seconds)
            log.info("watcher: channel {channel_id}: the challenge period of version {version} "
                     "is over; concluding", channel_id="0x" + channel.channel_id.hex(),
                     version=dispute.version)
            self.watched.chain_input(channel.channel_id, ChallengeExpired())

    async def _chain_now(self) -> int:
        """The contract's clock: the newest block's timestamp, plus the time since it was first
        seen (a dev chain mines no block while idle, yet its next block takes the time)."""
        number = await self.chain.block_number()
        seen = self._reactor.seconds()
        if self._head is None or self._head[0] != number:
            self._head = (number, await self.chain.chain_time(), seen)
        _, timestamp, first_seen = self._head
        return timestamp + int(seen - first_seen)


def _describe(event: ChainEvent) -> str:
    args = event.args
    if event.name == "Registered":
        final = ", final" if args.get("isFinal") else ""
        return f"Registered version {args['version']}{final}, timeout {args['timeout']}"
    if event.name == "Concluded":
        return f"Concluded with version {args['version']}"
    return event.name


async def _nothing() -> None:
    return None
