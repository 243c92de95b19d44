"""Fixtures for the chain backend tests: the same tests run on the embedded chain and on anvil."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import pytest
import pytest_twisted
from twisted.internet import reactor

from perund.chain.account import Account
from perund.chain.anvil import Anvil
from perund.chain.backend import ChainBackend
from perund.channel.encoding import Signer, channel_id
from perund.channel.types import ETH, Address, ChannelID, Params, Signature, State

ANVIL_CHAIN_ID = 31337
EMBEDDED_CHAIN_ID = 4242
ETHER = 10**18


@pytest.fixture(scope="session")
def anvil_node() -> Iterator[Anvil]:
    """One anvil for the session; each test deploys its own Adjudicator on it."""
    with Anvil(ANVIL_CHAIN_ID) as node:
        yield node


@dataclass
class Chain:
    """A connected backend and what the tests need around it."""

    kind: str
    backend: ChainBackend
    keys: tuple[bytes, ...]
    url: str

    def account(self, index: int) -> Account:
        return Account(self.keys[index])


def make_backend(url: str = "", chain_id: int | None = None, **kwargs: object) -> ChainBackend:
    """A started (not yet connected) backend with short timeouts for tests."""
    options: dict[str, object] = {"connect_timeout": 10.0, "tx_timeout": 20.0,
                                  "receipt_poll_interval": 0.02}
    options.update(kwargs)
    backend = ChainBackend(reactor, url=url, chain_id=chain_id, **options)  # type: ignore[arg-type]
    backend.startService()
    return backend


@pytest.fixture(params=["embedded", "anvil"])
def chain_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def anvil_or_none(request: pytest.FixtureRequest, chain_kind: str) -> Anvil | None:
    if chain_kind == "anvil":
        node: Anvil = request.getfixturevalue("anvil_node")
        return node
    return None


@pytest_twisted.async_yield_fixture
async def chain(chain_kind: str, anvil_or_none: Anvil | None) -> AsyncIterator[Chain]:
    """A connected backend with a freshly deployed Adjudicator, on each kind of chain."""
    if anvil_or_none is None:
        backend = make_backend("", EMBEDDED_CHAIN_ID)
        url = ""
    else:
        backend = make_backend(anvil_or_none.url, ANVIL_CHAIN_ID)
        url = anvil_or_none.url
    try:
        await backend.connect()
        if anvil_or_none is None:
            keys = backend.dev_private_keys()
        else:
            keys = anvil_or_none.private_keys
            await backend.deploy_adjudicator(Account(keys[0]))
        yield Chain(chain_kind, backend, keys, url)
    finally:
        if anvil_or_none is not None and backend.chain_id is not None:
            # A test may leave anvil without automine or with transactions pending.
            await backend.set_automine(True)
            await backend.mine()
        backend.stopService()


@dataclass(frozen=True)
class Channel:
    """A two-party channel: off-chain signers, on-chain accounts as receivers."""

    params: Params
    id: ChannelID
    signers: tuple[Signer, Signer]
    accounts: tuple[Account, Account]

    def state(self, version: int, balances: tuple[int, int], is_final: bool = False) -> State:
        return State(ChannelID(self.id), version, (ETH,), (balances,), is_final)

    def sign(self, state: State) -> tuple[Signature, Signature]:
        return (self.signers[0].sign_state(state), self.signers[1].sign_state(state))


def _make_channel(chain: Chain, first: int = 1, second: int = 2, duration: int = 60) -> Channel:
    signers = (Signer(os.urandom(32)), Signer(os.urandom(32)))
    accounts = (chain.account(first), chain.account(second))
    params = Params(
        challenge_duration=duration,
        nonce=int.from_bytes(os.urandom(32), "big"),
        participants=(signers[0].address, signers[1].address),
        receivers=(accounts[0].address, accounts[1].address),
    )
    backend = chain.backend
    assert backend.chain_id is not None and backend.adjudicator is not None
    cid = channel_id(backend.chain_id, Address(backend.adjudicator), params)
    return Channel(params, cid, signers, accounts)


@pytest.fixture
def new_channel(chain: Chain) -> Callable[..., Channel]:
    """`new_channel(first=1, second=2, duration=60)`: a channel between two dev accounts."""

    def make(first: int = 1, second: int = 2, duration: int = 60) -> Channel:
        return _make_channel(chain, first, second, duration)

    return make
