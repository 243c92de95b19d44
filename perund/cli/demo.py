"""`perund demo`: one channel's whole life on the embedded dev chain, narrated step by step.

Starts a ChainBackend on the embedded chain (which deploys the Adjudicator), opens a channel
between two dev accounts, funds it from both sides, signs a few off-chain updates and a final
state, closes it with one `concludeFinal` and checks every balance to the wei. The first thing a
new user sees, so it says what happens and why in plain words.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TextIO

from twisted.internet.interfaces import IReactorTime

from perund.chain.account import Account
from perund.chain.backend import ChainBackend
from perund.chain.results import Phase, TxReceipt
from perund.channel.encoding import (
    Signer,
    channel_id,
    nonce_from_shares,
    random_share,
    verify_state,
)
from perund.channel.types import ETH, Address, ChannelID, Params, Signature, State, hex_address
from perund.errors import PerundError

ETHER = 10**18
CHALLENGE_DURATION = 3600


def ether(wei: int) -> str:
    """`wei` as an ETH amount with every significant digit: 1.5 ETH, 0.000021 ETH."""
    text = format(Decimal(wei) / ETHER, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text} ETH"


def short(value: bytes) -> str:
    """A 0x-hex string shortened for reading: 0x1234abcd…9f8e."""
    full = value.hex()
    return f"0x{full}" if len(full) <= 16 else f"0x{full[:8]}…{full[-4:]}"


@dataclass
class _Party:
    name: str
    account: Account
    signer: Signer
    start_balance: int = 0
    spent_on_gas: int = 0
    deposited: int = 0


class DemoFailed(PerundError):
    """A balance or check of the walkthrough did not come out as expected."""


class Walkthrough:
    """The demo's steps; `say` prints (the CLI passes a writer to stdout)."""

    def __init__(self, reactor: IReactorTime, out: TextIO, chain_id: int) -> None:
        self.reactor = reactor
        self.out = out
        self.backend = ChainBackend(reactor, url="", chain_id=chain_id, receipt_poll_interval=0.01)
        self.step = 0

    def say(self, text: str = "") -> None:
        """One line of the walkthrough."""
        print(text, file=self.out, flush=True)

    def heading(self, title: str) -> None:
        """Start the next numbered step."""
        self.step += 1
        self.say()
        self.say(f"{self.step}. {title}")

    def check(self, ok: bool, what: str) -> None:
        """Print a ✓ line, or stop the demo with DemoFailed."""
        if not ok:
            raise DemoFailed(f"check failed: {what}")
        self.say(f"   ✓ {what}")

    def tx(self, who: str, receipt: TxReceipt) -> None:
        """Describe a mined transaction."""
        self.say(f"   {who}")
        self.say(
            f"      block {receipt.block_number}, tx {short(receipt.tx_hash)}, "
            f"gas {receipt.gas_used:,}, fee {ether(receipt.fee)}"
        )

    async def run(self) -> None:
        """The whole walkthrough; raises PerundError when something goes wrong."""
        backend = self.backend
        backend.startService()
        try:
            await self._run()
        finally:
            backend.stopService()

    async def _run(self) -> None:
        backend = self.backend
        self.say("perund demo: a two-party payment channel on the embedded dev chain")
        self.say("(an Ethereum chain simulated in this process: nothing leaves your machine)")

        self.heading("Start the chain and deploy the Adjudicator contract")
        chain_id = await backend.connect()
        assert backend.adjudicator is not None
        adjudicator = backend.adjudicator
        self.say(f"   chain id {chain_id}, block {await backend.block_number()}")
        self.say(f"   Adjudicator at {hex_address(adjudicator)} (custody and settlement)")
        await backend.validate_adjudicator(adjudicator)
        self.check(True, "its on-chain code equals the packaged, compiled contract")

        self.heading("Two users, each with an on-chain account and an off-chain signing key")
        keys = backend.dev_private_keys()
        alice = _Party("alice", Account(keys[1]), Signer(os.urandom(32)))
        bob = _Party("bob", Account(keys[2]), Signer(os.urandom(32)))
        for party in (alice, bob):
            party.start_balance = await backend.balance(party.account.address)
            self.say(
                f"   {party.name:5}  on-chain {hex_address(party.account.address)}  "
                f"{ether(party.start_balance)}"
            )
            self.say(f"          signs states as {hex_address(party.signer.address)}")

        self.heading("Open a channel")
        params = Params(
            challenge_duration=CHALLENGE_DURATION,
            nonce=nonce_from_shares(random_share(), random_share()),
            participants=(alice.signer.address, bob.signer.address),
            receivers=(alice.account.address, bob.account.address),
        )
        cid = channel_id(chain_id, adjudicator, params)
        self.say(f"   challenge duration {CHALLENGE_DURATION} s, nonce from both sides' shares")
        self.say(f"   channel id {short(cid)}")
        self.check(
            await backend.contract_channel_id(params) == cid,
            "the contract computes the same channel id (bound to this chain and contract)",
        )

        self.heading("Fund it: each side deposits its share")
        for index, (party, amount) in enumerate(((alice, 5 * ETHER), (bob, 3 * ETHER))):
            receipt = await backend.deposit(party.account, cid, index, ETH, amount)
            party.deposited = amount
            party.spent_on_gas += receipt.fee
            self.tx(f"{party.name} deposits {ether(amount)}", receipt)
        holdings = await backend.holdings(cid)
        self.check(holdings == (5 * ETHER, 3 * ETHER),
                   f"the contract holds {ether(holdings[0])} + {ether(holdings[1])}")

        self.heading("Pay off-chain: each update is a new version signed by both")
        balances = (5 * ETHER, 3 * ETHER)
        state = self._state(cid, 0, balances)
        self.say(f"   version 0: alice {ether(balances[0])}, bob {ether(balances[1])}")
        for version, (payer, amount) in enumerate(
            ((0, 3 * ETHER // 2), (1, ETHER // 4), (0, 10**15)), start=1
        ):
            delta = amount if payer == 0 else -amount
            balances = (balances[0] - delta, balances[1] + delta)
            state = self._state(cid, version, balances)
            self._sign_both(state, alice.signer, bob.signer)
            who, whom = ("alice", "bob") if payer == 0 else ("bob", "alice")
            self.say(
                f"   version {version}: {who} pays {whom} {ether(amount)} → "
                f"alice {ether(balances[0])}, bob {ether(balances[1])}"
            )
        self.say("   (no transaction, no gas, no waiting: the chain sees none of this)")

        self.heading("Close: a final state, signed by both, settled in one transaction")
        final = self._state(cid, state.version + 1, balances, is_final=True)
        sigs = self._sign_both(final, alice.signer, bob.signer)
        self.check(
            verify_state(final, sigs[0], alice.signer.address)
            and verify_state(final, sigs[1], bob.signer.address),
            f"version {final.version} is final and fully signed",
        )
        close = await backend.conclude_final(alice.account, params, final, sigs)
        alice.spent_on_gas += close.fee
        self.tx("alice submits concludeFinal", close)
        for event in close.events_named("PaidOut"):
            receiver = Address(event.args["receiver"])
            name = "alice" if receiver == alice.account.address else "bob"
            how = "pushed" if event.args["pushed"] else "left to withdraw"
            self.say(f"   paid {ether(event.args['amount'])} to {name} ({how})")
        (concluded,) = close.events_named("Concluded")
        status = await backend.channel_status(cid)
        self.check(
            status.phase is Phase.CONCLUDED and concluded.args["version"] == final.version,
            f"the channel is concluded with version {concluded.args['version']}",
        )
        self.check(await backend.holdings(cid) == (0, 0), "the contract holds nothing for it")

        self.heading("Check every balance to the wei")
        for party, outcome in ((alice, balances[0]), (bob, balances[1])):
            end = await backend.balance(party.account.address)
            expected = party.start_balance - party.deposited - party.spent_on_gas + outcome
            self.say(
                f"   {party.name}: {ether(party.start_balance)} - deposit "
                f"{ether(party.deposited)} - gas {ether(party.spent_on_gas)} + payout "
                f"{ether(outcome)}"
            )
            self.check(end == expected, f"{party.name} now has exactly {ether(end)}")

        self.say()
        self.say("Done: the channel opened, moved money off-chain and settled on-chain.")
        self.say("Next: `make test` runs the whole test suite.")

    @staticmethod
    def _state(
        cid: ChannelID, version: int, balances: tuple[int, int], is_final: bool = False
    ) -> State:
        return State(cid, version, (ETH,), (balances,), is_final)

    @staticmethod
    def _sign_both(state: State, first: Signer, second: Signer) -> tuple[Signature, Signature]:
        return first.sign_state(state), second.sign_state(state)


async def run_demo(
    reactor: IReactorTime, out: TextIO, chain_id: int, error: Callable[[str], None]
) -> int:
    """Run the walkthrough; the process exit status (0 when every check passed)."""
    try:
        await Walkthrough(reactor, out, chain_id).run()
    except PerundError as exc:
        error(f"perund demo failed: {exc}")
        return 1
    return 0
