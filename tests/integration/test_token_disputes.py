"""Token channels when the peer does not play along (issue #14's acceptance, on anvil): two real
daemons holding ETH and the test token PRN; a cheater registers an old state and is refuted;
a peer that never funds gets everyone their token deposit back. Every payout is checked per
asset to the unit, from the contract's `PaidOut` events and the accounts' token balances."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_twisted

from perund.chain.anvil import Anvil, rpc_call
from perund.chain.embedded import TEST_TOKEN_SYMBOL
from perund.channel.types import ETH, Address, ChannelID, to_address
from perund.cli.generate import Generated
from tests.integration.daemons import assert_clean_log
from tests.integration.onchain import stored_channel, take_back_pending, until
from tests.integration.pair import CHALLENGE, DEV_INDEX, World, stale_state_refuted

UNIT = 10**18


def units(amount: str) -> int:
    return int(Decimal(amount) * UNIT)


@pytest.fixture
def world(anvil_token_setup: Generated, tmp_path: Path, anvil: Anvil) -> Iterator[World]:
    w = World(anvil_token_setup, tmp_path, anvil)
    try:
        yield w
    finally:
        w.close()
    for daemon in w.daemons.values():
        assert_clean_log(daemon)


def token_of(w: World) -> Address:
    config = w.alice.call("node_getConfig")
    return to_address(config["assets"][TEST_TOKEN_SYMBOL]["address"])


async def token_balances(w: World, token: Address) -> dict[str, int]:
    chain = await w.connected()
    return {name: await chain.token_balance(token, to_address(w.receiver(name)))
            for name in ("alice", "bob")}


def open_token_channel(w: World, eth: tuple[str, str], prn: tuple[str, str]) -> str:
    with w.pushes("bob") as pushes:
        opening = w.background(w.call, "alice", "channel_open", peer="bob",
                               balances={"ETH": {"self": eth[0], "peer": eth[1]},
                                         "PRN": {"self": prn[0], "peer": prn[1]}},
                               challengeDuration=CHALLENGE)
        proposal = pushes.wait(lambda p: "proposalId" in p)
        w.call("bob", "channel_respondProposal", proposalId=proposal["proposalId"],
               accept=True)
        channel = opening.result(120)
    assert channel["phase"] == "open"
    return str(channel["channelId"])


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_an_old_token_state_registered_by_the_cheater_is_refuted(
        world: World, tmp_path: Path) -> None:
    w = world
    token = token_of(w)
    before = await token_balances(w, token)
    cid = open_token_channel(w, ("1", "1"), ("10", "10"))
    w.call("alice", "channel_send", channelId=cid, payments=[
        {"currency": "PRN", "payee": "bob", "amount": "4"}])          # PRN: alice 6, bob 14
    backup = w.backup("bob", tmp_path)
    latest = w.call("bob", "channel_send", channelId=cid, payments=[
        {"currency": "PRN", "payee": "alice", "amount": "9"},
        {"currency": "ETH", "payee": "alice", "amount": "0.25"}])     # PRN 15 / 5, ETH 1.25 / 0.75
    assert latest["balances"] == {"ETH": {"self": "0.75", "peer": "1.25"},
                                  "PRN": {"self": "5", "peer": "15"}}
    w.bob.kill()

    done = await stale_state_refuted(w, cid, stored_channel(backup, cid), latest["version"])
    assert done["channel"]["paidOut"] == {"ETH": "1.25", "PRN": "15"}
    alice, bob = w.receiver("alice"), w.receiver("bob")
    assert await w.view.paid_per_asset(cid) == {
        (alice, ETH): units("1.25"), (bob, ETH): units("0.75"),
        (alice, token): 15 * UNIT, (bob, token): 5 * UNIT}
    after = await token_balances(w, token)
    assert after["alice"] - before["alice"] == 5 * UNIT
    assert after["bob"] - before["bob"] == -5 * UNIT
    chain = await w.connected()
    channel = ChannelID(bytes.fromhex(cid[2:]))
    assert await chain.holdings(channel, token) == (0, 0)
    assert await chain.holdings(channel, ETH) == (0, 0)


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_peer_that_never_funds_gets_the_token_deposit_refunded(world: World) -> None:
    w = world
    token = token_of(w)
    before = await token_balances(w, token)
    url = w.anvil.url
    # Bob's deposit never makes it into a block (bob takes it back: a transaction of his
    # with the same nonce and higher fees replaces it); alice's does.
    rpc_call(url, "evm_setAutomine", [False])
    try:
        with w.pushes("bob") as pushes:
            opening = w.background(w.request, "alice", "channel_open", peer="bob",
                                   balances={"ETH": {"self": "2", "peer": "1"},
                                             "PRN": {"self": "30", "peer": "20"}},
                                   challengeDuration=CHALLENGE)
            proposal = pushes.wait(lambda p: "proposalId" in p)
            accepting = w.background(w.request, "bob", "channel_respondProposal",
                                     proposalId=proposal["proposalId"], accept=True)
            take_back_pending(url, DEV_INDEX["bob"])
            rpc_call(url, "evm_setAutomine", [True])
            rpc_call(url, "evm_mine", [])
            accepting.result(60)
            answer = opening.result(60)
    finally:
        rpc_call(url, "evm_setAutomine", [True])
    assert answer["error"]["code"] == 103, answer  # the peer did not fund
    (channel,) = w.call("alice", "channel_list")
    cid = channel["channelId"]
    until(lambda: w.channel("alice", cid)["phase"] == "disputed", "the registration")
    w.travel(CHALLENGE + 1)
    until(lambda: w.phase("alice", cid) == "closed", "alice's node concluding")
    alice = w.receiver("alice")
    # Version 0 is underfunded: each gets back exactly what it deposited, per asset.
    assert await w.view.paid_per_asset(cid) == {(alice, ETH): 2 * UNIT, (alice, token): 30 * UNIT}
    assert await token_balances(w, token) == before
