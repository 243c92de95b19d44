"""Channels whose deposits the chain stopped holding while the session ran.

At a start the chain check (`perund.session.chain_check`) refuses to resume a channel whose
deposits the chain lacks. While the node runs, the watcher notices the same loss only as a
rewind: blocks it had read are replaced or gone (a reorganisation deeper than
`chain.confirmations`, an external dev chain restarted from an older save). Then, as at a
start, the funded channels' holdings are read; each channel that falls short is held here:

- it takes no update, ours or the peer's (a payment on it would move money the chain does not
  hold, and its payee's user would be told of it), and it does not close (a close would
  conclude a channel that pays nothing, or less than its state says), but by force with the
  user's consent when only the peer's share is missing (`perund.session.held_close`);
- the loss is logged as critical, once, naming the channel and the amounts;
- what of **our** share is missing is deposited again, by the funding's own code
  (`ChainSettlement.deposit_again`: our earlier transactions waited for, the holdings read,
  only the shortfall sent), while the channel is open or updating: we agreed to that deposit
  and its transaction is simply gone. The peer's missing share is the peer's to deposit again;
  the channel stays held until it does;
- its holdings are read again after every later rewind, at each deposit the watcher reports
  for it, and every `recheck` seconds: once the chain holds the deposits again (the blocks
  came back, or the deposits were made again), the channel is released.

Our share is what we deposited (version 0's balance at our index), which the channel's record
no longer has once a payment moved its balances: `OwnShares` keeps it in the store from the
first funding attempt until the channel ends.

A node restarted meanwhile meets the loss in its start-up check, which asks the operator.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.chain.backend import ChainBackend
from perund.channel import events as ev
from perund.channel.phases import TERMINAL, Phase
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID, Params
from perund.errors import FailedPrecondition, PerundError
from perund.session.chain_check import AssetLabel, Shortfall, default_label, shortfalls
from perund.session.notices import ChannelNotice, Notice

log = Logger(namespace="perund.session")

RECHECK_SECONDS = 30.0
"""How often the holdings of held channels are read again without other news (and a failed
deposit of our share tried again)."""

SHARE_PREFIX = "deposit:"
"""Store meta names of our deposit into each channel this session funds (`OwnShares`)."""

REDEPOSIT_PHASES = frozenset({Phase.OPEN, Phase.UPDATING})
"""Phases in which our lost share is deposited again: the channel was funded and goes on. A
settling channel gets none (its outcome is being fixed; a deposit mined after its conclusion
would revert), nor a closed one."""

Share = tuple[tuple[Address, int], ...]
"""What we deposit into a channel: per asset, our amount."""

Redeposit = Callable[[Channel, Share, Callable[[], bool]], Deferred[list[tuple[Address, int]]]]
"""Deposit what of our share of a channel the chain lacks, unless the predicate says no more
right before sending; fires with what was deposited (`ChainSettlement.deposit_again`)."""


class MetaStore(Protocol):
    """The part of a session store `OwnShares` uses (its small named values)."""

    def meta(self, name: str) -> bytes | None:
        """The value under `name`, or None."""

    def set_meta(self, name: str, value: bytes) -> None:
        """Store `value` under `name`."""

    def delete_meta(self, name: str) -> None:
        """Forget the value under `name`, if any."""

    def metas(self, prefix: str) -> dict[str, bytes]:
        """Every value whose name starts with `prefix`."""


def _name(channel_id: ChannelID) -> str:
    return SHARE_PREFIX + channel_id.hex()


class OwnShares:
    """Our deposit into each ledger channel this session funds, kept in the store (one small
    value a channel, `deposit:<channel ID hex>` = `[["0x<asset>", "<amount>"], ...]`) from its
    first funding attempt until it ends."""

    def __init__(self, store: MetaStore) -> None:
        self._store = store

    def record(self, event: ev.Fund) -> None:
        """Keep our share of the channel `event` funds (written with the store's next commit:
        the channel's own record of being funded comes after it)."""
        value = json.dumps([["0x" + asset.hex(), str(row[event.index])]
                            for asset, row in zip(event.assets, event.balances, strict=True)],
                           separators=(",", ":")).encode()
        name = _name(event.channel_id)
        if self._store.meta(name) != value:
            self._store.set_meta(name, value)

    def share(self, channel: Channel) -> Share | None:
        """Our deposit into `channel`, as recorded; for a channel funded before shares were
        recorded, its state's balances while it has taken no update (version 0); else None:
        this node cannot tell."""
        raw = self._store.meta(_name(channel.channel_id))
        if raw is not None:
            try:
                return tuple((Address(bytes.fromhex(asset[2:])), int(amount))
                             for asset, amount in json.loads(raw))
            except (ValueError, TypeError):
                log.warn("channel {channel_id}: the record of our deposit is unreadable; "
                         "ignored", channel_id="0x" + channel.channel_id.hex())
                return None
        current = channel.current
        if current is None or current.state.version != 0 or current.state.locked:
            return None
        return tuple((asset, row[channel.index])
                     for asset, row in zip(current.state.assets, current.state.balances,
                                           strict=True))

    def forget(self, channel_id: ChannelID) -> None:
        """The channel ended: its share is needed no more."""
        self._store.delete_meta(_name(channel_id))

    def observe(self, notice: Notice) -> None:
        """A client observer: forgets the share of a channel that closed (or was lost)."""
        if isinstance(notice, ChannelNotice) and notice.channel.phase in TERMINAL:
            self.forget(notice.channel.channel_id)

    def prune(self, live: Callable[[ChannelID], bool]) -> None:
        """Forget the shares of channels that are not `live` (closed, retired) at an open."""
        for name in self._store.metas(SHARE_PREFIX):
            try:
                channel_id = ChannelID(bytes.fromhex(name[len(SHARE_PREFIX):]))
            except ValueError:
                channel_id = ChannelID(b"")
            if not live(channel_id):
                self._store.delete_meta(name)


@dataclass(frozen=True, slots=True)
class Lack:
    """One asset a held channel lacks: the shortfall, and how much of it is our share (None:
    this node cannot tell its share; the rest is the peer's); `ours_held`: what the chain
    holds of our deposit (read with `ours`: None when that is None)."""

    shortfall: Shortfall
    ours: int | None
    ours_held: int | None = None

    @property
    def peers(self) -> int | None:
        """How much of the shortfall is the peer's share (None: unknown)."""
        if self.ours is None:
            return None
        return self.shortfall.expected - self.shortfall.held - self.ours


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a channel is held: what it lacks, per asset."""

    lacks: tuple[Lack, ...]

    def text(self) -> str:
        """`2.5 ETH expected, 0 ETH held; 10 PRN expected, 4 PRN held`."""
        return "; ".join(f"{lack.shortfall.amount(lack.shortfall.expected)} expected, "
                         f"{lack.shortfall.amount(lack.shortfall.held)} held"
                         for lack in self.lacks)

    def ours_missing(self) -> bool:
        """Whether some of the missing deposits are ours."""
        return any(lack.ours for lack in self.lacks)

    def peers_only(self) -> bool:
        """Whether only the peer's share is missing, as far as this node can tell (then a
        forced close may pay each side its own deposit back: perund.session.held_close)."""
        return all(lack.ours == 0 for lack in self.lacks)

    def whose(self) -> str:
        """Who deposits what again, in words (after a sentence that ends with a period)."""
        said = []
        ours = [lack.shortfall.amount(lack.ours) for lack in self.lacks if lack.ours]
        if ours:
            said.append(f"This node deposits our share again ({', '.join(ours)}).")
        peers = [lack.shortfall.amount(amount) for lack in self.lacks
                 if (amount := lack.peers) is not None and amount > 0]
        if peers:
            said.append(f"The peer's share ({', '.join(peers)}) is the peer's to deposit "
                        "again: the channel stays held until it does.")
            if self.peers_only():
                said.append("Only a forced close is possible meanwhile, on the terms of a "
                            "channel that holds less than its state: each side gets back "
                            "exactly what it deposited, whatever the balances say.")
        if any(lack.ours is None for lack in self.lacks):
            said.append("This node cannot tell whose share is missing (no record of its own "
                        "deposit: the channel was funded by an older perund and has taken "
                        "updates since): the channel stays held until the deposits are back.")
        return " ".join(said)


class MissingDeposits:
    """The session's channels held for missing deposits (module doc)."""

    def __init__(self, reactor: Any, chain: ChainBackend,
                 channels: Callable[[], Iterable[Channel]], *, session_id: str,
                 label: AssetLabel = default_label, recheck: float = RECHECK_SECONDS,
                 shares: OwnShares | None = None, redeposit: Redeposit | None = None,
                 channel: Callable[[ChannelID], Channel | None] | None = None) -> None:
        """`shares` and `redeposit` let our lost share be deposited again (without them
        nothing is deposited); `channel` finds a channel by ID (default: among `channels`)."""
        self._reactor = reactor
        self._chain = chain
        self._channels = channels
        self._channel = channel or (lambda cid: next(
            (c for c in channels() if c.channel_id == cid), None))
        self._session_id = session_id
        self._label = label
        self._recheck = recheck
        self._shares = shares
        self._redeposit = redeposit
        self.held: dict[ChannelID, Hold] = {}
        """Held channels, with what they lack."""
        self._redepositing: set[ChannelID] = set()
        self._timer: DelayedCall | None = None
        self._running = False
        self._stopped = False
        self._waiting: list[Deferred[None]] = []

    def refusal(self, channel_id: ChannelID) -> FailedPrecondition | None:
        """Why `channel_id` takes no update and does not close now, or None."""
        hold = self.held.get(channel_id)
        if hold is None:
            return None
        closes = "closes only by force" if hold.peers_only() else "does not close"
        return FailedPrecondition(
            f"the chain no longer holds this channel's deposits ({hold.text()}): it lost the "
            f"blocks that held them. The channel takes no update and {closes} until "
            f"they are back. {hold.whose()}".rstrip(), channel_id="0x" + channel_id.hex())

    def missing(self, channel_id: ChannelID) -> tuple[Shortfall, ...]:
        """What the held channel `channel_id` lacks, per asset (empty: it is not held)."""
        hold = self.held.get(channel_id)
        return () if hold is None else tuple(lack.shortfall for lack in hold.lacks)

    def check(self) -> Deferred[None]:
        """Read the holdings of every funded channel (after a rewind); hold those short, and
        deposit our missing share of them again (in the background). Fires when the holdings
        are read (never with an error: a failed read is logged and tried again later); a
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
        """Stop reading again, and deposit nothing more."""
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
        channels = list(self._channels())
        found = await shortfalls(self._chain, channels, self._label)
        short: dict[ChannelID, list[Shortfall]] = {}
        for shortfall in found:
            short.setdefault(shortfall.channel_id, []).append(shortfall)
        by_id = {c.channel_id: c for c in channels if c.channel_id in short}
        for channel_id, parts in short.items():
            hold = Hold(await self._lacks(by_id[channel_id], parts))
            if channel_id not in self.held:
                log.critical(
                    "session {session_id}: the chain no longer holds the deposits of channel "
                    "{channel_id} ({lacks}): it lost the blocks that held them (a "
                    "reorganisation deeper than chain.confirmations, or a chain restarted "
                    "from an older state). The channel takes no update until they are back. "
                    "{whose}", session_id=self._session_id, channel_id="0x" + channel_id.hex(),
                    lacks=hold.text(), whose=hold.whose())
            self.held[channel_id] = hold
        for channel_id in [c for c in self.held if c not in short]:
            del self.held[channel_id]
            settling = self._channel(channel_id)
            if settling is not None and settling.phase not in REDEPOSIT_PHASES:
                # A forced close on the underfunded terms (perund.session.held_close), or a
                # dispute: a settling channel is not looked at for shortfalls any more.
                log.info("session {session_id}: channel {channel_id} is settling on-chain: "
                         "it is no longer held; its conclusion pays what the chain holds "
                         "then (each side its own deposit while the deposits fall short)",
                         session_id=self._session_id, channel_id="0x" + channel_id.hex())
                continue
            log.warn("session {session_id}: the chain holds the deposits of channel "
                     "{channel_id} again: it takes updates again",
                     session_id=self._session_id, channel_id="0x" + channel_id.hex())
        for channel_id, hold in self.held.items():
            self._deposit_ours(by_id[channel_id], hold)

    async def _lacks(self, channel: Channel, parts: list[Shortfall]) -> tuple[Lack, ...]:
        """`parts` with how much of each is our share: our deposit less what the chain holds
        of it (read per participant, for the held channels only)."""
        share = None if self._shares is None else self._shares.share(channel)
        if share is None:
            return tuple(Lack(part, None) for part in parts)
        ours = dict(share)
        lacks = []
        for part in parts:
            held = (await self._chain.holdings(part.channel_id, part.asset))[channel.index]
            missing = max(0, ours.get(part.asset, 0) - held)
            lacks.append(Lack(part, min(missing, part.expected - part.held), held))
        return tuple(lacks)

    def _may_deposit(self, channel_id: ChannelID) -> bool:
        """Whether our share of `channel_id` may still be deposited again (asked right before
        the transaction is sent): it is held, open or updating, and the session runs."""
        channel = self._channel(channel_id)
        return (not self._stopped and channel_id in self.held and channel is not None
                and channel.phase in REDEPOSIT_PHASES)

    def _deposit_ours(self, channel: Channel, hold: Hold) -> None:
        channel_id = channel.channel_id
        if (self._redeposit is None or self._shares is None or not hold.ours_missing()
                or channel_id in self._redepositing or type(channel.params) is not Params
                or not self._may_deposit(channel_id)):
            return
        share = self._shares.share(channel)
        if share is None:  # pragma: no cover - `ours_missing` needs a share
            return
        # One deposit at a time per channel; the next check tries again once it is over.
        self._redepositing.add(channel_id)
        Deferred.fromCoroutine(self._deposit_again(channel, share)).addErrback(
            lambda failure: log.failure("session {session_id}: depositing our share of "
                                        "channel {channel_id} again failed",
                                        failure, session_id=self._session_id,
                                        channel_id="0x" + channel_id.hex()))

    async def _deposit_again(self, channel: Channel, share: Share) -> None:
        channel_id = channel.channel_id
        assert self._redeposit is not None
        try:
            made = await self._redeposit(channel, share,
                                         lambda: self._may_deposit(channel_id))
        except PerundError as exc:
            log.error("session {session_id}: depositing our share of channel {channel_id} "
                      "again failed ({why}); trying again in {seconds:g} s",
                      session_id=self._session_id, channel_id="0x" + channel_id.hex(),
                      why=exc, seconds=self._recheck)
            return
        finally:
            self._redepositing.discard(channel_id)
        if made and not self._stopped:
            self.check()
