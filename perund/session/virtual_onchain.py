"""The on-chain side of virtual channels: registering a virtual channel through a parent ledger
(`registerVirtualState`) and concluding a parent with its virtual channels
(`concludeParentState`), docs/protocol.md "What the contract enforces".

The client's virtual parts turn the core's `Register` and `Conclude` of a virtual channel, or
of a ledger state with locks, into these commands; `ChainDuties` sends them (retried while they
fail for a passing reason) through `ChainSettlement`, which runs them here.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from perund.chain.account import Account
from perund.chain.backend import ChainBackend
from perund.chain.results import Phase, TxReceipt
from perund.channel.changes import Concluded, Registered
from perund.channel.types import ChannelID, Params, Signature, State, VirtualProof
from perund.errors import TxReverted
from perund.session.chain_check import registered_already
from perund.words import plural

log = Logger(namespace="perund.settlement")


@dataclass(frozen=True, slots=True)
class RegisterVirtual:
    """Register the parent ledger's `state` (with its locks) and, through it, the virtual
    channel state in `proof`. `signatures` may be anything when `state` is the registered one
    (the contract checks them only for a new registration)."""

    channel_id: ChannelID
    """The parent's ID (the duty is dropped once the parent is settled)."""
    params: Params
    state: State
    signatures: tuple[Signature, Signature]
    proof: VirtualProof


@dataclass(frozen=True, slots=True)
class ConcludeParent:
    """Conclude the registered parent `state` with `sub_states`, the registered state of each
    virtual channel it locks (in `state.locked` order), once chain time reaches `not_before`
    (the latest of the virtual channels' timeouts: they are frozen then)."""

    channel_id: ChannelID
    params: Params
    state: State
    sub_states: tuple[State, ...]
    not_before: int


class VirtualChainCalls:
    """Sends the virtual-channel transactions of one session's account (module doc)."""

    def __init__(self, chain: ChainBackend, account: Account, *,
                 sleep: Callable[[float], Deferred[None]],
                 concluded_by_peer: Callable[[ChannelID, Params], Coroutine[Any, Any, bool]],
                 registered: dict[ChannelID, int],
                 conclusion: Callable[[ChannelID, int], Deferred[Concluded]],
                 mined: Callable[[TxReceipt, object], Concluded | None]) -> None:
        self._chain = chain
        self._account = account
        self._sleep = sleep
        self._concluded_by_peer = concluded_by_peer
        self._registered = registered
        self._conclusion = conclusion
        self._mined = mined
        """Told of each mined transaction with its command; the conclusion it shows."""
        self._concluding: set[ChannelID] = set()
        """Parents whose conclusion is under way (the watcher asks again while it waits)."""

    async def register_virtual(self, cmd: RegisterVirtual) -> Concluded | Registered | None:
        """`registerVirtualState`, unless both records are on the chain already."""
        vid = cmd.proof.state.channel_id
        parent, virtual = await self._chain.channel_status(cmd.channel_id), \
            await self._chain.channel_status(vid)
        if parent.phase is Phase.CONCLUDED:
            return await self._conclusion(cmd.channel_id, parent.version)
        if (parent.phase is Phase.DISPUTE and parent.version >= cmd.state.version
                and virtual.phase is Phase.DISPUTE
                and virtual.version >= cmd.proof.state.version):
            log.info("virtual channel {vid}: version {version} is registered already",
                     vid="0x" + vid.hex(), version=virtual.version)
            return registered_already(parent, cmd.state)
        receipt = await self._chain.register_virtual(self._account, cmd.params, cmd.state,
                                                     cmd.signatures, cmd.proof)
        self._registered[cmd.channel_id] = cmd.state.version
        log.info("registered virtual channel {vid} version {version} through channel "
                 "{channel_id} version {parent}, gas {gas}", vid="0x" + vid.hex(),
                 version=cmd.proof.state.version, channel_id="0x" + cmd.channel_id.hex(),
                 parent=cmd.state.version, gas=receipt.gas_used)
        return self._mined(receipt, cmd)

    async def conclude_parent(self, cmd: ConcludeParent) -> Concluded | None:
        """`concludeParentState` once every virtual channel is frozen: at once if we
        registered the parent, else after the grace period and only if nobody did. One at a
        time per parent (None while one is under way)."""
        if cmd.channel_id in self._concluding:
            return None
        self._concluding.add(cmd.channel_id)
        try:
            return await self._conclude_parent(cmd)
        finally:
            self._concluding.discard(cmd.channel_id)

    async def _conclude_parent(self, cmd: ConcludeParent) -> Concluded | None:
        wait = cmd.not_before - await self._chain.chain_time()
        if wait >= 0:
            # The next block's timestamp must pass the timeout; dev chains mine on demand.
            await self._sleep(wait + 1)
        if (self._registered.get(cmd.channel_id) != cmd.state.version
                and await self._concluded_by_peer(cmd.channel_id, cmd.params)):
            return await self._conclusion(cmd.channel_id, cmd.state.version)
        try:
            receipt = await self._chain.conclude_parent(self._account, cmd.params, cmd.state,
                                                        cmd.sub_states)
        except TxReverted as exc:
            if exc.data.get("error") == "ChannelConcluded":
                return await self._conclusion(cmd.channel_id, cmd.state.version)
            raise
        log.info("channel {channel_id} concluded with {virtual}, gas {gas}",
                 channel_id="0x" + cmd.channel_id.hex(), count=len(cmd.sub_states),
                 virtual=plural(len(cmd.sub_states), "virtual channel"),
                 gas=receipt.gas_used)
        return self._mined(receipt, cmd)
