"""ChainBackend: the node's one door to the chain (docs/chain.md).

Built in layers: `perund.chain.connection` (the Service, its thread pool, connecting, the
Adjudicator), `perund.chain.reads` (reads and events), and here what changes the chain: the
Adjudicator's transactions, token funding, and on a dev chain its clock and mining.
"""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import DeferredLock

from perund.chain import tokens
from perund.chain.abi import locked_value, params_value, state_value, virtual_params_value
from perund.chain.account import Account
from perund.chain.connection import deferred_api
from perund.chain.reads import ChainReads
from perund.chain.results import TxReceipt
from perund.channel.types import (
    ETH,
    Address,
    ChannelID,
    Params,
    Signature,
    State,
    VirtualProof,
)
from perund.errors import InvalidArgument


class ChainBackend(ChainReads):
    """web3 on a thread pool with a Deferred API: connect, deploy, transact, read, follow events.

    Build it with `ChainBackend(reactor, url=...)` for a JSON-RPC node or with `url=""` for the
    embedded dev chain; add it to the node's service tree (it starts and stops its pool with the
    service); then `connect()` before anything else.
    """

    # Transactions (each returns the receipt summary once mined; see TransactionSender)

    async def _transact(self, account: Account, tx_type: str, data: bytes, value: int = 0
                        ) -> TxReceipt:
        adjudicator = self.require_adjudicator()
        return await self.sender.transact(
            account, tx_type, adjudicator, data, value, events_of=adjudicator
        )

    @deferred_api
    async def await_earlier(self, account: Account) -> None:
        """Wait until the chain holds no unmined transaction of `account` (one sent before a
        restart, or one whose receipt timed out): TransactionSender.await_earlier."""
        await self.sender.await_earlier(account.address)

    @deferred_api
    async def deposit(
        self, account: Account, channel_id: ChannelID, index: int, asset: Address, amount: int
    ) -> TxReceipt:
        """Deposit `amount` of `asset` for participant `index` (0 or 1) of the channel."""
        if amount <= 0:
            raise InvalidArgument(
                "a deposit must be positive", name="amount", value=amount, requirement="> 0"
            )
        value = amount if asset == ETH else 0
        data = self.codec.encode_call("deposit", channel_id, index, asset, amount)
        return await self._transact(account, "deposit", data, value)

    @deferred_api
    async def register(
        self, account: Account, params: Params, state: State, sigs: Sequence[Signature]
    ) -> TxReceipt:
        """Register a fully signed `state`: starts a dispute, or refutes with a newer state."""
        data = self.codec.encode_call(
            "register", params_value(params), state_value(state), _two_sigs(sigs)
        )
        return await self._transact(account, "register", data)

    @deferred_api
    async def conclude(self, account: Account, params: Params, state: State) -> TxReceipt:
        """Conclude with the registered `state` after its timeout; pays out."""
        data = self.codec.encode_call("conclude", params_value(params), state_value(state))
        return await self._transact(account, "conclude", data)

    @deferred_api
    async def conclude_final(
        self, account: Account, params: Params, state: State, sigs: Sequence[Signature]
    ) -> TxReceipt:
        """Conclude with a fully signed final `state` at once; pays out."""
        data = self.codec.encode_call(
            "concludeFinal", params_value(params), state_value(state), _two_sigs(sigs)
        )
        return await self._transact(account, "concludeFinal", data)

    @deferred_api
    async def register_virtual(
        self, account: Account, params: Params, state: State, sigs: Sequence[Signature],
        proof: VirtualProof,
    ) -> TxReceipt:
        """`registerVirtualState`: register the parent `state` (with its locks; its signatures
        are not checked when it is the registered state) and, through it, the virtual
        channel's state in `proof` (start, refute, or nothing if registered already)."""
        data = self.codec.encode_call(
            "registerVirtualState", params_value(params), state_value(state),
            locked_value(state), _two_sigs(sigs), virtual_params_value(proof.params),
            state_value(proof.state), _two_sigs(proof.signatures))
        return await self._transact(account, "registerVirtualState", data)

    @deferred_api
    async def conclude_parent(self, account: Account, params: Params, state: State,
                              sub_states: Sequence[State]) -> TxReceipt:
        """`concludeParentState`: conclude the registered parent `state` with the registered,
        frozen state of each virtual channel it locks (`sub_states`, in `state.locked`
        order); pays out."""
        data = self.codec.encode_call(
            "concludeParentState", params_value(params), state_value(state),
            locked_value(state), [state_value(sub) for sub in sub_states])
        return await self._transact(account, "concludeParentState", data)

    @deferred_api
    async def fund(
        self, account: Account, channel_id: ChannelID, index: int,
        deposits: Sequence[tuple[Address, int]], *, use_permits: bool = True,
        sent: list[TxReceipt] | None = None,
    ) -> tuple[TxReceipt, ...]:
        """Deposit each `(asset, amount)` for participant `index` in one `fundParticipant`
        transaction (the ETH amounts as its value). A token whose allowance for the Adjudicator
        is short is allowed first: by a permit inside that transaction when the token takes
        one (and `use_permits`), else by `approve` transactions. The receipts, deposit last.

        One account funds one channel at a time: an allowance read, then granted and taken by
        the deposit, must not be overwritten or taken by another channel's funding between.
        Each receipt also goes to `sent` as soon as it is in: an approval's gas is spent even
        if the deposit after it fails."""
        lock = self._funding_locks.setdefault(account.address, DeferredLock())
        await lock.acquire()
        try:
            return await tokens.fund(self, account, channel_id, index, deposits, use_permits,
                                     sent)
        finally:
            lock.release()

    @deferred_api
    async def approve_token(self, account: Account, token: Address, amount: int
                            ) -> tuple[TxReceipt, ...]:
        """Let the Adjudicator take `amount` of `token` from `account` (approve transactions)."""
        allowed = await self.token_allowance(token, account.address)
        return await tokens.approve(self, account, token, amount, allowed)

    @deferred_api
    async def withdraw(self, account: Account, asset: Address = ETH) -> TxReceipt:
        """Withdraw what the contract owes `account` in `asset` (a payout it could not push)."""
        return await self._transact(account, "withdraw", self.codec.encode_call("withdraw", asset))

    @deferred_api
    async def send_ether(self, account: Account, to: Address, amount: int) -> TxReceipt:
        """A plain ether transfer (to fund another account from a dev account, say)."""
        return await self.sender.transact(account, "transfer", to, b"", amount)

    # Dev-chain control (tests, demo): the embedded chain and anvil

    @deferred_api
    async def advance_time(self, seconds: int) -> int:
        """Move the chain's clock forward by mining a block `seconds` later; its timestamp."""
        return await self._run(self.client.advance_time_blocking, seconds)

    @deferred_api
    async def set_automine(self, enabled: bool) -> None:
        """Mine every transaction at once (the default on dev chains) or only on `mine()`."""
        await self._run(self.client.set_automine_blocking, enabled)

    @deferred_api
    async def mine(self) -> None:
        """Mine one block with whatever transactions are pending."""
        await self._run(self.client.mine_blocking)


def _two_sigs(sigs: Sequence[Signature]) -> list[bytes]:
    if len(sigs) != 2:
        raise InvalidArgument(
            "a state needs both participants' signatures",
            name="sigs", value=len(sigs), requirement="exactly 2",
        )
    return [bytes(sig) for sig in sigs]
