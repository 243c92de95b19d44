"""A channel held because a deep reorganisation dropped the PEER's deposit closes by force on
the honest side's word, with two real daemons on an anvil that mines a block a second (the
reorganisation helpers of test_reorgs): a plain forced close is refused, saying what the user
would get back; a confirmed one registers the latest state, survives a kill -9 of the node
while disputed, and pays each side back exactly what the chain holds of its deposit, to the
wei. The channel used to stay held for as long as the peer chose, our deposit locked in it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted

from perund.chain.anvil import Anvil, free_port
from perund.cli.generate import Generated, generate
from tests.integration.daemons import assert_clean_log
from tests.integration.onchain import Ledger, until, wei
from tests.integration.pair import CHALLENGE, World
from tests.integration.test_reorgs import CONFIRMATIONS, Miner, drop_from, head, transaction_from
from tests.node.conftest import deploy

pytestmark = pytest.mark.anvil


@pytest.fixture
def chain() -> Iterator[Anvil]:
    with Anvil() as node:  # one of its own: its blocks are replaced
        yield node


@pytest_twisted.async_fixture
async def generated(chain: Anvil, tmp_path: Path) -> Generated:
    return generate(tmp_path, chain_url=chain.url, chain_id=chain.chain_id,
                    adjudicator=await deploy(chain), api_port=free_port(),
                    comm_ports=(free_port(), free_port()))


@pytest.fixture
def pair(generated: Generated, tmp_path: Path, chain: Anvil) -> Iterator[tuple[World, Miner]]:
    miner = Miner(chain)
    w = World(generated, tmp_path, chain, confirmations=CONFIRMATIONS)
    try:
        yield w, miner
    finally:
        miner.stop()
        w.close()


@pytest_twisted.ensureDeferred
async def test_a_channel_held_for_the_peers_lost_deposit_closes_by_force_once_confirmed(
        pair: tuple[World, Miner], chain: Anvil) -> None:
    w, _ = pair
    accounts = {name: w.users[name].on_chain_address for name in ("alice", "bob")}
    ledger = Ledger(w.view, accounts)
    before = head(chain)
    deposits = {"alice": "5", "bob": "3"}
    cid = w.open_channel(deposits["alice"], deposits["bob"])
    until(lambda: w.phase("bob", cid) == "open", "bob's node sees the channel funded")
    blocks = {name: transaction_from(chain, accounts[name], before) for name in accounts}
    assert blocks["alice"] != blocks["bob"]
    peer = max(blocks, key=lambda name: blocks[name])  # the later deposit: dropped alone
    honest = "alice" if peer == "bob" else "bob"
    w.pay(peer, cid, "1")  # the peer pays the honest side 1 ETH: forfeited by the close
    balance = str(int(deposits[honest]) + 1)
    assert w.channel(honest, cid)["balances"]["ETH"]["self"] == balance
    # The peer's node dies (it would deposit its share again by itself); its deposit goes.
    w.daemons[peer].kill()
    time.sleep(CONFIRMATIONS + 2)  # the honest node's watcher passed the deposit's block
    drop_from(chain, blocks[peer])
    held = {"expected": "8", "held": deposits[honest]}
    until(lambda: w.channel(honest, cid).get("depositsMissing") == {"ETH": held},
          "the honest node holds the channel", 30)
    # A plain forced close is refused, saying plainly what it would pay.
    refused = w.request(honest, "channel_close", channelId=cid, force=True)
    error = refused["error"]
    assert error["code"] == 204, refused
    assert "no longer holds the peer's deposit" in error["message"], error
    assert (f"you would get back {deposits[honest]} ETH (your balance is {balance} ETH: the "
            "1 ETH the peer paid you is forfeited)") in error["message"], error
    assert "acceptDepositsBack" in error["message"], error
    assert error["data"]["depositsBack"] == {"ETH": f"{deposits[honest]} ETH"}, error
    # Without force the terms mean nothing: a mistake, said so.
    misused = w.request(honest, "channel_close", channelId=cid, acceptDepositsBack=True)
    assert misused["error"]["code"] == -32602, misused
    info = w.channel(honest, cid)
    assert info["phase"] == "open" and info["depositsBack"] == {"ETH": deposits[honest]}

    # Confirmed: the latest state is registered; a kill -9 meanwhile does not undo the close.
    closing = w.background(w.call, honest, "channel_close", channelId=cid, force=True,
                           acceptDepositsBack=True)
    until(lambda: w.on_chain_version(honest, cid) is not None, "the registration", 60)
    w.daemons[honest].kill()
    with pytest.raises(Exception):  # noqa: B017 - the call's connection went with the node
        closing.result(30)
    w.restart(honest)
    assert w.phase(honest, cid) in ("closing", "disputed")
    w.travel(CHALLENGE + 1)
    until(lambda: w.phase(honest, cid) == "closed", "the honest node concluding", 90)
    closed = w.channel(honest, cid)
    # What the contract paid, reported to the wei: the deposit, not the balance.
    assert closed["paidOut"] == {"ETH": deposits[honest]}, closed
    await w.check_payouts(cid, **{honest: wei(deposits[honest]), peer: 0})
    # On-chain, net of gas: the honest side has its deposit back, the peer never paid its.
    assert ledger.net() == {"alice": 0, "bob": 0}
    log = w.daemons[honest].log.read_text()
    assert "of our share again" not in log, log[-4000:]
    assert_clean_log(w.daemons[honest])
