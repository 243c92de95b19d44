"""What the chain showed in blocks the watcher had not passed yet is read again once it has
(perund.session.unconfirmed), on anvil, whose `anvil_reorg` replaces the newest blocks with
empty ones and drops their transactions: a registration of ours that a reorganisation dropped
is sent again, one that stayed is left alone, and a funding counts the deposits only at a block
the watcher has passed."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from perund.chain.account import Account
from perund.chain.anvil import Anvil, rpc_call
from perund.chain.backend import ChainBackend
from perund.channel import events as ev
from perund.channel.changes import Change
from perund.channel.encoding import Signer, channel_id
from perund.channel.records import Channel
from perund.channel.types import ETH, ChannelID, Params, State
from perund.errors import FailedPrecondition
from perund.session.onchain import ChainSettlement
from perund.session.unconfirmed import UnconfirmedCheck

from .test_onchain import _settles

ETHER = 10**18
BALANCES = ((2 * ETHER, ETHER),)

pytestmark = pytest.mark.anvil


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:  # one of its own: the tests replace its blocks
        yield node


@pytest_twisted.async_yield_fixture
async def chain(anvil: Anvil) -> AsyncIterator[ChainBackend]:
    backend = ChainBackend(reactor, url=anvil.url, chain_id=anvil.chain_id,
                           receipt_poll_interval=0.01)
    backend.startService()
    await backend.connect()
    await backend.deploy_adjudicator(Account(anvil.private_keys[0]))
    yield backend
    backend.stopService()


async def rpc(anvil: Anvil, method: str, *params: object) -> Any:
    return await deferToThread(rpc_call, anvil.url, method, list(params))


async def head(anvil: Anvil) -> int:
    return int(await rpc(anvil, "eth_blockNumber"), 16)


class Channel2:
    """A channel of two fresh off-chain keys between anvil's accounts 1 and 2, and each side's
    settlement."""

    def __init__(self, chain: ChainBackend, anvil: Anvil) -> None:
        assert chain.chain_id is not None and chain.adjudicator is not None
        self.signers = (Signer(os.urandom(32)), Signer(os.urandom(32)))
        self.accounts = (Account(anvil.private_keys[1]), Account(anvil.private_keys[2]))
        self.params = Params(60, int.from_bytes(os.urandom(32), "big"),
                             tuple(s.address for s in self.signers),  # type: ignore[arg-type]
                             tuple(a.address for a in self.accounts))  # type: ignore[arg-type]
        self.id = channel_id(chain.chain_id, chain.adjudicator, self.params)
        self.sides = tuple(ChainSettlement(reactor, chain, account, poll_interval=0.02)
                           for account in self.accounts)

    def funding(self, index: int) -> ev.Fund:
        return ev.Fund(self.id, self.params, index, (ETH,), BALANCES)

    def registration(self, version: int) -> ev.Register:
        state = State(self.id, version, (ETH,), ((ETHER, 2 * ETHER),))
        signatures = (self.signers[0].sign_state(state), self.signers[1].sign_state(state))
        return ev.Register(self.id, self.params, state, signatures)


def check_of(settlement: ChainSettlement, chain: ChainBackend, held: ChannelID,
             resent: list[object], fed: list[tuple[ChannelID, Change]]) -> UnconfirmedCheck:
    channels = {held: cast(Channel, None)}  # only looked up by ID for registrations
    return UnconfirmedCheck(chain, settlement.unconfirmed, channels=lambda: channels,
                            chain_input=lambda cid, change: fed.append((cid, change)),
                            resettle=resent.append, session_id="test")


@pytest_twisted.ensureDeferred
async def test_a_registration_dropped_before_the_watcher_passed_it_is_sent_again(
        chain: ChainBackend, anvil: Anvil) -> None:
    channel = Channel2(chain, anvil)
    ours = channel.sides[0]
    await gatherResults([side.fund(channel.funding(i)) for i, side in enumerate(channel.sides)])
    register = channel.registration(1)
    await ours.register(register)
    mined = await head(anvil)
    resent: list[object] = []
    fed: list[tuple[ChannelID, Change]] = []
    check = check_of(ours, chain, channel.id, resent, fed)

    await check.passed(mined - 1)  # the watcher has not reached its block: nothing to read
    assert len(ours.unconfirmed) == 1 and resent == []
    await rpc(anvil, "anvil_reorg", 1, [])  # the block goes, and the registration with it
    await rpc(anvil, "evm_mine")
    assert (await chain.channel_status(channel.id)).version == 0
    await check.passed(await head(anvil))
    assert resent == [register] and fed == [] and len(ours.unconfirmed) == 0


@pytest_twisted.ensureDeferred
async def test_a_registration_that_stayed_is_not_sent_again(
        chain: ChainBackend, anvil: Anvil) -> None:
    channel = Channel2(chain, anvil)
    ours = channel.sides[0]
    await gatherResults([side.fund(channel.funding(i)) for i, side in enumerate(channel.sides)])
    await ours.register(channel.registration(1))
    resent: list[object] = []
    fed: list[tuple[ChannelID, Change]] = []
    await rpc(anvil, "evm_mine")
    await check_of(ours, chain, channel.id, resent, fed).passed(await head(anvil))
    assert resent == [] and fed == [] and len(ours.unconfirmed) == 0


@pytest_twisted.ensureDeferred
async def test_a_funding_counts_the_deposits_at_the_block_the_watcher_passed(
        chain: ChainBackend, anvil: Anvil) -> None:
    channel = Channel2(chain, anvil)
    ours, theirs = channel.sides
    cursor = [await head(anvil)]  # the watcher's, before either deposit
    ours.confirmed_block = lambda: cursor[0]
    funded = ours.fund(channel.funding(0))
    await theirs.fund(channel.funding(1))  # both deposits are in (read at "latest")
    assert await chain.holdings(channel.id) == (2 * ETHER, ETHER)
    # Not funded while the watcher has not passed them: a reorganisation could still drop
    # them unseen.
    assert not await _settles(funded, 0.5)
    cursor[0] = await head(anvil)
    ours.cursor_moved()
    assert await _settles(funded, 5.0)
    await funded


@pytest_twisted.ensureDeferred
async def test_a_funding_whose_own_deposit_a_reorganisation_dropped_says_so_at_its_deadline(
        chain: ChainBackend, anvil: Anvil) -> None:
    # It blamed the peer ("the peer did not fund the channel"), whose deposit was there.
    channel = Channel2(chain, anvil)
    ours = ChainSettlement(reactor, chain, channel.accounts[0], poll_interval=0.02,
                           funding_timeout=3.0)
    # The head before the funding starts: read after it, it may count our deposit already,
    # and the wait for the block after it never ends.
    deposited = await head(anvil) + 1
    funding = ours.fund(channel.funding(0))
    while await head(anvil) < deposited:
        await deferLater(reactor, 0.02, lambda: None)
    await rpc(anvil, "anvil_reorg", 1, [])  # our deposit goes, mined as it was
    await chain.deposit(channel.accounts[1], channel.id, 1, ETH, ETHER)  # the peer's is there
    with pytest.raises(FailedPrecondition, match="no longer holds our deposit"):
        await funding
    assert await chain.holdings(channel.id) == (0, ETHER)
