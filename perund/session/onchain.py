"""ChainSettlement: a session's funding and settlement through the chain backend.

It is the `Funder` and `Settler` of a `ChannelClient`: it deposits our share of a new channel,
every asset in one `fundParticipant` transaction after the token allowances it needs (never
twice: what the contract already holds for us is skipped, also after a restart, once every
transaction of ours still in the pool is mined), waits
until every share is held `confirmations` blocks deep (woken by the watcher's Deposited events,
with a slow re-read as a fallback), and submits `concludeFinal`, `register` and `conclude`.
Should the chain lose our deposit after the channel opened (a reorganisation deeper than
`confirmations`), `deposit_again` makes it again the same way
(perund.session.missing_deposits).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import deferLater
from twisted.logger import Logger

from perund.chain.account import Account
from perund.chain.backend import ChainBackend
from perund.chain.node_rpc import BlockId
from perund.chain.payouts import payouts_of
from perund.chain.results import Phase, TxReceipt
from perund.channel import events as ev
from perund.channel.changes import Concluded, Registered
from perund.channel.records import Channel
from perund.channel.types import ETH, Address, ChannelID, Params, hex_address
from perund.errors import (
    FailedPrecondition,
    InsufficientFunds,
    Internal,
    InvalidContracts,
    PeerNotFunded,
    ProtocolError,
    TxReverted,
    TxTimedOut,
)
from perund.session.chain_check import AssetLabel, default_label, registered_already
from perund.session.unconfirmed import Unconfirmed
from perund.session.virtual_onchain import ConcludeParent, RegisterVirtual, VirtualChainCalls
from perund.words import asset_text, plural, utc_text

log = Logger(namespace="perund.settlement")

RECENT_BLOCKS = 256
"""How far back the peer's conclusion transaction is looked for (it happened moments ago)."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def concluded_by(receipt: TxReceipt) -> Concluded | None:
    """The conclusion a receipt shows, with the payouts its `PaidOut` events report; None if
    the transaction concluded nothing."""
    for event in receipt.events_named("Concluded"):
        return Concluded(int(event.args["version"]), payouts_of(receipt.events_named("PaidOut")))
    return None





def _wake(news: Deferred[None]) -> None:
    if not news.called:
        news.callback(None)


class ChainSettlement:
    """Funds and settles one session's channels from its on-chain account."""

    def __init__(
        self,
        reactor: Any,
        chain: ChainBackend,
        account: Account,
        *,
        poll_interval: float = 1.0,
        funding_timeout: float = 600.0,
        conclude_grace: float = 5.0,
        confirmations: int = 0,
        funding_recheck: float | None = None,
        use_permits: bool = True,
        asset_label: AssetLabel = default_label,
        refused_asset: Callable[[Address], str | None] | None = None,
    ) -> None:
        """`asset_label` names assets in the log (the node's currency table);
        `refused_asset` says why an asset gets no deposit of ours (a token the node disabled,
        `perund.node_assets`), or None if it may."""
        self._reactor = reactor
        self.asset_label = asset_label
        self.refused_asset = refused_asset
        self.chain = chain
        self.account = account
        self.poll_interval = poll_interval
        self.funding_timeout = funding_timeout
        self.confirmations = confirmations
        """A channel is funded once every share is held this many blocks deep: a deposit in
        a block that a reorganisation drops does not count."""
        self.funding_recheck = poll_interval if funding_recheck is None else funding_recheck
        """How often a funding wait reads the holdings without news of a deposit. Where a
        watcher reports Deposited events (`deposit_seen`), this is only a fallback."""
        self._deposit_news: dict[ChannelID, list[Deferred[None]]] = {}
        self.use_permits = use_permits
        """Allow token deposits by EIP-2612 permits where the token takes them (one
        transaction less); else, and for other tokens, by approve transactions."""
        self.conclude_grace = conclude_grace
        """How long the side that need not conclude (it did not propose the final update, or
        did not register the state) waits for the other's conclusion before it sends its own:
        the time for the other's transaction to be mined and seen (`conclude_grace_for`)."""
        self._registered: dict[ChannelID, int] = {}
        """The version this session registered last, per channel."""
        self.receipts: list[TxReceipt] = []
        """Every transaction this session sent, in order (what it paid in gas is here)."""
        self.unconfirmed = Unconfirmed()
        """The registrations and conclusions the chain showed in blocks the watcher had not
        passed yet (checked again once it has: perund.session.unconfirmed)."""
        self.record_share: Callable[[ev.Fund], None] | None = None
        """Keeps our share of each channel as its funding begins
        (perund.session.missing_deposits.OwnShares): should the chain lose our deposit once
        the channel is open, the same share is deposited again (`deposit_again`)."""
        self.confirmed_block: Callable[[], int | None] | None = None
        """The newest block the session's watcher has passed (its cursor), where there is a
        watcher: the deposits are counted there, so that a reorganisation that drops one
        afterwards is found (the watcher keeps that block's hash). Without it they are counted
        `confirmations` blocks below the newest."""
        self._virtual = VirtualChainCalls(
            chain, account, sleep=self._sleep,
            concluded_by_peer=self._concluded_by_peer,
            registered=self._registered,
            conclusion=lambda cid, version: Deferred.fromCoroutine(
                self._conclusion(cid, version)),
            mined=self._mined)

    @property
    def fees_paid(self) -> int:
        """Wei spent on gas by this session's transactions so far, the gap fillers sent to let
        them through included: what the account's balance lost beside the values sent."""
        return sum(receipt.total_fee for receipt in self.receipts)

    def _sleep(self, seconds: float) -> Deferred[None]:
        return deferLater(self._reactor, seconds, lambda: None)

    # -- Withdrawer (perund.session.withdrawals) -------------------------------------------------

    def withdraw_owed(self, asset: Address) -> Deferred[int]:
        """Withdraw what the Adjudicator owes our account in `asset` (payouts it could not
        send); fires with the amount (0: nothing owed, no transaction)."""
        return Deferred.fromCoroutine(self._withdraw_owed(asset))

    async def _withdraw_owed(self, asset: Address) -> int:
        owed = await self.chain.owed(self.account.address, asset)
        if owed == 0:
            return 0
        receipt = await self.chain.withdraw(self.account, asset)
        self.receipts.append(receipt)
        return owed

    # -- Funder ---------------------------------------------------------------------------------

    def fund(self, event: ev.Fund) -> Deferred[None]:
        """Deposit our share of every asset (skipping what is held); wait for every share."""
        return Deferred.fromCoroutine(self._fund(event))

    async def _fund(self, event: ev.Fund) -> None:
        channel_id, index = event.channel_id, event.index
        if self.record_share is not None:
            self.record_share(event)
        # One deadline for the deposit's tries and the wait for the peer's: the channel's
        # funding takes `funding_timeout` at most, however long our deposit took.
        deadline = self._reactor.seconds() + self.funding_timeout
        unmined: TxTimedOut | None = None
        try:
            await self._deposit_missing(event, deadline)
        except TxTimedOut as exc:
            # Not mined yet is not failed: our deposit, or an earlier one of ours, may still be
            # mined (a busy chain, a low tip), and giving up now would take a channel the chain
            # is about to fund for unfunded and dispute it. The funding wait below reads the
            # holdings, ours too.
            unmined = exc
            log.warn("channel {channel_id}: {why}; waiting for the funding until its deadline, "
                     "{until} (UTC)", channel_id=_hex(channel_id), why=exc, deadline=deadline,
                     until=utc_text(deadline))
        except TxReverted as exc:
            # The chain may hold our share all the same: an earlier deposit of ours was mined
            # just before (this one was then a second, and reverted).
            if await self._missing(event, log_held=False):
                raise
            log.warn("channel {channel_id}: our deposit is on-chain (an earlier transaction "
                     "of ours), though {why}", channel_id=_hex(channel_id), why=exc)
        while True:
            # Listen before reading: a deposit reported while the holdings are read is not
            # missed.
            news: Deferred[None] = Deferred()
            self._deposit_news.setdefault(channel_id, []).append(news)
            try:
                try:
                    if await self._all_held(event):
                        return
                except (ProtocolError, InvalidContracts) as exc:
                    # A read that failed says nothing of the deposits: read again, until the
                    # deadline (rather than take a channel funded meanwhile for unfunded).
                    log.warn("channel {channel_id}: reading the holdings failed ({why}); "
                             "reading again", channel_id=_hex(channel_id), why=exc)
                remaining = deadline - self._reactor.seconds()
                if remaining <= 0:
                    if await self._ours_missing(event):
                        if unmined is not None:
                            raise unmined
                        # Mined, and gone since: the peer is not the one to blame.
                        raise FailedPrecondition(
                            "the chain no longer holds our deposit, although it was mined (a "
                            "reorganisation dropped it)", channel_id=_hex(channel_id))
                    raise PeerNotFunded("the peer did not fund the channel before the deadline",
                                        peer=_hex(event.params.participants[1 - index]))
                await self._news_or_timeout(news, min(self.funding_recheck, remaining))
            finally:
                self._forget_news(channel_id, news)

    async def _ours_missing(self, event: ev.Fund) -> bool:
        """Whether the chain lacks some of our share; False when it cannot be read (the
        deadline's verdict then falls to the peer, as it did before the read)."""
        try:
            return bool(await self._missing(event, log_held=False))
        except (ProtocolError, InvalidContracts):
            return False

    def deposit_again(self, channel: Channel, share: tuple[tuple[Address, int], ...],
                      still: Callable[[], bool]) -> Deferred[list[tuple[Address, int]]]:
        """Deposit again what of our `share` (per asset, what we deposited) of the funded
        ledger `channel` the chain no longer holds: it lost the blocks of our deposit. As the
        funding does it (`_deposit_missing`): our earlier transactions waited for, the holdings
        read, only the shortfall sent, one transaction for every asset; nothing when `still()`,
        asked right before sending, says no (the channel began to settle). Fires with what was
        deposited."""
        params = channel.params
        if type(params) is not Params:
            return fail(Internal("a virtual channel holds no deposits of its own"))
        index = channel.index
        event = ev.Fund(channel.channel_id, params, index, tuple(asset for asset, _ in share),
                        tuple((amount, 0) if index == 0 else (0, amount) for _, amount in share))
        deadline = self._reactor.seconds() + self.funding_timeout
        return Deferred.fromCoroutine(self._deposit_missing(event, deadline, still=still))

    async def _deposit_missing(self, event: ev.Fund, deadline: float, *,
                               still: Callable[[], bool] | None = None,
                               ) -> list[tuple[Address, int]]:
        """Deposit what of our share the chain does not hold; what was deposited. A chain
        error of unknown outcome (a reply lost or cut short, an error from a load-balanced
        node) is tried again until the funding `deadline` (reactor seconds): each try first
        waits for our earlier transactions and reads the holdings, so a deposit that went out
        all the same is not made twice. With `still` (a deposit made again, `deposit_again`),
        nothing is sent once it says no, and the deposit is logged as a warning."""
        channel_id, index = event.channel_id, event.index
        while True:
            try:
                # A deposit of ours sent before a restart (or whose receipt timed out) may
                # still be in the pool, where the holdings read below does not see it: wait
                # for it, or the channel is funded twice (or our second deposit reverts and a
                # funded channel is taken for unfunded).
                await self.chain.await_earlier(self.account)
                deposits = await self._missing(event, log_held=still is None)
                if deposits and still is not None and not still():
                    log.info("channel {channel_id}: not depositing our share again: the "
                             "channel settles, or is no longer held",
                             channel_id=_hex(channel_id))
                    return []
                if deposits:
                    if still is None:  # a new channel's funding; a held one's share is owed
                        self._refuse_disabled(channel_id, deposits)
                    receipts = await self._deposit(channel_id, index, deposits)
                    shown = ", ".join(asset_text(amount, *self.asset_label(asset))
                                      for asset, amount in deposits)
                    fields = dict(channel_id=_hex(channel_id), shown=shown,
                                  deposits=[(hex_address(asset), amount)
                                            for asset, amount in deposits],
                                  block=receipts[-1].block_number, transactions=len(receipts),
                                  sent=plural(len(receipts), "transaction"),
                                  gas=sum(r.gas_used for r in receipts))
                    if still is None:
                        log.info("channel {channel_id}: deposited {shown} in block {block} "
                                 "({sent}, gas {gas})", **fields)
                    else:
                        # A person may want to know: the account paid the share a second
                        # time, and gets it back only with the channel's outcome.
                        log.warn("channel {channel_id}: deposited {shown} of our share again "
                                 "in block {block} ({sent}, gas {gas}): the chain had lost our "
                                 "deposit (a reorganisation deeper than chain.confirmations)",
                                 **fields)
                return deposits
            except (TxTimedOut, TxReverted, InsufficientFunds):
                raise
            except (ProtocolError, InvalidContracts) as exc:
                if self._reactor.seconds() + self.funding_recheck >= deadline:
                    raise
                log.warn("channel {channel_id}: depositing failed ({why}); trying again",
                         channel_id=_hex(channel_id), why=exc)
                await self._sleep(self.funding_recheck)

    def _refuse_disabled(self, channel_id: ChannelID,
                         deposits: list[tuple[Address, int]]) -> None:
        """FailedPrecondition if a token of `deposits` is one the node disabled: nothing of
        ours goes into a token whose address or decimals are in doubt."""
        if self.refused_asset is None:
            return
        for asset, _ in deposits:
            why = self.refused_asset(asset)
            if why is not None:
                label = self.asset_label(asset)[0]
                raise FailedPrecondition(
                    f"not depositing {label}: the node disabled it at its start ({why})",
                    channel_id=_hex(channel_id), asset=label)

    async def _missing(self, event: ev.Fund, *, log_held: bool) -> list[tuple[Address, int]]:
        """What of our share of each asset the chain does not hold yet (at "latest")."""
        channel_id, index = event.channel_id, event.index
        deposits: list[tuple[Address, int]] = []
        for asset, row in zip(event.assets, event.balances, strict=True):
            need = row[index]
            if need == 0:
                continue
            held = (await self.chain.holdings(channel_id, asset))[index]
            if held >= need:
                if log_held:
                    log.info("channel {channel_id}: our deposit of {asset} is already on-chain",
                             channel_id=_hex(channel_id), asset=hex_address(asset))
                continue
            deposits.append((asset, need - held))
        return deposits

    async def _deposit(self, channel_id: ChannelID, index: int,
                       deposits: list[tuple[Address, int]]) -> tuple[TxReceipt, ...]:
        """Our deposits; every receipt is in `self.receipts` as soon as it is in (an approval's
        gas counts even if the deposit after it fails)."""
        if len(deposits) == 1 and deposits[0][0] == ETH:
            # ETH alone: `deposit`, the cheapest call for it.
            receipt = await self.chain.deposit(self.account, channel_id, index, ETH,
                                               deposits[0][1])
            self.receipts.append(receipt)
            return (receipt,)
        # One fundParticipant for every asset; each token is allowed first, by a permit inside
        # it where the token takes one, else by approve transactions.
        return await self.chain.fund(self.account, channel_id, index, deposits,
                                     use_permits=self.use_permits, sent=self.receipts)

    def deposit_seen(self, channel_id: ChannelID) -> None:
        """A Deposited event of `channel_id`, `confirmations` deep (from the watcher): a
        funding wait on the channel reads the holdings now."""
        for news in self._deposit_news.pop(channel_id, []):
            _wake(news)

    async def _news_or_timeout(self, news: Deferred[None], seconds: float) -> None:
        timer = self._reactor.callLater(seconds, _wake, news)
        try:
            await news
        finally:
            if timer.active():
                timer.cancel()

    def _forget_news(self, channel_id: ChannelID, news: Deferred[None]) -> None:
        waiting = self._deposit_news.get(channel_id)
        if waiting is not None and news in waiting:
            waiting.remove(news)
            if not waiting:
                del self._deposit_news[channel_id]

    def cursor_moved(self) -> None:
        """The watcher passed more blocks: the funding waits read the holdings there now."""
        for channel_id in list(self._deposit_news):
            self.deposit_seen(channel_id)

    async def _all_held(self, event: ev.Fund) -> bool:
        block: BlockId = "latest"
        if self.confirmed_block is not None:
            cursor = self.confirmed_block()
            if cursor is None:
                return False  # the watcher has not started: nothing is confirmed yet
            block = cursor
        elif self.confirmations:
            block = max(0, await self.chain.block_number() - self.confirmations)
        for asset, row in zip(event.assets, event.balances, strict=True):
            held = await self.chain.holdings(event.channel_id, asset, block)
            if held[0] < row[0] or held[1] < row[1]:
                return False
        return True

    # -- Settler --------------------------------------------------------------------------------

    # Each call fires with the conclusion the chain shows (`Concluded` and the `PaidOut` events
    # of our receipt, or of the peer's transaction when it was quicker), or None when nothing is
    # concluded yet. A payout is reported only as the chain shows it, never assumed.

    def conclude_final(self, event: ev.ConcludeFinal) -> Deferred[Concluded | None]:
        """Submit concludeFinal now (primary) or after a grace period if nobody else did."""
        return Deferred.fromCoroutine(self._conclude_final(event))

    async def _conclude_final(self, event: ev.ConcludeFinal) -> Concluded | None:
        # Not primary: the peer proposed the final update, or either side may have (both
        # restarted while closing): `_patience` keeps the two from concluding together.
        if not event.primary and await self._concluded_by_peer(event.channel_id, event.params):
            return await self._conclusion(event.channel_id, event.state.version)
        try:
            receipt = await self.chain.conclude_final(self.account, event.params, event.state,
                                                      event.signatures)
        except TxReverted as exc:
            if exc.data.get("error") == "ChannelConcluded":  # the peer was quicker
                return await self._conclusion(event.channel_id, event.state.version)
            raise
        log.info("channel {channel_id} concluded with final version {version}, gas {gas}",
                 channel_id=_hex(event.channel_id), version=event.state.version,
                 gas=receipt.gas_used)
        return self._mined(receipt, event)

    async def _conclusion(self, channel_id: ChannelID, version: int) -> Concluded:
        """The peer's transaction concluded the channel just now: its Concluded and PaidOut
        events, looked up in the recent blocks; without them, the conclusion with its payouts
        unknown (never assumed)."""
        latest = await self.chain.block_number()
        events = await self.chain.events(max(0, latest - RECENT_BLOCKS), latest, [channel_id])
        for event in reversed(events):
            if event.name == "Concluded":
                # Read at the newest block: confirmed once the watcher has passed it.
                self.unconfirmed.concluded(channel_id, event.block_number)
                return Concluded(int(event.args["version"]), payouts_of(
                    e for e in events if e.tx_hash == event.tx_hash))
        # The status said concluded, the logs did not (yet): checked once the watcher has
        # passed the newest block as read here.
        self.unconfirmed.concluded(channel_id, latest)
        return Concluded(version, None)

    async def _is_concluded(self, channel_id: ChannelID) -> bool:
        status = await self.chain.channel_status(channel_id)
        return status.phase is Phase.CONCLUDED

    async def _concluded_by_peer(self, channel_id: ChannelID, params: Params) -> bool:
        """Whether `channel_id` (of `params`) is concluded within `_patience`, read every poll
        so that a conclusion ends the wait when it is seen. The side that need not conclude
        gives the other the first go: two transactions in one block would make one pay for a
        revert."""
        deadline = self._reactor.seconds() + self._patience(params)
        while not await self._is_concluded(channel_id):
            left = deadline - self._reactor.seconds()
            if left <= 0:
                return False
            await self._sleep(min(self.poll_interval, left))
        return True

    def _patience(self, params: Params) -> float:
        """How long we wait for the peer to conclude a state we do not know we registered (or
        proposed as final): the grace, or twice it when the channel lists our receiver second.
        Who registered is known in memory only (`_registered`), and a restart while closing
        makes neither side the proposer of the final state; then equal waits would end
        together with a conclusion from each side, one of them reverting."""
        ours = self.account.address
        second = params.receivers[1] == ours and params.receivers[0] != ours
        return 2 * self.conclude_grace if second else self.conclude_grace

    def register(self, event: ev.Register) -> Deferred[Concluded | Registered | None]:
        """Register our latest fully signed state; the dispute goes on (None)."""
        return Deferred.fromCoroutine(self._register(event))

    async def _register(self, event: ev.Register) -> Concluded | Registered | None:
        # A registration of ours sent before a restart may still be in the pool: once it is
        # mined, the status read below shows it and spares a second one.
        with contextlib.suppress(TxTimedOut):
            await self.chain.await_earlier(self.account)
        status = await self.chain.channel_status(event.channel_id)
        if status.phase is Phase.DISPUTE and status.version >= event.state.version:
            # Registered already (ours again after a restart or a reorganisation, or a newer
            # one): sending it would only revert.
            log.info("channel {channel_id}: version {version} is registered already",
                     channel_id=_hex(event.channel_id), version=status.version)
            return registered_already(status, event.state)
        params = event.params
        if type(params) is not Params:  # pragma: no cover - virtual channels: virtual_onchain
            raise Internal("a virtual channel is registered through its parent")
        receipt = await self.chain.register(self.account, params, event.state, event.signatures)
        self._registered[event.channel_id] = event.state.version
        log.info("channel {channel_id}: registered version {version}",
                 channel_id=_hex(event.channel_id), version=event.state.version)
        return self._mined(receipt, event)

    def register_virtual(self, cmd: RegisterVirtual) -> Deferred[Concluded | Registered | None]:
        """Register a virtual channel's state through its parent (`registerVirtualState`)."""
        return Deferred.fromCoroutine(self._virtual.register_virtual(cmd))

    def conclude_parent(self, cmd: ConcludeParent) -> Deferred[Concluded | None]:
        """Conclude a parent with its virtual channels (`concludeParentState`)."""
        return Deferred.fromCoroutine(self._virtual.conclude_parent(cmd))

    def conclude(self, event: ev.Conclude) -> Deferred[Concluded | None]:
        """Conclude the registered state: at once if we registered it, else after
        `conclude_grace` and only if the peer has not concluded it meanwhile."""
        return Deferred.fromCoroutine(self._conclude(event))

    async def _conclude(self, event: ev.Conclude) -> Concluded | None:
        params = event.params
        if type(params) is not Params:  # pragma: no cover - virtual channels: virtual_onchain
            raise Internal("a virtual channel is concluded with its parents")
        # If the peer registered this state, its node concludes it too.
        if (self._registered.get(event.channel_id) != event.state.version
                and await self._concluded_by_peer(event.channel_id, params)):
            return await self._conclusion(event.channel_id, event.state.version)
        try:
            receipt = await self.chain.conclude(self.account, params, event.state)
        except TxReverted as exc:
            if exc.data.get("error") == "ChannelConcluded":
                return await self._conclusion(event.channel_id, event.state.version)
            raise
        return self._mined(receipt, event)

    def _mined(self, receipt: TxReceipt, command: object) -> Concluded | None:
        """A settlement transaction of ours is mined: its receipt is kept, what it registered
        or concluded is noted until the watcher has passed its block (`unconfirmed`), and the
        conclusion it shows, if any, is returned (`concluded_by`)."""
        self.receipts.append(receipt)
        if isinstance(command, ev.Register | RegisterVirtual):
            self.unconfirmed.registered(command, receipt.block_number)
        for event in receipt.events_named("Concluded"):
            if event.channel_id is not None:
                self.unconfirmed.concluded(ChannelID(event.channel_id), receipt.block_number)
        return concluded_by(receipt)
