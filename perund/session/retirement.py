"""Retiring closed channels: a session's closed channels leave its memory, its channel list and
its start-up work once they have been closed for `limits.closed_channel_retention`
(docs/storage.md, "Retired channels").

Without this a node's memory, the decoding at each start and the chain reads of the start-up
check would grow with every channel it ever closed. A retired channel's record moves to the
store's file of retired channels (`SessionStore.retire`), where `channel_get` still finds it
(its payments stay in the history); it costs an index entry only.

A channel retires only when nothing may still need it:

- it is closed, and has been for the retention;
- a virtual channel: our parent ledger channel needs it no more (closed, or its latest state
  locks nothing for it);
- a ledger channel: no channel of the session that stays, and no virtual channel the session
  relays as intermediary, names it as a parent (a virtual channel's dispute reads its
  parents' records). The record an intermediary keeps of a virtual channel settled on-chain
  goes with its two parents, once both may retire.
- the chain holds none of its deposits (`lost_conclusions`): a conclusion the chain lost is
  settled again instead (as at a start), and only a retention past any reorganisation (15 min
  at least) makes retiring safe without looking after the conclusion any more.
"""

from __future__ import annotations

from typing import Any, Final

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from perund.chain.backend import ChainBackend
from perund.channel.changes import ConclusionLost
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import ChannelID, Params, VirtualParams
from perund.channel.virtual import parent_of
from perund.session.chain_check import log_lost_conclusion, lost_conclusions
from perund.session.client import ChannelClient
from perund.storage.store import SessionStore
from perund.words import plural

log = Logger()

MAX_CHECK_INTERVAL: Final = 3600.0
"""Seconds at most between two looks for channels to retire."""
BATCH: Final = 1000
"""Channels retired at most per look (one chain read for all of them); more wait for the next
look, which follows at once."""


class Retirement:
    """Looks every `min(retention / 4, 1 h)` for the session's closed channels due to retire
    (see the module) and retires them: `SessionStore.retire`, then `ChannelClient.release`."""

    def __init__(self, reactor: Any, *, chain: ChainBackend, client: ChannelClient,
                 store: SessionStore, retention: float, session_id: str) -> None:
        self._reactor = reactor
        self._chain = chain
        self._client = client
        self._store = store
        self.retention = retention
        self._session_id = session_id
        self.interval = max(1.0, min(retention / 4, MAX_CHECK_INTERVAL))
        self._next: DelayedCall | None = None
        self.stopped = False

    def start(self) -> None:
        """Look now, then every `interval`."""
        self._schedule(0)

    def stop(self) -> None:
        """Look no more (a look under way ends without retiring anything)."""
        self.stopped = True
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None

    def _schedule(self, delay: float) -> None:
        if not self.stopped:
            self._next = self._reactor.callLater(delay, self._look)

    def _look(self) -> None:
        self._next = None

        def then(retired: list[ChannelID]) -> None:
            self._schedule(0 if len(retired) >= BATCH else self.interval)

        def failed(failure: Any) -> None:
            log.failure("session {session_id}: retiring closed channels failed (tried again "
                        "later)", failure, session_id=self._session_id)
            self._schedule(self.interval)

        Deferred.fromCoroutine(self.retire_due()).addCallbacks(then, failed)

    def due(self) -> list[Channel]:
        """The closed channels that may retire now, save for the chain's word (at most
        `BATCH`): virtual ones first, so that their parents may follow in the same look."""
        closed = [c for c in self._client.channels.values()
                  if c.phase is Phase.CLOSED and self._closed_long_enough(c)]
        virtual = [c for c in closed
                   if type(c.params) is VirtualParams and self._parent_done_with(c)]
        leaving = {c.channel_id for c in virtual} | self.relayed_done()
        pinned = self._parents_in_use(leaving)
        ledger = [c for c in closed
                  if type(c.params) is Params and c.channel_id not in pinned]
        return (virtual + ledger)[:BATCH]

    def _closed_long_enough(self, channel: Channel) -> bool:
        closed_at = self._store.closed_at(channel.channel_id)
        return closed_at is not None and self._reactor.seconds() - closed_at >= self.retention

    def _parent_done_with(self, virtual: Channel) -> bool:
        """Whether our parent of closed virtual channel `virtual` needs it no more: the parent
        is closed (its conclusion paid the virtual channel's outcome), gone, or its latest
        fully signed state locks nothing for it (folded)."""
        parent = self._client.channels.get(parent_of(virtual))
        if parent is None or parent.phase is Phase.CLOSED:
            return True
        if parent.staged is not None or parent.abandoned is not None \
                or parent.current is None:
            return False  # an update of unknown outcome may still lock or fold it
        return all(lock.channel_id != virtual.channel_id
                   for lock in parent.current.state.locked)

    def relayed_done(self) -> set[ChannelID]:
        """The virtual channels the session relayed as intermediary (records kept after an
        on-chain settlement) whose two parents have both been closed for the retention."""
        channels = self._client.channels
        done = set()
        for vid, record in self._client.intermediary.records.items():
            parents = [channels.get(p) for p in record.proof.params.parents]
            if all(p is not None and p.phase is Phase.CLOSED and self._closed_long_enough(p)
                   for p in parents):
                done.add(vid)
        return done

    def _parents_in_use(self, leaving: set[ChannelID]) -> set[ChannelID]:
        """The ledger channels named as a parent by a virtual channel that stays: one of
        ours, or one the session relays as intermediary."""
        pinned: set[ChannelID] = set()
        for channel in self._client.channels.values():
            if type(channel.params) is VirtualParams and channel.channel_id not in leaving:
                pinned.update(channel.params.parents)
        for vid, record in self._client.intermediary.records.items():
            if vid not in leaving:
                pinned.update(record.proof.params.parents)
        return pinned

    async def retire_due(self) -> list[ChannelID]:
        """Retire what is due (`due`) and the chain holds nothing of; their IDs."""
        due = self.due()
        if not due or self._client.store_error is not None:
            return []  # a store that cannot write keeps what it holds (a full disk)
        unconcluded = set(await lost_conclusions(self._chain, due))
        if self.stopped or self._client.stopped or self._client.store_error is not None:
            return []
        for channel_id in unconcluded:
            # Found here rather than at a start or by the watcher: settled again all the same.
            if channel_id in self._client.channels:
                log_lost_conclusion(self._session_id, channel_id)
                self._client.chain_input(channel_id, ConclusionLost())
        # The channels may have changed while the chain answered (a conclusion found lost).
        due_now = {c.channel_id for c in self.due()}
        intermediary = self._client.intermediary
        for vid in self.relayed_done():
            parents = intermediary.records[vid].proof.params.parents
            if all(p in due_now and p not in unconcluded for p in parents):
                intermediary.forget(vid)
        retired = []
        for channel in due:
            channel_id = channel.channel_id
            if channel_id in unconcluded or channel_id not in due_now:
                continue
            self._store.retire(channel_id)
            self._client.release(channel_id)
            retired.append(channel_id)
        if retired:
            log.info("session {session_id}: {channels} closed for over {retention:g} s "
                     "retired (still found by channel_get)", session_id=self._session_id,
                     count=len(retired), channels=plural(len(retired), "channel"),
                     retention=self.retention)
        return retired
