"""ChainWatcher: follows the Adjudicator's events for one session's channels.

docs/specification.md §4 says what it must do.

Every `poll_interval` it reads the events of the blocks after its cursor, up to the newest
block `confirmations` deep, and feeds those about a watched channel into the channel
core as inputs (`Registered`, `Concluded`). Only then does it persist the new cursor, after the
channel records those inputs changed: a crash between the two replays the events (the core
ignores what it has seen), never skips one. There is no look-back window: a session that was
closed for a week resumes from where it stopped.

It also keeps the contract's clock for running disputes: once a registered state's timeout has
passed it feeds `ChallengeExpired`, which makes the core conclude. Chains mine blocks only when
there are transactions (dev chains) or every few seconds, so "now" on the chain is estimated as
the latest block's timestamp plus the time since that block was first seen; a conclude sent a
little early reverts with `ChallengeNotOver` and is simply fed again later.

The watcher talks to the chain only through a `ChainView` (the backend's reads, on its own thread
pool) and to the channels only through the `WatchedChannels` protocol, so it runs entirely on the
reactor thread. A node gives all its sessions' watchers one `SharedChainView`: their polls then
share the head, timestamp and log requests, so a node with many sessions asks the chain about
as often as a node with one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger, LogLevel

from perund.chain.chain_view import ChainView
from perund.chain.payouts import payouts_of
from perund.chain.results import ChainEvent
from perund.channel.changes import (
    ChallengeExpired,
    Change,
    Concluded,
    Registered,
    Reorganised,
)
from perund.channel.phases import TERMINAL, Phase
from perund.channel.records import Channel
from perund.channel.types import ChannelID, SubAlloc
from perund.errors import PerundError, StoreError
from perund.words import plural

log = Logger(namespace="perund.watcher")

REORG_REWIND = 128
"""Blocks before a replaced cursor block (plus the confirmation depth) whose events are read
again after a reorganisation."""

RECHECK_POLLS: Final = 30
"""Every this many polls the watcher reads the events of the last `RECHECK_BLOCKS` blocks
again: a load-balanced node may answer eth_getLogs from a backend that has not indexed the
newest blocks yet, and leave out a registration (the chain review lost a dispute so)."""
RECHECK_BLOCKS: Final = 64

FAILURE_REPEAT: Final = 60.0
"""Seconds between the log lines of a chain that keeps failing the watcher's polls."""


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

    def block_cursor_hash(self) -> bytes | None:
        """The hash of the cursor's block when the cursor was set, if recorded."""
        ...

    def set_block_cursor(self, block: int, block_hash: bytes | None = None) -> None:
        """Record the cursor and its block's hash (durable after the next flush)."""
        ...

    def flush(self) -> Deferred[None] | None:
        """Make every write so far durable; None when nothing is pending."""
        ...


def change_of(event: ChainEvent, same_tx: tuple[ChainEvent, ...] = ()) -> Change | None:
    """The core input an Adjudicator event stands for, or None for events the core does not
    take (deposits and payouts: deposits go to `on_deposit`, payouts follow `Concluded`).
    `same_tx` are the events after it in its transaction: a parent's `Registered` is followed
    by `RegisteredLocks`, whose locks belong to the registered state."""
    args = event.args
    if event.name == "Registered":
        balances = tuple(tuple(int(b) for b in row) for row in args["balances"])
        return Registered(int(args["version"]), int(args["timeout"]), bool(args["isFinal"]),
                          balances, locks_of(event, same_tx))
    if event.name == "Concluded":
        return Concluded(int(args["version"]))
    return None


def locks_of(registered: ChainEvent, same_tx: tuple[ChainEvent, ...]) -> tuple[SubAlloc, ...]:
    """The locks of the state a `Registered` event registered: those of the `RegisteredLocks`
    event of the same channel and version that follows it in the transaction, if any."""
    for event in same_tx:
        if (event.name == "RegisteredLocks" and event.channel_id == registered.channel_id
                and int(event.args["version"]) == int(registered.args["version"])):
            return tuple(SubAlloc(ChannelID(bytes(lock[0])), tuple(int(a) for a in lock[1]),
                                  (int(lock[2][0]), int(lock[2][1])))
                         for lock in event.args["locked"])
        if event.name == "Registered" and event.channel_id == registered.channel_id:
            break
    return ()


class ChainWatcher:
    """Follows the chain for one session; `start` it after the session's channels are restored,
    `stop` it before the session's store closes."""

    def __init__(
        self,
        reactor: Any,
        chain: ChainView,
        store: CursorStore,
        channels: WatchedChannels,
        *,
        poll_interval: float = 1.0,
        confirmations: int = 0,
        conclude_retry: float = 30.0,
        on_deposit: Callable[[ChannelID], None] | None = None,
        on_event: Callable[[ChainEvent, tuple[ChainEvent, ...]], None] | None = None,
        mine: Callable[[], Deferred[None]] | None = None,
        on_rewind: Callable[[], Awaitable[None]] | None = None,
        on_passed: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self._reactor = reactor
        self.mine = mine
        """For a chain that mines a block only per transaction (the embedded dev chain): mines
        one. A challenge period over by the clock is over for the contract only once a block
        says so, and the conclusion's pre-flight runs against the newest block."""
        self.on_deposit = on_deposit
        """Told of every Deposited event of a watched channel once it is confirmed (funding
        waits on it instead of reading the holdings on a timer)."""
        self.on_event = on_event
        """Told of every event of the new blocks with the rest of its transaction, before the
        watched channels hear of it (virtual channels an intermediary watches are no channels
        of its own)."""
        self.on_rewind = on_rewind
        """Asked, after blocks the watcher had read were replaced or lost, to re-examine what
        no event tells: a conclusion those blocks held, of a channel the session holds as
        closed (the watcher stops watching a channel once it is concluded), and deposits they
        held (perund.session.missing_deposits). Asked again at the next poll until it
        succeeds."""
        self.on_passed = on_passed
        """Told the new cursor each time the watcher has moved it (the events up to it handed
        on and its hash kept): what the chain showed in a block at or below it is now as
        confirmed as the watcher's own reading, and a later replacement of the block is found
        (perund.session.unconfirmed, the funding waits)."""
        self._rewind_check_due = False
        self.chain = chain
        self.store = store
        self.watched = channels
        self.poll_interval = poll_interval
        self.confirmations = confirmations
        self.conclude_retry = conclude_retry
        """Seconds before `ChallengeExpired` is fed again for a dispute not yet concluded."""
        self.cursor: int | None = store.block_cursor()
        self.cursor_hash: bytes | None = store.block_cursor_hash()
        """The cursor block's hash when the cursor was set: if the chain's block of that number
        has another hash now, a reorganisation deeper than `confirmations` replaced it."""
        self.reorg_rewind = REORG_REWIND + confirmations
        self.reorgs = 0
        """Reorganisations seen below the cursor (for tests and metrics)."""
        self._store_failed = False
        self._running = False
        self._loop: Deferred[None] | None = None
        self._sleeping: Deferred[None] | None = None
        self._head: tuple[int, int, float] | None = None
        """(number, timestamp, reactor time first seen) of the newest block seen."""
        self._expiry_fed: dict[ChannelID, tuple[int, float]] = {}
        """Per disputed channel: the registered version `ChallengeExpired` was fed for, when."""
        self.polls = 0
        """Completed polls (for tests and metrics)."""
        self._rewind_said = -FAILURE_REPEAT
        self._rewinds_unsaid = 0
        """Rewinds since the last one logged as an error (the rest go to debug)."""
        self._seen: dict[tuple[int, int, bytes], int] = {}
        """The events handed on, by position, with their block: what a recheck need not."""
        self._recheck_floor = 0
        """The cursor at start: the events up to it were handled before (a recheck takes
        only the later ones)."""
        self._behind: int | None = None
        self._failing_since: float | None = None
        """When polls began to fail (None: the last one worked)."""
        self._failing_said = 0.0
        self._failed_polls = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """Set the first cursor if there is none, then poll in the background; fires after the
        first poll (so disputes that happened while the node was down are handled at once)."""
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        if self.cursor is None:
            if any(c.phase not in TERMINAL for c in self.watched.channels.values()):
                # Channels from before the watcher kept a cursor: read their whole history.
                self.cursor = 0
            else:
                # A new session: nothing it will ever watch can be in an existing block.
                head = await self.chain.block_number()
                self.cursor = max(0, head - self.confirmations)
                self.cursor_hash = await self.chain.block_hash(self.cursor)
            self.store.set_block_cursor(self.cursor, self.cursor_hash)
            flushed = self.store.flush()
            if flushed is not None:
                await flushed
        self._recheck_floor = self.cursor
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
            return succeed(None)
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
            # Said once, then once a minute while it lasts (a dead chain would otherwise write
            # a line per poll, four a second), and when it is over.
            now = self._reactor.seconds()
            self._failed_polls += 1
            if self._failing_since is None or now - self._failing_said >= FAILURE_REPEAT:
                if self._failing_since is None:
                    self._failing_since = now
                    log.warn("watcher: polling the chain failed: {error}", error=exc)
                else:
                    log.warn("watcher: polling the chain still fails ({failed} in {seconds} "
                             "s): {error}", polls=self._failed_polls,
                             failed=plural(self._failed_polls, "poll"),
                             seconds=int(now - self._failing_since), error=exc)
                self._failing_said = now
            return
        except Exception:
            log.failure("watcher: poll failed")
            return
        if self._failing_since is not None:
            log.info("watcher: polling the chain works again after {polls} failed polls",
                     polls=self._failed_polls)
            self._failing_since = None
            self._failed_polls = 0

    # -- one poll -------------------------------------------------------------------------------

    async def poll(self) -> None:
        """Handle the events of the newly confirmed blocks, then the expired challenges."""
        cursor = self.cursor
        if cursor is None:
            raise AssertionError("poll before start")
        if self.cursor_hash is not None:
            now = await self.chain.block_hash(cursor)
            if now is not None and now != self.cursor_hash and self._running:
                cursor = self._rewind(cursor)
            elif now is None and self._running:
                head = await self.chain.block_number()
                if head < cursor:
                    # The block we passed is gone: the chain lost its newest blocks (a dev
                    # chain restarted from an older state save). Waiting until it grows past
                    # the cursor again would skip whatever the new blocks below it hold (a
                    # registration, on an idle dev chain, for good).
                    cursor = self._rewind(cursor, head)
        if self._rewind_check_due and self.on_rewind is not None and self._running:
            await self.on_rewind()
            self._rewind_check_due = False
        last = await self.chain.block_number() - self.confirmations
        if last <= cursor:
            if self._running:
                await self._check_not_behind(cursor)
                await self._finish_poll()
            return
        # The hash first: should a reorganisation replace block `last` while its events are
        # read, the next poll finds the hash changed and reads them again.
        last_hash = await self.chain.block_hash(last)
        if last_hash is None:
            return  # the chain got shorter meanwhile: the next poll sees how
        events = await self.chain.events(cursor + 1, last)
        if not self._running:
            return
        self._feed(events)
        # After the inputs above: their channel records are written first, so the cursor never
        # gets durable without them.
        self.cursor, self.cursor_hash = last, last_hash
        try:
            self.store.set_block_cursor(last, last_hash)
            flushed = self.store.flush()
            if flushed is not None:
                await flushed
        except StoreError as exc:
            # The session's store is broken (a full disk): the cursor moves on in memory, so
            # disputes are still followed and concluded; the next start reads again.
            if not self._store_failed:
                self._store_failed = True
                log.error("watcher: cannot record the block cursor ({error}); following the "
                          "chain from memory", error=exc)
        if self.on_passed is not None and self._running:
            await self.on_passed(last)
        await self._finish_poll()

    async def _finish_poll(self) -> None:
        await self._expire_challenges()
        self.polls += 1
        if self.polls % RECHECK_POLLS == 0 and self.cursor is not None:
            await self._recheck(self.cursor)

    async def _recheck(self, cursor: int) -> None:
        """Read the last `RECHECK_BLOCKS` blocks' events again and handle those the first
        reads left out."""
        first = max(self._recheck_floor + 1, cursor - RECHECK_BLOCKS + 1)
        if first > cursor:
            return
        read_again = getattr(self.chain, "events_again", self.chain.events)
        events = await read_again(first, cursor)
        missed = [e for e in events if _seen_key(e) not in self._seen]
        if missed and self._running:
            log.warn("watcher: the chain's answers left out {events} of blocks "
                     "{first}-{last}, found on reading them again; handling them now",
                     count=len(missed), events=plural(len(missed), "event"), first=first,
                     last=cursor)
            self._feed(missed)
        self._seen = {key: block for key, block in self._seen.items() if block >= first}

    def _feed(self, events: list[ChainEvent]) -> None:
        """Hand the events read to whoever takes them: the core, the funding waits, the
        intermediary."""
        channels = self.watched.channels
        for event in events:
            self._seen[_seen_key(event)] = event.block_number
        for i, event in enumerate(events):
            channel_id = event.channel_id
            if channel_id is None:
                continue
            same_tx = tuple(e for e in events[i + 1:i + 8] if e.tx_hash == event.tx_hash)
            if self.on_event is not None:
                self.on_event(event, same_tx)
            cid = ChannelID(channel_id)
            channel = channels.get(cid)
            if channel is None or channel.phase in TERMINAL:
                continue
            change = change_of(event, same_tx)
            if isinstance(change, Concluded):
                # What the chain paid, from the same transaction's PaidOut events (they follow
                # the Concluded event, after which the channel is no longer watched).
                change = Concluded(change.version, payouts_of(
                    e for e in events if e.tx_hash == event.tx_hash and e.name == "PaidOut"
                    and e.channel_id == channel_id))
            if change is None:
                if event.name == "Deposited" and self.on_deposit is not None:
                    self.on_deposit(cid)
                continue
            log.info("watcher: channel {channel_id}: {event} in block {block}",
                     channel_id="0x" + cid.hex(), event=_describe(event),
                     block=event.block_number)
            self.watched.chain_input(cid, change)

    def _rewind(self, cursor: int, head: int | None = None) -> int:
        """Block `cursor` was replaced, or is gone (the chain's newest block is `head`, below
        it): read the events again from `reorg_rewind` blocks before the older of the two
        (the core ignores what it has seen; what it missed, it gets now)."""
        start = max(0, (cursor if head is None else min(cursor, head)) - self.reorg_rewind)
        self.reorgs += 1
        # Once a minute at most: a node whose block hashes flap would write a line a poll.
        now = self._reactor.seconds()
        level, also = LogLevel.error, ""
        if now - self._rewind_said < FAILURE_REPEAT:
            level = LogLevel.debug
            self._rewinds_unsaid += 1
        else:
            if self._rewinds_unsaid:
                also = f" ({self._rewinds_unsaid} more since the last such line)"
            self._rewind_said, self._rewinds_unsaid = now, 0
        if head is None:
            log.emit(level, "watcher: block {block} is not the block it was when its events "
                     "were handled: a reorganisation deeper than the {confirmations} "
                     "confirmations (chain.confirmations). Reading the events again from "
                     "block {start}.{also}", block=cursor, confirmations=self.confirmations,
                     start=start, also=also)
        else:
            log.emit(level, "watcher: the chain's newest block {head} is below block {block}, "
                     "whose events were handled: it lost its newest blocks (a dev chain "
                     "restarted from an older state save) or a reorganisation shortened it. "
                     "Reading the events again from block {start}.{also}",
                     head=head, block=cursor, start=start, also=also)
        self.cursor, self.cursor_hash = start, None
        self._rewind_check_due = True
        self.chain.forget()
        # Before the events are read again: a dispute the core knows may be gone from the
        # chain, our refutation with it.
        for channel_id, channel in list(self.watched.channels.items()):
            if channel.phase is Phase.DISPUTED:
                self.watched.chain_input(channel_id, Reorganised())
        return start

    async def _check_not_behind(self, cursor: int) -> None:
        """Warn (once per head) when the chain is shorter than the cursor: a reset dev chain or
        another chain at the same URL. Events are not followed until it has grown past it."""
        head = await self.chain.block_number()
        if head < cursor and head != self._behind:
            self._behind = head
            log.error("watcher: the chain's newest block {head} is below the block cursor "
                      "{cursor} of this session: was the chain reset, or is this another "
                      "chain? Events are not followed until it passes the cursor.",
                      head=head, cursor=cursor)

    async def _expire_challenges(self) -> None:
        disputed = [c for c in self.watched.channels.values()
                    if c.phase is Phase.DISPUTED and c.dispute is not None]
        self._expiry_fed = {c.channel_id: self._expiry_fed[c.channel_id] for c in disputed
                            if c.channel_id in self._expiry_fed}
        if not disputed:
            return
        now = await self._chain_now()
        seconds = self._reactor.seconds()
        if self.mine is not None:
            # The dev chain's next block takes the wall clock's time, also after a restart of
            # ours, when the newest block was first seen only now (`_chain_now`).
            now = max(now, int(seconds))
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
            if self.mine is not None and self._head is not None \
                    and self._head[1] < dispute.timeout:
                await self.mine()
                self._head = None
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


def _seen_key(event: ChainEvent) -> tuple[int, int, bytes]:
    return event.block_number, event.log_index, event.tx_hash


def _describe(event: ChainEvent) -> str:
    args = event.args
    if event.name == "Registered":
        final = ", final" if args.get("isFinal") else ""
        return f"Registered version {args['version']}{final}, timeout {args['timeout']}"
    if event.name == "Concluded":
        return f"Concluded with version {args['version']}"
    return event.name
