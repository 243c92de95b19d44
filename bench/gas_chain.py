"""The chain side of bench/gas.py: a fresh anvil's Adjudicator, test tokens, signed states, and
books that check every account ends with exactly its due (to the wei, transaction fees counted).

Not a benchmark of its own (bench/all.py runs gas.py, which imports this).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eth_abi.abi import encode
from eth_hash.auto import keccak
from web3 import Web3
from web3.contract import Contract

from perund.channel.encoding import Signer, channel_id
from perund.channel.types import ETH, Address, Params, State, SubAlloc

ROOT = Path(__file__).resolve().parents[1]
ADJUDICATOR = ROOT / "perund" / "chain" / "artifacts" / "Adjudicator.json"
TEST_TOKEN = ROOT / "tests" / "contracts" / "artifacts" / "TestToken.json"
ETHER = 10**18
CHALLENGE = 600  # seconds
MINTED = 10**6 * ETHER
"""Test tokens every account holds before a life starts, so that payouts to it (like Perun's
withdrawals, measured on accounts that hold tokens) write a balance slot that is not fresh."""

PERMIT_DEADLINE = 2**40
"""A fixed deadline (far off): the permit's signature, and so the calldata's gas, is the same on
every run."""

_PERMIT_TYPEHASH = keccak(
    b"Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"
)
_DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)


def _artifact(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


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


def as_locked(s: State) -> list[tuple[Any, ...]]:
    return [(lock.channel_id, list(lock.balances), list(lock.index_map)) for lock in s.locked]


class Books:
    """What each account's ETH and token balances must have moved by since the books opened:
    every fee and deposit its transactions paid, every payout the states promise it."""

    def __init__(self, run: Run) -> None:
        self.run = run
        keys = [(account, asset) for account in run.accounts for asset in (run.eth, *run.tokens)]
        self.before = {(account, asset): run.balance_of(account, asset) for account, asset in keys}
        self.expected = dict.fromkeys(keys, 0)

    def book(self, account: str, asset: str, amount: int) -> None:
        """`account`'s holding of `asset` (a checksum address; ETH's is the zero address) moves
        by `amount`."""
        self.expected[(account, asset)] += amount

    def check(self) -> None:
        """SystemExit unless every account moved by exactly what was booked."""
        for (account, asset), delta in self.expected.items():
            moved = self.run.balance_of(account, asset) - self.before[(account, asset)]
            if moved != delta:
                raise SystemExit(f"{account} moved {moved} of {asset}, expected {delta}")
            if self.run.adjudicator.functions.owed(account, asset).call() != 0:
                raise SystemExit(f"{account} still has a payout of {asset} owed")


class Run:
    """One Adjudicator on a fresh anvil, and signers that are anvil's funded accounts."""

    def __init__(self, w3: Web3, keys: tuple[bytes, ...]) -> None:
        self.w3 = w3
        artifact = _artifact(ADJUDICATOR)
        self.deployer = w3.eth.accounts[0]
        factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = self.wait(factory.constructor().transact({"from": self.deployer}))
        self.adjudicator = w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])
        self.signers = tuple(Signer(k) for k in keys[1:4])
        self.accounts: tuple[str, ...] = tuple(
            Web3.to_checksum_address(s.address) for s in self.signers
        )
        self.tokens: dict[str, Contract] = {}
        self.books = Books(self)
        self._nonce = 0

    @property
    def eth(self) -> str:
        return Web3.to_checksum_address(ETH)

    def wait(self, tx_hash: Any) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise SystemExit(f"transaction {tx_hash.hex()} reverted")
        return receipt

    def open_books(self) -> Books:
        """Start checking balances afresh (each life checks its own)."""
        self.books = Books(self)
        return self.books

    def send(self, sender: str, fn: Any, value: int = 0) -> int:
        """Send one contract call from `sender`; its gasUsed. Its fee and `value` are booked."""
        receipt = self.wait(fn.transact({"from": sender, "value": value}))
        fee = int(receipt["gasUsed"] * receipt["effectiveGasPrice"])
        self.books.book(sender, self.eth, -fee - value)
        return int(receipt["gasUsed"])

    def token(self) -> Contract:
        """A fresh TestToken (contracts/test/TestToken.sol, EIP-2612) with MINTED for everyone;
        fresh, so the Adjudicator's balance of it starts at zero as on Perun's measured run."""
        artifact = _artifact(TEST_TOKEN)
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = self.wait(factory.constructor("Test", "TST").transact({"from": self.deployer}))
        token = self.w3.eth.contract(address=receipt["contractAddress"], abi=artifact["abi"])
        for account in self.accounts:
            self.wait(token.functions.mint(account, MINTED).transact({"from": self.deployer}))
        self.tokens[token.address] = token
        return token

    def balance_of(self, account: str, asset: str) -> int:
        if asset == self.eth:
            return int(self.w3.eth.get_balance(Web3.to_checksum_address(account)))
        return int(self.tokens[asset].functions.balanceOf(account).call())

    def permit(self, token: Contract, owner: int, value: int) -> tuple[Any, ...]:
        """An EIP-2612 permit of account `owner` letting the Adjudicator take `value`."""
        holder = self.accounts[owner]
        deadline = PERMIT_DEADLINE
        domain = keccak(
            encode(
                ["bytes32", "bytes32", "bytes32", "uint256", "address"],
                [
                    _DOMAIN_TYPEHASH,
                    keccak(b"Test"),
                    keccak(b"1"),
                    self.w3.eth.chain_id,
                    token.address,
                ],
            )
        )
        nonce = int(token.functions.nonces(holder).call())
        struct = keccak(
            encode(
                ["bytes32", "address", "address", "uint256", "uint256", "uint256"],
                [_PERMIT_TYPEHASH, holder, self.adjudicator.address, value, nonce, deadline],
            )
        )
        sig = self.signers[owner].sign_digest(keccak(b"\x19\x01" + domain + struct))
        return (token.address, value, deadline, sig[64], sig[:32], sig[32:64])

    def next_nonce(self) -> int:
        """A channel nonce not used before on this run (counted, so every run is the same)."""
        self._nonce += 1
        return self._nonce

    def params(self, who: tuple[int, int] = (0, 1)) -> Params:
        """Fresh params of a channel between signers `who` (their accounts are the receivers)."""
        pair = (Address(self.signers[who[0]].address), Address(self.signers[who[1]].address))
        return Params(CHALLENGE, self.next_nonce(), pair, pair)

    def channel_id(self, params: Params) -> bytes:
        adjudicator = Address(bytes.fromhex(self.adjudicator.address[2:]))
        return channel_id(self.w3.eth.chain_id, adjudicator, params)

    def state(
        self,
        params: Params,
        version: int,
        assets: tuple[str, ...],
        balances: tuple[tuple[int, int], ...],
        final: bool = False,
        locked: tuple[SubAlloc, ...] = (),
    ) -> State:
        addresses = tuple(Address(bytes.fromhex(a[2:])) for a in assets)
        return State(self.channel_id(params), version, addresses, balances, final, locked)

    def sigs(self, params: Params, state: State) -> list[bytes]:
        """Both participants' signatures on `state`, in participant order."""
        by_address = {s.address: s for s in self.signers}
        return [bytes(by_address[Address(p)].sign_state(state)) for p in params.participants]

    def pay_out(
        self, params: Params, state: State, extra: dict[int, dict[str, int]] | None = None
    ) -> None:
        """Book `state`'s balances (plus `extra[i][asset]`) as paid to the receivers."""
        for i, receiver in enumerate(params.receivers):
            account = Web3.to_checksum_address(receiver)
            for a, asset in enumerate(state.assets):
                self.books.book(account, Web3.to_checksum_address(asset), state.balances[a][i])
            for asset, amount in (extra or {}).get(i, {}).items():
                self.books.book(account, asset, amount)

    def advance(self, seconds: int) -> None:
        self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
        self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
