"""Disputes end to end (issue #6): two real `twistd perund` daemons on anvil, driven through the
API, against a peer that cheats, vanishes, never funds or refuses to close; and a closer whose
node is killed in the middle of its close.

The cheating peer is a test script holding bob's keys: it keeps a copy of bob's store from an
earlier state (a restored backup, the classic way to cheat a channel) and registers that old
state on the contract directly. Time moves with anvil's `evm_increaseTime` / `evm_mine`. Every
test checks the payouts of the contract's `PaidOut` events to the wei.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted

from perund.chain.anvil import Anvil, rpc_call
from perund.cli.generate import Generated
from tests.integration.daemons import assert_clean_log
from tests.integration.onchain import stored_channel, take_back_pending, until, wei
from tests.integration.pair import (
    CHALLENGE,
    DEV_INDEX,
    World,
    register_as,
    stale_state_refuted,
)


@pytest.fixture
def world(anvil_setup: Generated, tmp_path: Path, anvil: Anvil) -> Iterator[World]:
    w = World(anvil_setup, tmp_path, anvil)
    try:
        yield w
    finally:
        w.close()
    for daemon in w.daemons.values():
        assert_clean_log(daemon)


def on_chain_version(w: World, name: str, channel_id: str) -> int | None:
    return w.on_chain_version(name, channel_id)


def closed(w: World, name: str, channel_id: str) -> bool:
    return w.phase(name, channel_id) == "closed"


async def check_payouts(w: World, channel_id: str, alice: int, bob: int) -> None:
    await w.check_payouts(channel_id, alice, bob)


# ------------------------------------------------------------------------------------------------


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_an_old_state_registered_by_the_peer_is_refuted(world: World,
                                                              tmp_path: Path) -> None:
    w = world
    # The node refuses a challenge duration too short for its own reaction time.
    too_short = w.request("alice", "channel_open", peer="bob", challengeDuration=5,
                          balances={"ETH": {"self": "1", "peer": "0"}})
    assert too_short["error"]["code"] == 203, too_short
    assert too_short["error"]["data"]["name"] == "challengeDuration"
    assert too_short["error"]["message"].startswith("challenge duration too short: 5 s is "
                                                    "below this node's minimum of ")
    # Too long is said as such, with the range; so is a zero (not taken as "the default"),
    # and one past uint64 gets the node's range, not the wire's.
    for duration, way in ((31 * 86400, "long"), (0, "short"), (2**64, "long")):
        refused = w.request("alice", "channel_open", peer="bob", challengeDuration=duration,
                            balances={"ETH": {"self": "1", "peer": "0"}})
        error = refused["error"]
        assert error["code"] == 203, refused
        assert error["message"].startswith(f"challenge duration too {way}: "), refused
        assert error["message"].endswith(" to 30 d)"), refused
        assert error["data"]["maximum"] == 30 * 86400, refused

    cid = w.open_channel("5", "3")
    w.pay("alice", cid, "1")                     # alice 4, bob 4: the state bob will cheat with
    backup = w.backup("bob", tmp_path)
    latest = w.pay("bob", cid, "2.5")            # alice 6.5, bob 1.5
    assert latest["balances"] == {"ETH": {"self": "1.5", "peer": "6.5"}}
    w.bob.kill()

    await stale_state_refuted(w, cid, stored_channel(backup, cid), latest["version"])
    await check_payouts(w, cid, alice=wei("6.5"), bob=wei("1.5"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_node_that_was_down_during_the_register_refutes_on_restart(
        world: World, tmp_path: Path) -> None:
    w = world
    cid = w.open_channel("2", "2")
    w.pay("alice", cid, "1.5")                   # alice 0.5, bob 3.5
    backup = w.backup("bob", tmp_path)
    latest = w.pay("bob", cid, "3")              # alice 3.5, bob 0.5
    w.bob.kill()
    w.alice.stop()

    await register_as(w, "bob", stored_channel(backup, cid))
    w.travel(CHALLENGE // 2)                     # time passes; the challenge period still runs
    w.alice.start()
    # The node opens alice's session again by itself, and the first poll of its watcher finds
    # the registration: no user needs to do anything for the refutation.
    w.reattach("alice")
    assert [c["channelId"] for c in w.call("alice", "channel_list")] == [cid]
    until(lambda: on_chain_version(w, "alice", cid) == latest["version"], "the refutation")
    # What happened before anyone listened is pushed at the first subscribe: the cheater's
    # registration, seen in the first poll at start-up, and alice's refutation.
    with w.pushes("alice") as pushes:
        for version in (1, latest["version"]):
            pushed = pushes.wait(lambda p, v=version: p.get("type") == "disputed"
                                 and p["channel"]["onChain"]["version"] == v)
            assert pushed["channelId"] == cid
    w.travel(CHALLENGE)
    until(lambda: closed(w, "alice", cid), "alice's node concluding")
    await check_payouts(w, cid, alice=wei("3.5"), bob=wei("0.5"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_close_with_a_vanished_peer_settles_through_a_dispute(world: World) -> None:
    w = world
    cid = w.open_channel("3", "1")
    w.pay("alice", cid, "0.75")                  # alice 2.25, bob 1.75
    w.bob.kill()
    closing = w.background(w.call, "alice", "channel_close", channelId=cid, peerWait=0)
    until(lambda: w.channel("alice", cid)["phase"] == "disputed", "alice's registration", 90)
    w.travel(CHALLENGE + 1)
    info = closing.result(60)
    assert info["phase"] == "closed" and info["version"] == 1
    await check_payouts(w, cid, alice=wei("2.25"), bob=wei("1.75"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_peer_that_never_funds_gets_everyone_their_deposit_back(world: World) -> None:
    w = world
    url = w.anvil.url
    # Bob's node accepts and sends its deposit, but bob takes it back before it is mined (a
    # transaction of his with the same nonce and higher fees replaces it); alice's is mined.
    rpc_call(url, "evm_setAutomine", [False])
    try:
        with w.pushes("bob") as pushes:
            opening = w.background(w.request, "alice", "channel_open", peer="bob",
                                   balances={"ETH": {"self": "2", "peer": "1"}},
                                   challengeDuration=CHALLENGE)
            proposal = pushes.wait(lambda p: "proposalId" in p)
            accepting = w.background(w.request, "bob", "channel_respondProposal",
                                     proposalId=proposal["proposalId"], accept=True)
            take_back_pending(url, DEV_INDEX["bob"])
            rpc_call(url, "evm_setAutomine", [True])
            rpc_call(url, "evm_mine", [])
            accepted = accepting.result(60)
            answer = opening.result(60)
    finally:
        rpc_call(url, "evm_setAutomine", [True])
    # Bob's user learns the channel was not funded: his deposit failed (after the transaction
    # timeout, 10 s) or, first, alice registered version 0 (after the funding timeout, 8 s).
    error = accepted["error"]
    assert (error["code"] == 103 and "before the channel was funded" in error["message"]) or \
        (error["code"] == 301 and "our deposit failed" in error["message"]), accepted
    # Funding timed out: alice is told the peer did not fund; her node registers version 0.
    assert answer["error"]["code"] == 103, answer
    (channel,) = w.call("alice", "channel_list")
    cid = channel["channelId"]
    until(lambda: w.channel("alice", cid)["phase"] == "disputed", "the registration")
    w.travel(CHALLENGE + 1)
    until(lambda: closed(w, "alice", cid), "alice's node concluding")
    await check_payouts(w, cid, alice=wei("2"), bob=0)


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_refused_final_update_closes_through_a_dispute(world: World) -> None:
    w = world
    cid = w.open_channel("4", "4")
    w.pay("bob", cid, "1")                       # alice 5, bob 3
    with w.pushes("bob") as bob_pushes, w.pushes("alice") as alice_pushes:
        closing = w.background(w.call, "alice", "channel_close", channelId=cid)
        final = bob_pushes.wait(lambda p: p.get("type") == "final")
        w.call("bob", "channel_respondUpdate", channelId=cid, updateId=final["updateId"],
               accept=False)
        # Both nodes follow the dispute alice's node opens.
        for pushes in (alice_pushes, bob_pushes):
            disputed = pushes.wait(lambda p: p.get("type") == "disputed")
            assert disputed["channel"]["onChain"]["version"] == 1
        w.travel(CHALLENGE + 1)
        info = closing.result(60)
        assert info["phase"] == "closed"
        for pushes in (alice_pushes, bob_pushes):
            done = pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid)
            assert done["error"]  # closed by a dispute, not by a final state both signed
    until(lambda: closed(w, "bob", cid), "bob's node following the dispute")
    await check_payouts(w, cid, alice=wei("5"), bob=wei("3"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_an_unanswered_final_update_closes_through_a_dispute(world: World) -> None:
    """Bob's node is up but his user never answers: after the response timeout the close goes
    on-chain without him."""
    w = world
    cid = w.open_channel("1", "1")
    w.pay("alice", cid, "0.5")                   # alice 0.5, bob 1.5
    with w.pushes("bob") as bob_pushes:
        closing = w.background(w.call, "alice", "channel_close", channelId=cid)
        bob_pushes.wait(lambda p: p.get("type") == "final")  # seen, never answered
        until(lambda: w.channel("alice", cid)["phase"] == "disputed", "alice's registration", 60)
        w.travel(CHALLENGE + 1)
        assert closing.result(60)["phase"] == "closed"
        bob_pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid)
    await check_payouts(w, cid, alice=wei("0.5"), bob=wei("1.5"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_close_cut_by_a_kill_goes_on_after_the_restart(world: World) -> None:
    """alice's node is killed while her close waits for bob's user: the restarted node
    resumes the close, noted in its store (perund/session/closing.py)."""
    w = world
    cid = w.open_channel("1", "1")
    w.pay("alice", cid, "0.5")                   # alice 0.5, bob 1.5
    with w.pushes("bob") as bob_pushes:
        closing = w.background(w.call, "alice", "channel_close", channelId=cid)
        first = bob_pushes.wait(lambda p: p.get("type") == "final")  # not answered yet
        w.daemons["alice"].kill()
        with contextlib.suppress(Exception):
            closing.result(30)  # the call died with the node
        w.restart("alice")
        again = bob_pushes.wait(lambda p: p.get("type") == "final"
                                and p["updateId"] != first["updateId"], timeout=60)
        w.call("bob", "channel_respondUpdate", channelId=cid, updateId=again["updateId"],
               accept=True)
        until(lambda: w.phase("alice", cid) == "closed", "alice's channel closed", 60)
        bob_pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid)
    assert w.phase("bob", cid) == "closed"
    await w.check_payouts(cid, wei("0.5"), wei("1.5"))
