"""What the integration tests read from anvil and do to it, shared by every test that settles
channels there: waiting, moving the chain's clock, what the Adjudicator paid out (from its
`PaidOut` events), an account's balance change net of its gas (from the receipts), a stored
channel record, and the classic cheat (registering an old state) refuted."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from twisted.internet import reactor

from perund.chain.account import Account, Eip1559Transaction
from perund.chain.anvil import Anvil, rpc_call
from perund.chain.backend import ChainBackend
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID, to_address
from perund.cli.generate import anvil_dev_key
from perund.storage.store import SessionStore

ETHER = 10**18


def wei(amount: str) -> int:
    """`amount` ETH in wei, exactly."""
    return int(Decimal(amount) * ETHER)


def until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll `condition` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def take_back_pending(url: str, dev_index: int) -> str:
    """What the holder of anvil's dev account `dev_index` does to take back the transaction it
    has waiting in the pool (anvil without automine): a transfer of nothing to itself with the
    same nonce and twice the fees replaces it, and once that is mined the nonce is taken for
    good, so the transaction taken back can never be mined. The hash taken back.

    A real peer's way to never fund a channel it accepted. Dropping the transaction from the
    pool (`anvil_dropTransaction`) no longer does: a node sends a transaction of its that the
    chain no longer knows, its nonce free, again as it was signed."""
    account = Account(anvil_dev_key(dev_index))
    sender = account.checksum_address.lower()

    def waiting() -> dict[str, Any] | None:
        pool = rpc_call(url, "txpool_content", []) or {}
        for address, txs in (pool.get("pending") or {}).items():
            if address.lower() == sender and txs:
                return dict(next(iter(txs.values())))
        return None

    pending = until(waiting, f"a transaction of dev account {dev_index} in the pool")
    cancel = Eip1559Transaction(
        chain_id=int(rpc_call(url, "eth_chainId"), 16), nonce=int(pending["nonce"], 16),
        max_priority_fee_per_gas=2 * int(pending["maxPriorityFeePerGas"], 16),
        max_fee_per_gas=2 * int(pending["maxFeePerGas"], 16), gas=21_000,
        to=account.address, value=0, data=b"")
    raw, _ = account.sign_transaction(cancel)
    rpc_call(url, "eth_sendRawTransaction", ["0x" + raw.hex()])
    return str(pending["hash"])


def stored_channel(store_dir: Path, channel_id: str) -> Channel:
    """The channel record in a (copied) store directory."""
    store = SessionStore(store_dir, reactor)
    try:
        channels = {c.channel_id: c for c in store.channels()}
    finally:
        store.close()
    return channels[ChannelID(bytes.fromhex(channel_id[2:]))]


def channel_id(hex_id: str) -> ChannelID:
    return ChannelID(bytes.fromhex(hex_id[2:]))


class ChainView:
    """The test's own view of anvil and the Adjudicator the daemons use."""

    def __init__(self, anvil: Anvil, adjudicator: str) -> None:
        self.anvil = anvil
        self.chain = ChainBackend(reactor, url=anvil.url, chain_id=anvil.chain_id,
                                  adjudicator=to_address(adjudicator))
        self.chain.startService()
        self._connected = False

    def travel(self, seconds: int) -> None:
        """Move the chain's clock forward and mine a block there."""
        rpc_call(self.anvil.url, "evm_increaseTime", [seconds])
        rpc_call(self.anvil.url, "evm_mine")

    async def connected(self) -> ChainBackend:
        if not self._connected:
            await self.chain.connect()
            self._connected = True
        return self.chain

    async def paid_per_asset(self, hex_id: str) -> dict[tuple[str, Address], int]:
        """What the contract paid out for the channel, per (receiver in lower-case hex,
        asset)."""
        chain = await self.connected()
        head = await chain.block_number()
        paid: dict[tuple[str, Address], int] = {}
        for event in await chain.events(0, head, [bytes.fromhex(hex_id[2:])]):
            if event.name == "PaidOut":
                key = ("0x" + bytes(event.args["receiver"]).hex(),
                       Address(bytes(event.args["asset"])))
                paid[key] = paid.get(key, 0) + int(event.args["amount"])
        return paid

    async def payouts(self, hex_id: str) -> dict[str, int]:
        """What the contract paid out for the channel, per receiver (lower-case hex), all
        assets together (the ETH-only tests)."""
        paid: dict[str, int] = {}
        for (receiver, _), amount in (await self.paid_per_asset(hex_id)).items():
            paid[receiver] = paid.get(receiver, 0) + amount
        return paid

    async def check_payouts(self, hex_id: str, expected: dict[str, int]) -> None:
        """The channel paid exactly `expected` (receiver → wei; zeros left out) and holds
        nothing any more."""
        paid = await self.payouts(hex_id)
        assert paid == {r.lower(): a for r, a in expected.items() if a}, paid
        assert await self.chain.holdings(channel_id(hex_id)) == (0, 0)

    async def register_old(self, dev_index: int, channel: Channel) -> None:
        """A cheater (anvil's dev account `dev_index`) registers `channel`'s current state."""
        assert channel.current is not None
        await (await self.connected()).register(
            Account(anvil_dev_key(dev_index)), channel.params,  # type: ignore[arg-type]
            channel.current.state, channel.current.signatures)

    def block(self) -> int:
        return int(rpc_call(self.anvil.url, "eth_blockNumber"), 16)

    def balance(self, account: str, block: int) -> int:
        return int(rpc_call(self.anvil.url, "eth_getBalance", [account, hex(block)]), 16)

    def gas_paid(self, accounts: Iterable[str], first: int, last: int) -> dict[str, int]:
        """The wei each account paid for gas in blocks `first`..`last`, from the receipts."""
        paid = {a.lower(): 0 for a in accounts}
        for number in range(first, last + 1):
            block = rpc_call(self.anvil.url, "eth_getBlockByNumber", [hex(number), True])
            for tx in block["transactions"]:
                sender = tx["from"].lower()
                if sender in paid:
                    receipt = rpc_call(self.anvil.url, "eth_getTransactionReceipt", [tx["hash"]])
                    paid[sender] += int(receipt["gasUsed"], 16) \
                        * int(receipt["effectiveGasPrice"], 16)
        return paid

    def close(self) -> None:
        self.chain.stopService()


class Ledger:
    """Each account's ETH before a test, to check its change net of gas at the end."""

    def __init__(self, view: ChainView, accounts: dict[str, str]) -> None:
        self.view = view
        self.accounts = accounts
        self.first = view.block()
        self.before = {name: view.balance(a, self.first) for name, a in accounts.items()}

    def net(self) -> dict[str, int]:
        """Per account, what it gained (or lost, negative) on-chain since, gas left out."""
        last = self.view.block()
        gas = self.view.gas_paid(self.accounts.values(), self.first + 1, last)
        return {name: self.view.balance(a, last) - self.before[name] + gas[a.lower()]
                for name, a in self.accounts.items()}
