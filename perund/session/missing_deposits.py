"""Channels whose deposits the chain stopped holding while the session ran.

At a start the chain check (`perund.session.chain_check`) refuses to resume a channel whose
deposits the chain lacks. While the node runs, the watcher notices the same loss only as a
rewind: blocks it had read are replaced or gone (a reorganisation deeper than
`chain.confirmations`, an external dev chain restarted from an older save). Then, as at a
start, the funded channels' holdings are read; each channel that falls short is held here:

- it takes no update, ours or the peer's (a payment on it would move money the chain does not
  hold, and its payee's user would be told of it), and it does not close (a close would
  conclude a channel that pays nothing, or less than its state says);
- the loss is logged as critical, once, naming the channel and the amounts;
- its holdings are read again after every later rewind, at each deposit the watcher reports
  for it, and every `recheck` seconds: once the chain holds the deposits again (the blocks
  came back, or the deposits were made again), the channel is released.

A node restarted meanwhile meets the loss in its start-up check, which asks the operator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.chain.backend import ChainBackend
from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.errors import FailedPrecondition
from perund.session.chain_check import AssetLabel, Shortfall, default_label, shortfalls

log = Logger(namespace="perund.session")

RECHECK_SECONDS = 30.0
"""How often the holdings of held channels are read again without other news."""


class MissingDeposits:
    """The session's channels held for missing deposits (module doc)."""

    def __init__(self, reactor: Any, chain: ChainBackend,
                 channels: Callable[[], Iterable[Channel]], *, session_id: str,
                 label: AssetLabel = default_label, recheck: float = RECHECK_SECONDS) -> None:
        self._reactor = reactor
        self._chain = chain
        self._channels = channels
        self._session_id = session_id
        self._label = label
        self._recheck = recheck
        self.held: dict[ChannelID, str] = {}
        """Held channels, with what they lack (`2.5 ETH expected, 0 ETH held`)."""
        self._timer: DelayedCall | None = None
        self._running = False
        self._stopped = False
        self._waiting: list[Deferred[None]] = []

    def refusal(self, channel_id: ChannelID) -> FailedPrecondition | None:
        """Why `channel_id` takes no update and does not close now, or None."""
        lacks = self.held.get(channel_id)
        if lacks is None:
            return None
        return FailedPrecondition(
            f"the chain no longer holds this channel's deposits ({lacks}): it lost the blocks "
            "that held them. The channel takes no update and does not close until they are "
            "back", channel_id="0x" + channel_id.hex())

    def check(self) -> Deferred[None]:
        """Read the holdings of every funded channel (after a rewind); hold those short. Fires
        when done (never with an error: a failed read is logged and tried again later); a
        check already running answers for this one too."""
        done: Deferred[None] = Deferred()
        self._waiting.append(done)
        if not self._running:
            self._running = True
            Deferred.fromCoroutine(self._check()).addBoth(self._checked)
        return done

    def deposit_seen(self, channel_id: ChannelID) -> None:
        """A Deposited event of `channel_id`: a held channel's holdings are read again."""
        if channel_id in self.held:
            self.check()

    def stop(self) -> None:
        """Stop reading again."""
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _checked(self, result: object) -> None:
        self._running = False
        waiting, self._waiting = self._waiting, []
        failed = isinstance(result, Failure)
        if isinstance(result, Failure):
            log.warn("session {session_id}: reading the holdings after a rewind failed "
                     "({why}); reading them again in {seconds:g} s", session_id=self._session_id,
                     why=result.value, seconds=self._recheck)
        if (failed or self.held) and not self._stopped \
                and (self._timer is None or not self._timer.active()):
            self._timer = self._reactor.callLater(self._recheck, self.check)
        for done in waiting:
            done.callback(None)

    async def _check(self) -> None:
        found = await shortfalls(self._chain, list(self._channels()), self._label)
        short: dict[ChannelID, list[Shortfall]] = {}
        for shortfall in found:
            short.setdefault(shortfall.channel_id, []).append(shortfall)
        for channel_id, parts in short.items():
            lacks = "; ".join(f"{p.amount(p.expected)} expected, {p.amount(p.held)} held"
                              for p in parts)
            if channel_id not in self.held:
                log.critical(
                    "session {session_id}: the chain no longer holds the deposits of channel "
                    "{channel_id} ({lacks}): it lost the blocks that held them (a "
                    "reorganisation deeper than chain.confirmations, or a chain restarted "
                    "from an older state). The channel takes no update until they are back",
                    session_id=self._session_id, channel_id="0x" + channel_id.hex(),
                    lacks=lacks)
            self.held[channel_id] = lacks
        for channel_id in [c for c in self.held if c not in short]:
            del self.held[channel_id]
            log.warn("session {session_id}: the chain holds the deposits of channel "
                     "{channel_id} again: it takes updates again",
                     session_id=self._session_id, channel_id="0x" + channel_id.hex())
