"""Gas of the Adjudicator's cooperative life and dispute path, measured on a fresh anvil.

Run: `make bench` (or `.venv/bin/python bench/gas.py`). Prints one JSON object

    {"cooperative": {"calls": {name: gas, ...}, "total": N},
     "dispute": {"calls": {name: gas, ...}, "total": N}}

with the receipts' gasUsed of every transaction, and exits non-zero when a receiver did not end up
with exactly its outcome (to the wei, transaction fees accounted for).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from web3 import Web3

from perund.chain.anvil import Anvil
from perund.channel.encoding import Signer, channel_id
from perund.channel.types import ETH, Address, Params, State

ARTIFACT = (
    Path(__file__).resolve().parents[1] / "perund" / "chain" / "artifacts" / "Adjudicator.json"
)
ETHER = 10**18
CHALLENGE = 600  # seconds


class Run:
    """One deployed Adjudicator plus two participants whose on-chain accounts are the receivers."""

    def __init__(self, w3: Web3, keys: tuple[bytes, ...]) -> None:
        self.w3 = w3
        artifact = json.loads(ARTIFACT.read_text())
        deployer = w3.eth.accounts[0]
        factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = self.wait(factory.constructor().transact({"from": deployer}))
        self.contract = w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])
        self.signers = (Signer(keys[1]), Signer(keys[2]))
        self.accounts: tuple[str, ...] = tuple(
            Web3.to_checksum_address(s.address) for s in self.signers
        )
        self.fees: dict[str, int] = {a: 0 for a in self.accounts}

    def wait(self, tx_hash: Any) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise SystemExit(f"transaction {tx_hash.hex()} reverted")
        return receipt

    def send(self, sender: str, fn: Any, value: int = 0) -> int:
        """Send one contract call from `sender`; its gasUsed. Fees are booked against `sender`."""
        receipt = self.wait(fn.transact({"from": sender, "value": value}))
        self.fees[sender] += receipt["gasUsed"] * receipt["effectiveGasPrice"]
        return int(receipt["gasUsed"])

    def params(self, nonce: int) -> Params:
        addresses = (Address(self.signers[0].address), Address(self.signers[1].address))
        return Params(CHALLENGE, nonce, addresses, addresses)

    def state(self, params: Params, version: int, balances: tuple[int, int], final: bool) -> State:
        cid = channel_id(
            self.w3.eth.chain_id, Address(bytes.fromhex(self.contract.address[2:])), params
        )
        return State(cid, version, (ETH,), (balances,), final)

    def sigs(self, state: State) -> list[bytes]:
        return [s.sign_state(state) for s in self.signers]

    def snapshot(self) -> list[int]:
        """The receivers' balances now; starts a new fee account for `check_paid`."""
        self.fees = {a: 0 for a in self.accounts}
        return self.balances()

    def balances(self) -> list[int]:
        return [self.w3.eth.get_balance(Web3.to_checksum_address(a)) for a in self.accounts]


def as_params(p: Params) -> tuple[Any, ...]:
    return (
        p.challenge_duration,
        p.nonce,
        [Web3.to_checksum_address(a) for a in p.participants],
        [Web3.to_checksum_address(a) for a in p.receivers],
    )


def as_state(s: State) -> tuple[Any, ...]:
    assets = [Web3.to_checksum_address(a) for a in s.assets]
    return (s.channel_id, s.version, assets, [list(r) for r in s.balances], s.is_final)


def check_paid(
    run: Run, before: list[int], deposits: tuple[int, int], outcome: tuple[int, int]
) -> None:
    """Each receiver's balance moved by exactly outcome - deposit - its fees."""
    after = run.balances()
    for i, account in enumerate(run.accounts):
        expected = before[i] - deposits[i] + outcome[i] - run.fees[account]
        if after[i] != expected:
            raise SystemExit(f"receiver {i} has {after[i]} wei, expected {expected}")
        if run.contract.functions.owed(account, ETH).call() != 0:
            raise SystemExit(f"receiver {i} still has an owed balance")


def cooperative(run: Run) -> dict[str, int]:
    alice, bob = run.accounts
    fn = run.contract.functions
    before = run.snapshot()
    params = run.params(nonce=1)
    deposits = (ETHER, ETHER)
    final = run.state(params, 7, (ETHER + ETHER // 3, ETHER - ETHER // 3), True)
    calls = {
        "deposit_0": run.send(
            alice, fn.deposit(final.channel_id, 0, ETH, deposits[0]), deposits[0]
        ),
        "deposit_1": run.send(bob, fn.deposit(final.channel_id, 1, ETH, deposits[1]), deposits[1]),
        "concludeFinal": run.send(
            alice, fn.concludeFinal(as_params(params), as_state(final), run.sigs(final))
        ),
    }
    check_paid(run, before, deposits, final.balances[0])  # type: ignore[arg-type]
    return calls


def dispute(run: Run) -> dict[str, int]:
    alice, bob = run.accounts
    fn = run.contract.functions
    before = run.snapshot()
    params = run.params(nonce=2)
    deposits = (ETHER, ETHER)
    v1 = run.state(params, 1, (ETHER + ETHER // 2, ETHER // 2), False)
    v2 = run.state(params, 2, (ETHER - ETHER // 4, ETHER + ETHER // 4), False)
    calls = {
        "deposit_0": run.send(alice, fn.deposit(v1.channel_id, 0, ETH, deposits[0]), deposits[0]),
        "deposit_1": run.send(bob, fn.deposit(v1.channel_id, 1, ETH, deposits[1]), deposits[1]),
        "register": run.send(alice, fn.register(as_params(params), as_state(v1), run.sigs(v1))),
        "refute": run.send(bob, fn.register(as_params(params), as_state(v2), run.sigs(v2))),
    }
    run.w3.provider.make_request("evm_increaseTime", [CHALLENGE])  # type: ignore[arg-type]
    run.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    calls["conclude"] = run.send(bob, fn.conclude(as_params(params), as_state(v2)))
    check_paid(run, before, deposits, v2.balances[0])  # type: ignore[arg-type]
    return calls


def main() -> int:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        run = Run(w3, anvil.private_keys)
        report = {}
        for name, calls in (("cooperative", cooperative(run)), ("dispute", dispute(run))):
            report[name] = {"calls": calls, "total": sum(calls.values())}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
