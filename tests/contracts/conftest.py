"""Fixtures of the contract tests: the same tests run on eth-tester/py-evm and on anvil.

The tests talk to the chain with synchronous web3 (no Twisted here). Each test deploys its own
Adjudicator on a session-wide chain, so tests share no contract state; balances are checked as
deltas, to the wei, with every transaction fee accounted for.
"""

from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from eth_abi import decode
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils import keccak, to_checksum_address
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from perund.chain.anvil import Anvil
from perund.channel.encoding import Signer, channel_id
from perund.channel.types import ETH, Address, ChannelID, Params, State, SubAlloc

ROOT = Path(__file__).resolve().parents[2]
ADJUDICATOR_JSON = ROOT / "perund" / "chain" / "artifacts" / "Adjudicator.json"
TEST_ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ETHER = 10**18
CHALLENGE = 600
ETH_HEX = to_checksum_address(ETH)


def load_artifact(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


Err = tuple[str, tuple[Any, ...]]
"""A decoded custom error: its name and arguments; ("", ()) for a revert without data."""


class Reverted(AssertionError):
    """A call that was expected to succeed reverted."""


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert data carried by a web3 (anvil) or eth-tester (py-evm) failure."""
    if isinstance(exc, ContractLogicError) and isinstance(exc.data, str) and exc.data:
        return bytes.fromhex(exc.data.removeprefix("0x"))
    seen: BaseException | None = exc
    while seen is not None:
        for arg in seen.args:
            inner = arg.args[0] if isinstance(arg, Exception) and arg.args else arg
            if isinstance(inner, bytes):
                return inner
            # web3's eth-tester provider re-raises with the bytes' repr in the message.
            if isinstance(inner, str) and inner.startswith(_TESTER_PREFIX):
                try:
                    value = ast.literal_eval(inner.removeprefix(_TESTER_PREFIX))
                except (ValueError, SyntaxError):
                    continue
                if isinstance(value, bytes):
                    return value
        seen = seen.__context__ or seen.__cause__
    return None


_TESTER_PREFIX = "execution reverted: "


@dataclass
class Chain:
    """One test chain: web3, funded dev accounts, time travel, transactions with their fees."""

    name: str
    w3: Web3
    keys: list[bytes]
    tester: EthereumTester | None = None
    fees: dict[str, int] = field(default_factory=dict)

    @property
    def accounts(self) -> list[str]:
        return [to_checksum_address(Signer(k).address) for k in self.keys]

    @property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    def timestamp(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def advance(self, seconds: int) -> None:
        """Move time so the next transaction's block is at least `seconds` after the latest one."""
        if self.tester is not None:
            self.tester.time_travel(self.timestamp() + seconds)
        else:
            self.w3.provider.make_request("evm_increaseTime", [seconds])  # type: ignore[arg-type]
            self.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]

    def deploy(self, artifact: dict[str, Any]) -> Contract:
        factory = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        receipt = self.transact(factory.constructor(), self.accounts[0])
        contract: Contract = self.w3.eth.contract(
            address=receipt["contractAddress"], abi=artifact["abi"]
        )
        return contract

    def transact(self, fn: Any, sender: str, value: int = 0) -> Any:
        """Send `fn` from `sender` and wait for the receipt; Reverted if it fails."""
        try:
            tx_hash = fn.transact({"from": sender, "value": value})
        except Exception as exc:
            raise Reverted(f"{fn} reverted: {revert_data(exc)!r}") from exc
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise Reverted(f"{fn} mined but reverted")
        self.fees[sender] = self.fees.get(sender, 0) + fee_of(receipt)
        return receipt

    def fee_total(self, sender: str) -> int:
        """All fees `sender` paid through `transact` so far."""
        return self.fees.get(sender, 0)

    def fund(self, address: str, amount: int) -> None:
        """Make sure `address` holds at least `amount` wei more than it does now (for gas too)."""
        if self.tester is None:
            total = self.balance(address) + amount
            self.w3.provider.make_request("anvil_setBalance", [address, hex(total)])  # type: ignore[arg-type]
        elif self.balance(address) < 2 * amount:
            raise AssertionError("the eth-tester genesis accounts should be rich enough")

    def balance(self, address: str | bytes) -> int:
        return int(self.w3.eth.get_balance(to_checksum_address(address)))

    def revert_error(
        self, contract: Contract, fn: Any, sender: str, value: int = 0, gas: int | None = None
    ) -> Err:
        """The custom error (name, args) with which sending `fn` reverts; fails if it succeeds.

        Without `gas` the transaction is sent (its gas estimate fails); with `gas` it is run as
        an eth_call with that gas limit.
        """
        try:
            if gas is None:
                fn.transact({"from": sender, "value": value})
            else:
                fn.call({"from": sender, "value": value, "gas": gas})
        except Exception as exc:
            data = revert_data(exc)
            if data is None:
                raise AssertionError(f"no revert data in {exc!r}") from exc
            return decode_error(contract.abi, data)
        raise AssertionError(f"{fn} did not revert")


def fee_of(receipt: Any) -> int:
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def decode_error(abi: Sequence[Any], data: bytes) -> Err:
    """(name, args) of the ABI error whose selector starts `data`; ("", ()) for empty data."""
    if not data:
        return ("", ())
    for item in abi:
        if item.get("type") != "error":
            continue
        types = [i["type"] for i in item["inputs"]]
        selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
        if data[:4] == selector:
            return (item["name"], tuple(decode(types, data[4:])))
    return (f"unknown:{data.hex()}", ())


def _eth_tester_chain() -> Chain:
    # Rich accounts: the uint128 overflow test needs more wei than the default genesis gives.
    genesis = PyEVMBackend.generate_genesis_state(overrides={"balance": 2**200}, num_accounts=10)
    backend = PyEVMBackend(genesis_state=genesis)
    tester = EthereumTester(backend)
    w3 = Web3(EthereumTesterProvider(tester))
    keys = [k.to_bytes() for k in backend.account_keys]
    return Chain("eth_tester", w3, keys, tester=tester)


@pytest.fixture(scope="session")
def eth_tester_chain() -> Chain:
    return _eth_tester_chain()


@pytest.fixture(scope="session")
def anvil_chain() -> Iterator[Chain]:
    with Anvil() as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        yield Chain("anvil", w3, list(anvil.private_keys))


@pytest.fixture(params=["eth_tester", pytest.param("anvil", marks=pytest.mark.anvil)])
def chain(request: pytest.FixtureRequest) -> Chain:
    name = request.param
    result: Chain = request.getfixturevalue(f"{name}_chain")
    result.fees.clear()
    return result


class Channel:
    """A two-party channel on one deployed Adjudicator, with helpers to sign and send."""

    def __init__(
        self,
        chain: Chain,
        contract: Contract,
        signers: tuple[Signer, Signer],
        receivers: tuple[bytes, bytes],
        nonce: int,
        challenge: int = CHALLENGE,
    ) -> None:
        self.chain = chain
        self.contract = contract
        self.signers = signers
        self.params = Params(
            challenge,
            nonce,
            (Address(signers[0].address), Address(signers[1].address)),
            (Address(receivers[0]), Address(receivers[1])),
        )
        self.adjudicator = Address(bytes.fromhex(contract.address[2:]))
        self.id: ChannelID = channel_id(chain.chain_id, self.adjudicator, self.params)
        self.fn = contract.functions

    @property
    def receivers(self) -> tuple[str, str]:
        r0, r1 = self.params.receivers
        return (to_checksum_address(r0), to_checksum_address(r1))

    def state(self, version: int, balances: tuple[int, int], *, final: bool = False) -> State:
        """A state of this channel holding only ETH, split as `balances`."""
        return State(self.id, version, (ETH,), (balances,), final)

    def state_of(
        self,
        version: int,
        assets: tuple[bytes, ...],
        balances: tuple[tuple[int, int], ...],
        *,
        final: bool = False,
        locked: tuple[SubAlloc, ...] = (),
    ) -> State:
        """A state of this channel with any assets (20-byte addresses) and locks."""
        return State(self.id, version, tuple(Address(a) for a in assets), balances, final, locked)

    def sigs(self, state: State) -> list[bytes]:
        return [bytes(s.sign_state(state)) for s in self.signers]

    def p(self) -> tuple[Any, ...]:
        return as_params(self.params)

    def deposit(self, sender: str, index: int, amount: int) -> Any:
        return self.chain.transact(self.fn.deposit(self.id, index, ETH_HEX, amount), sender, amount)

    def register(self, state: State, sender: str, sigs: list[bytes] | None = None) -> Any:
        call = self.fn.register(self.p(), as_state(state), sigs or self.sigs(state))
        return self.chain.transact(call, sender)

    def conclude(self, state: State, sender: str) -> Any:
        return self.chain.transact(self.fn.conclude(self.p(), as_state(state)), sender)

    def conclude_final(self, state: State, sender: str, sigs: list[bytes] | None = None) -> Any:
        call = self.fn.concludeFinal(self.p(), as_state(state), sigs or self.sigs(state))
        return self.chain.transact(call, sender)

    def error(self, fn: Any, sender: str, value: int = 0, gas: int | None = None) -> Err:
        return self.chain.revert_error(self.contract, fn, sender, value, gas)

    def holdings(self) -> tuple[int, int]:
        h0, h1 = self.fn.holdings(self.id, ETH_HEX).call()
        return (int(h0), int(h1))

    def status(self) -> tuple[int, int, int, bytes]:
        phase, version, timeout, state_hash = self.fn.channelStatus(self.id).call()
        return (int(phase), int(version), int(timeout), bytes(state_hash))

    def owed(self, receiver: str, asset: str = ETH_HEX) -> int:
        return int(self.fn.owed(receiver, asset).call())

    def token_holdings(self, token: Contract) -> tuple[int, int]:
        h0, h1 = self.fn.holdings(self.id, token.address).call()
        return (int(h0), int(h1))

    def deposit_token(self, token: Contract, sender: str, index: int, amount: int) -> Any:
        """Approve the Adjudicator for `amount`, then deposit it (two transactions)."""
        self.chain.transact(token.functions.approve(self.contract.address, amount), sender)
        return self.chain.transact(self.fn.deposit(self.id, index, token.address, amount), sender)

    def events(self, receipt: Any, name: str) -> list[dict[str, Any]]:
        """The decoded `name` events of the Adjudicator in `receipt`, args only."""
        event = getattr(self.contract.events, name)()
        out = []
        for log in receipt["logs"]:
            if log["address"] != self.contract.address:
                continue
            try:
                out.append(dict(event.process_log(log)["args"]))
            except Exception:  # another event type of the same contract
                continue
        return out


def as_params(p: Params) -> tuple[Any, ...]:
    return (
        p.challenge_duration,
        p.nonce,
        [to_checksum_address(a) for a in p.participants],
        [to_checksum_address(a) for a in p.receivers],
    )


def as_state(s: State) -> tuple[Any, ...]:
    return (
        s.channel_id,
        s.version,
        [to_checksum_address(a) for a in s.assets],
        [list(r) for r in s.balances],
        s.is_final,
    )


def as_locked(s: State) -> list[tuple[Any, ...]]:
    return [(lock.channel_id, list(lock.balances), list(lock.index_map)) for lock in s.locked]


def token_balance(token: Contract, holder: str | bytes) -> int:
    return int(token.functions.balanceOf(to_checksum_address(holder)).call())


@dataclass
class Setup:
    """What most tests need: a fresh Adjudicator and a factory of channels on it."""

    chain: Chain
    contract: Contract
    alice: str
    bob: str
    carol: str
    _nonce: int = 0

    def channel(
        self,
        receivers: tuple[bytes, bytes] | None = None,
        challenge: int = CHALLENGE,
        signers: tuple[Signer, Signer] | None = None,
    ) -> Channel:
        """A new channel; by default fresh random signing keys and fresh (empty) receivers."""
        self._nonce += 1
        signers = signers or (Signer(os.urandom(32)), Signer(os.urandom(32)))
        receivers = receivers or (os.urandom(20), os.urandom(20))
        return Channel(self.chain, self.contract, signers, receivers, self._nonce, challenge)

    def token(self, kind: str = "TestToken", mint: int = 10**6 * ETHER) -> Contract:
        """A fresh test token (contracts/test/`kind`), `mint` units each for alice, bob, carol."""
        artifact = load_artifact(TEST_ARTIFACTS / f"{kind}.json")
        factory = self.chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        constructor = (
            factory.constructor("Test", "TST") if kind == "TestToken" else factory.constructor()
        )
        receipt = self.chain.transact(constructor, self.chain.accounts[0])
        token: Contract = self.chain.w3.eth.contract(
            address=receipt["contractAddress"], abi=artifact["abi"]
        )
        for holder in (self.alice, self.bob, self.carol):
            self.chain.transact(token.functions.mint(holder, mint), self.chain.accounts[0])
        return token


@pytest.fixture
def setup(chain: Chain) -> Setup:
    contract = chain.deploy(load_artifact(ADJUDICATOR_JSON))
    accounts = chain.accounts
    return Setup(chain, contract, accounts[1], accounts[2], accounts[3])
