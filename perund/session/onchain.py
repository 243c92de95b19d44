"""ChainSettlement: a session's funding and settlement through the chain backend.

It is the `Funder` and `Settler` of a `ChannelClient`: it deposits our share of a new channel
(never twice: what the contract already holds for us is skipped, also after a restart), waits
until every share is held, and submits `concludeFinal`, `register` and `conclude`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from perund.chain.account import Account
from perund.chain.backend import ChainBackend
from perund.chain.results import Phase, TxReceipt
from perund.channel import events as ev
from perund.channel.types import ChannelID
from perund.errors import PeerNotFunded, TxReverted

log = Logger(namespace="perund.settlement")


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _concluded_version(receipt: TxReceipt) -> int | None:
    for event in receipt.events_named("Concluded"):
        return int(event.args["version"])
    return None


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
    ) -> None:
        self._reactor = reactor
        self.chain = chain
        self.account = account
        self.poll_interval = poll_interval
        self.funding_timeout = funding_timeout
        self.conclude_grace = conclude_grace
        """How long the side that did not propose the final update waits for the other to
        conclude before it submits `concludeFinal` itself."""
        self._registered: dict[ChannelID, int] = {}
        """The version this session registered last, per channel."""
        self.receipts: list[TxReceipt] = []
        """Every transaction this session sent, in order (what it paid in gas is here)."""

    @property
    def fees_paid(self) -> int:
        """Wei spent on gas by this session's transactions so far."""
        return sum(receipt.fee for receipt in self.receipts)

    def _sleep(self, seconds: float) -> Deferred[None]:
        return deferLater(self._reactor, seconds, lambda: None)

    # -- Funder ---------------------------------------------------------------------------------

    def fund(self, event: ev.Fund) -> Deferred[None]:
        """Deposit our share of every asset (skipping what is held); wait for every share."""
        return Deferred.fromCoroutine(self._fund(event))

    async def _fund(self, event: ev.Fund) -> None:
        channel_id, index = event.channel_id, event.index
        for asset, row in zip(event.assets, event.balances, strict=True):
            need = row[index]
            if need == 0:
                continue
            held = (await self.chain.holdings(channel_id, asset))[index]
            if held >= need:
                log.info("channel {channel_id}: our deposit is already on-chain",
                         channel_id=_hex(channel_id))
                continue
            receipt = await self.chain.deposit(self.account, channel_id, index, asset,
                                               need - held)
            self.receipts.append(receipt)
            log.info("channel {channel_id}: deposited {amount} wei in block {block}",
                     channel_id=_hex(channel_id), amount=need - held, block=receipt.block_number)
        deadline = self._reactor.seconds() + self.funding_timeout
        while True:
            if await self._all_held(event):
                return
            if self._reactor.seconds() >= deadline:
                raise PeerNotFunded("the peer did not fund the channel before the deadline",
                                    peer=_hex(event.params.participants[1 - index]))
            await self._sleep(self.poll_interval)

    async def _all_held(self, event: ev.Fund) -> bool:
        for asset, row in zip(event.assets, event.balances, strict=True):
            held = await self.chain.holdings(event.channel_id, asset)
            if held[0] < row[0] or held[1] < row[1]:
                return False
        return True

    # -- Settler --------------------------------------------------------------------------------

    def conclude_final(self, event: ev.ConcludeFinal) -> Deferred[int | None]:
        """Submit concludeFinal now (primary) or after a grace period if nobody else did."""
        return Deferred.fromCoroutine(self._conclude_final(event))

    async def _conclude_final(self, event: ev.ConcludeFinal) -> int | None:
        if not event.primary:
            await self._sleep(self.conclude_grace)
            if await self._is_concluded(event.channel_id):
                return event.state.version
        try:
            receipt = await self.chain.conclude_final(self.account, event.params, event.state,
                                                      event.signatures)
            self.receipts.append(receipt)
        except TxReverted as exc:
            if exc.data.get("error") == "ChannelConcluded":
                # The peer was quicker: the channel is settled with this very final state.
                return event.state.version
            raise
        log.info("channel {channel_id} concluded with final version {version}, gas {gas}",
                 channel_id=_hex(event.channel_id), version=event.state.version,
                 gas=receipt.gas_used)
        return _concluded_version(receipt) or event.state.version

    async def _is_concluded(self, channel_id: ChannelID) -> bool:
        status = await self.chain.channel_status(channel_id)
        return status.phase is Phase.CONCLUDED

    def register(self, event: ev.Register) -> Deferred[int | None]:
        """Register our latest fully signed state; the dispute goes on (None)."""
        return Deferred.fromCoroutine(self._register(event))

    async def _register(self, event: ev.Register) -> int | None:
        receipt = await self.chain.register(self.account, event.params, event.state,
                                            event.signatures)
        self.receipts.append(receipt)
        self._registered[event.channel_id] = event.state.version
        log.info("channel {channel_id}: registered version {version}",
                 channel_id=_hex(event.channel_id), version=event.state.version)
        return _concluded_version(receipt)

    def conclude(self, event: ev.Conclude) -> Deferred[int | None]:
        """Conclude the registered state: at once if we registered it, else after
        `conclude_grace` and only if the peer has not concluded it meanwhile."""
        return Deferred.fromCoroutine(self._conclude(event))

    async def _conclude(self, event: ev.Conclude) -> int | None:
        if self._registered.get(event.channel_id) != event.state.version:
            # The peer registered this state and its node concludes it too: give it the first
            # go, so that two conclude transactions do not race and one pays for a revert.
            await self._sleep(self.conclude_grace)
            if await self._is_concluded(event.channel_id):
                return event.state.version
        try:
            receipt = await self.chain.conclude(self.account, event.params, event.state)
            self.receipts.append(receipt)
        except TxReverted as exc:
            if exc.data.get("error") == "ChannelConcluded":
                return event.state.version
            raise
        return _concluded_version(receipt) or event.state.version
