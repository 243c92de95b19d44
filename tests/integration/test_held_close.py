"""A channel held because a deep reorganisation dropped the PEER's deposit closes by force on
the honest side's word, with two real daemons on an anvil that mines a block a second (the
reorganisation helpers of test_reorgs): a plain forced close is refused, saying what the user
would get back; a confirmed one registers the latest state, survives a kill -9 of the node
while disputed, and pays each side back exactly what the chain holds of its deposit, to the
wei; should the peer deposit again during the challenge, the state is paid instead. The
channel used to stay held for as long as the peer chose, our deposit locked in it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_twisted

from perund.chain.account import Account
from perund.chain.anvil import Anvil, free_port
from perund.channel.types import ETH
from perund.cli.generate import Generated, anvil_dev_key, generate
from tests.integration.daemons import assert_clean_log
from tests.integration.onchain import Ledger, channel_id, until, wei
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


@dataclass
class Held:
    """A channel the honest side's node holds because the peer's deposit is gone."""

    channel_id: str
    honest: str
    peer: str
    deposits: dict[str, str]
    balance: str
    """The honest side's balance: its deposit and the 1 ETH the peer paid it."""
    ledger: Ledger
    redeposits: int
    """How often the honest node deposited its share again (once when the reorganisation
    took both deposits, mined in one block)."""


def held_for_the_peers_deposit(w: World, chain: Anvil) -> Held:
    """alice deposits 5 ETH, bob 3; the later depositor (the peer) pays the other (the honest
    side) 1 ETH, its node dies, and its deposit goes with a reorganisation deeper than the
    confirmations: the honest node holds the channel. (Deposits mined in one block go
    together, and the honest node deposits its share again by itself: the peer's is still
    missing then.)"""
    accounts = {name: w.users[name].on_chain_address for name in ("alice", "bob")}
    ledger = Ledger(w.view, accounts)
    before = head(chain)
    deposits = {"alice": "5", "bob": "3"}
    cid = w.open_channel(deposits["alice"], deposits["bob"])
    until(lambda: w.phase("bob", cid) == "open", "bob's node sees the channel funded")
    blocks = {name: transaction_from(chain, accounts[name], before) for name in accounts}
    peer = max(blocks, key=lambda name: (blocks[name], name))  # the later deposit
    honest = "alice" if peer == "bob" else "bob"
    w.pay(peer, cid, "1")  # the peer pays the honest side 1 ETH
    balance = str(int(deposits[honest]) + 1)
    assert w.channel(honest, cid)["balances"]["ETH"]["self"] == balance
    # The peer's node dies (it would deposit its share again by itself); its deposit goes.
    w.daemons[peer].kill()
    time.sleep(CONFIRMATIONS + 2)  # the honest node's watcher passed the deposit's block
    drop_from(chain, blocks[peer])
    held = {"expected": "8", "held": deposits[honest]}
    until(lambda: w.channel(honest, cid).get("depositsMissing") == {"ETH": held},
          "the honest node holds the channel for the peer's share", 60)
    redeposits = int(blocks["alice"] == blocks["bob"])
    log = w.daemons[honest].log.read_text()
    assert log.count("of our share again in block") == redeposits, log[-4000:]
    return Held(cid, honest, peer, deposits, balance, ledger, redeposits)


@pytest_twisted.ensureDeferred
async def test_a_channel_held_for_the_peers_lost_deposit_closes_by_force_once_confirmed(
        pair: tuple[World, Miner], chain: Anvil) -> None:
    w, _ = pair
    h = held_for_the_peers_deposit(w, chain)
    cid, honest, peer, deposits = h.channel_id, h.honest, h.peer, h.deposits

    # A plain forced close is refused, saying plainly what it would pay.
    refused = w.request(honest, "channel_close", channelId=cid, force=True)
    error = refused["error"]
    assert error["code"] == 204, refused
    assert "no longer holds the peer's deposit" in error["message"], error
    assert (f"you would get back {deposits[honest]} ETH (your balance is {h.balance} ETH: the "
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
    assert h.ledger.net() == {"alice": 0, "bob": 0}
    log = w.daemons[honest].log.read_text()
    assert log.count("of our share again in block") == h.redeposits, log[-4000:]
    assert_clean_log(w.daemons[honest])


@pytest_twisted.ensureDeferred
async def test_a_peer_depositing_again_during_the_challenge_gets_the_state_paid(
        pair: tuple[World, Miner], chain: Anvil) -> None:
    """The peer's share comes back while the forced close is disputed: the channel holds its
    state again, so the conclusion pays the balances, and the node reports what was paid."""
    w, _ = pair
    h = held_for_the_peers_deposit(w, chain)
    cid, honest, peer, deposits = h.channel_id, h.honest, h.peer, h.deposits
    closing = w.background(w.call, honest, "channel_close", channelId=cid, force=True,
                           acceptDepositsBack=True)
    until(lambda: w.on_chain_version(honest, cid) is not None, "the registration", 60)
    backend = await w.connected()
    await backend.deposit(Account(anvil_dev_key(1 if peer == "alice" else 2)), channel_id(cid),
                          0 if peer == "alice" else 1, ETH, wei(deposits[peer]))
    until(lambda: "depositsMissing" not in w.channel(honest, cid), "the hold ends", 45)
    w.travel(CHALLENGE + 1)
    closed = closing.result(90)
    assert closed["phase"] == "closed" and closed["paidOut"] == {"ETH": h.balance}, closed
    peer_balance = str(int(deposits[peer]) - 1)
    await w.check_payouts(cid, **{honest: wei(h.balance), peer: wei(peer_balance)})
    assert h.ledger.net() == {honest: wei("1"), peer: -wei("1")}
    log = w.daemons[honest].log.read_text()
    assert "is settling on-chain: it is no longer held" in log, log[-4000:]
    assert_clean_log(w.daemons[honest])
