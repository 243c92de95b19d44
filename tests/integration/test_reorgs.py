"""Reorganisations are survived, with two real daemons on an anvil that mines a block a second
and whose `anvil_reorg` replaces the newest blocks with empty ones, dropping their transactions
for good: a refutation or a conclusion dropped before the watchers passed its block is sent
again (perund.session.unconfirmed), a deposit dropped deeper than `chain.confirmations` after
the channel opened is made again (perund.session.missing_deposits), and every channel pays out
to the wei without a restart."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from perund.chain.anvil import Anvil, free_port, rpc_call
from perund.cli.generate import Generated, generate
from tests.integration.daemons import assert_clean_log
from tests.integration.onchain import channel_id, stored_channel, until, wei
from tests.integration.pair import CHALLENGE, World, register_as
from tests.node.conftest import deploy

pytestmark = pytest.mark.anvil

CONFIRMATIONS = 2


def rpc(anvil: Anvil, method: str, *params: object) -> Any:
    return rpc_call(anvil.url, method, list(params))


def head(anvil: Anvil) -> int:
    return int(rpc(anvil, "eth_blockNumber"), 16)


class Miner:
    """Mines a block every second in the background, as a live chain would (anvil mines only
    per transaction); `paused` holds it back."""

    def __init__(self, anvil: Anvil) -> None:
        self.anvil = anvil
        self.stopped = threading.Event()
        self.paused = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(1.0):
            if not self.paused.is_set():
                rpc(self.anvil, "evm_mine")

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def transaction_from(anvil: Anvil, sender: str, after: int) -> int:
    """The block of the first transaction from `sender` after block `after`."""
    seen, deadline = after, time.monotonic() + 60
    while time.monotonic() < deadline:
        while seen < head(anvil):
            seen += 1
            block = rpc(anvil, "eth_getBlockByNumber", hex(seen), True)
            if any(tx["from"].lower() == sender.lower() for tx in block["transactions"]):
                return seen
        time.sleep(0.02)
    raise AssertionError(f"no transaction from {sender} after block {after}")


def drop_from(anvil: Anvil, block: int) -> None:
    """Replace blocks `block` to the newest with empty ones."""
    rpc(anvil, "anvil_reorg", head(anvil) - block + 1, [])


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:  # one of its own: its blocks are replaced
        yield node


@pytest_twisted.async_fixture
async def setup(anvil: Anvil, tmp_path: Path) -> Generated:
    return generate(tmp_path, chain_url=anvil.url, chain_id=anvil.chain_id,
                    adjudicator=await deploy(anvil), api_port=free_port(),
                    comm_ports=(free_port(), free_port()))


@pytest.fixture
def world(setup: Generated, tmp_path: Path, anvil: Anvil) -> Iterator[tuple[World, Miner]]:
    miner = Miner(anvil)
    w = World(setup, tmp_path, anvil, confirmations=CONFIRMATIONS)
    try:
        yield w, miner
    finally:
        miner.stop()
        w.close()


@pytest_twisted.ensureDeferred
async def test_a_refutation_dropped_within_the_confirmations_is_sent_again(
        world: tuple[World, Miner], anvil: Anvil, tmp_path: Path) -> None:
    w, miner = world
    cid = w.open_channel("5", "3")
    w.pay("alice", cid, "1")  # 4 / 4
    backup = w.backup("bob", tmp_path)
    latest = w.pay("bob", cid, "2.5")["version"]  # 6.5 / 1.5
    w.bob.kill()
    before = head(anvil)
    await register_as(w, "bob", stored_channel(backup, cid))  # bob's 4 / 4
    refutation = transaction_from(anvil, w.users["alice"].on_chain_address, before)
    drop_from(anvil, refutation)
    status = await (await w.connected()).channel_status(channel_id(cid))
    assert status.version < latest  # the stale state stands on the chain again
    until(lambda: w.on_chain_version("alice", cid) == latest, "the refutation sent again", 50)
    miner.paused.set()
    w.travel(CHALLENGE + 1)
    until(lambda: w.phase("alice", cid) == "closed", "alice's node concluding", 60)
    await w.check_payouts(cid, alice=wei("6.5"), bob=wei("1.5"))


@pytest_twisted.ensureDeferred
async def test_a_conclusion_dropped_within_the_confirmations_is_made_again(
        world: tuple[World, Miner], anvil: Anvil) -> None:
    w, miner = world
    cid = w.open_channel("5", "3")
    w.pay("alice", cid, "1")
    w.pay("bob", cid, "0.25")  # 4.25 / 3.75
    before = head(anvil)
    miner.paused.set()  # the conclusion stays the newest block until it is dropped
    assert w.close_together("alice", "bob", cid)["paidOut"] == {"ETH": "4.25"}
    conclusion = transaction_from(anvil, w.users["alice"].on_chain_address, before)
    until(lambda: w.phase("bob", cid) == "closed", "bob's node seeing the conclusion")
    drop_from(anvil, conclusion)
    miner.paused.clear()
    chain = await w.connected()
    assert (await chain.channel_status(channel_id(cid))).phase.name != "CONCLUDED"
    deadline = time.monotonic() + 45
    while (await w.view.payouts(cid)) == {} and time.monotonic() < deadline:
        time.sleep(0.5)
    await w.check_payouts(cid, alice=wei("4.25"), bob=wei("3.75"))
    until(lambda: w.phase("alice", cid) == "closed" and w.phase("bob", cid) == "closed",
          "both nodes closed again", 45)


@pytest_twisted.ensureDeferred
async def test_a_dispute_conclusion_dropped_within_the_confirmations_is_made_again(
        world: tuple[World, Miner], anvil: Anvil, tmp_path: Path) -> None:
    # The second round's case: the conclusion after a dispute went, and the node, having
    # forgotten the dispute it settled again, found the registration on the chain and stopped
    # there: the deposits stayed in the contract, also across a restart.
    w, miner = world
    cid = w.open_channel("5", "3")
    w.pay("alice", cid, "1")
    backup = w.backup("bob", tmp_path)
    latest = w.pay("bob", cid, "2.5")["version"]  # 6.5 / 1.5
    w.bob.kill()
    await register_as(w, "bob", stored_channel(backup, cid))
    until(lambda: w.on_chain_version("alice", cid) == latest, "the refutation", 50)
    time.sleep(CONFIRMATIONS + 2)  # the refutation deeper than the confirmations
    miner.paused.set()
    before = head(anvil)
    w.travel(CHALLENGE + 1)
    conclusion = transaction_from(anvil, w.users["alice"].on_chain_address, before)
    until(lambda: w.phase("alice", cid) == "closed", "alice's node concluding")
    drop_from(anvil, conclusion)
    miner.paused.clear()
    chain = await w.connected()
    assert (await chain.channel_status(channel_id(cid))).phase.name != "CONCLUDED"
    deadline = time.monotonic() + 60
    while (await w.view.payouts(cid)) == {} and time.monotonic() < deadline:
        time.sleep(0.5)
    await w.check_payouts(cid, alice=wei("6.5"), bob=wei("1.5"))
    until(lambda: w.phase("alice", cid) == "closed", "alice's node closed again", 45)


def pending_transactions(anvil: Anvil, account: str) -> int:
    """How many transactions of `account` wait in anvil's pool."""
    return int(rpc(anvil, "eth_getTransactionCount", account, "pending"), 16) \
        - int(rpc(anvil, "eth_getTransactionCount", account, "latest"), 16)


@pytest_twisted.ensureDeferred
async def test_a_deposit_dropped_deeper_than_the_confirmations_is_made_again(
        world: tuple[World, Miner], anvil: Anvil) -> None:
    """A reorganisation deeper than `chain.confirmations` drops one side's deposit for good
    after the channel opened. Both nodes hold the channel (`depositsMissing` in `channel_get`
    and `channel_list`; a payment is refused, saying whose share is missing); the node whose
    deposit vanished deposits it again by itself, once; the hold ends, a payment goes through
    and a cooperative close pays out to the wei. The channel used to stay held for good, the
    honest side's deposit locked for as long as the other chose."""
    w, miner = world
    before = head(anvil)
    cid = w.open_channel("5", "3")
    until(lambda: w.phase("bob", cid) == "open", "bob's node sees the channel funded")
    blocks = {name: transaction_from(anvil, w.users[name].on_chain_address, before)
              for name in ("alice", "bob")}
    assert blocks["alice"] != blocks["bob"]
    vanished = max(blocks, key=lambda name: blocks[name])  # the later deposit: dropped alone
    other = "alice" if vanished == "bob" else "bob"
    account = w.users[vanished].on_chain_address
    expected = {"ETH": {"expected": "8", "held": "5" if vanished == "bob" else "3"}}

    # Nothing is mined while the nodes are looked at: the deposit made again waits in the pool.
    miner.paused.set()
    rpc(anvil, "evm_setAutomine", False)
    try:
        drop_from(anvil, blocks[vanished])  # both watchers had passed it: a deep reorg
        until(lambda: all(w.channel(name, cid).get("depositsMissing") == expected
                          for name in ("alice", "bob")), "both nodes hold the channel", 30)
        listed = [c for c in w.call(other, "channel_list") if c["channelId"] == cid]
        assert [c["phase"] for c in listed] == ["open"]
        assert [c.get("depositsMissing") for c in listed] == [expected]
        for name, whose in ((vanished, "This node deposits our share again"),
                            (other, "is the peer's to deposit again")):
            payee = "bob" if name == "alice" else "alice"
            refused = w.request(name, "channel_send", channelId=cid, payments=[
                {"currency": "ETH", "payee": payee, "amount": "1"}])
            assert refused["error"]["code"] == 204, refused
            assert "no longer holds this channel's deposits" in refused["error"]["message"]
            assert whose in refused["error"]["message"], refused
        until(lambda: pending_transactions(anvil, account) == 1,
              f"{vanished}'s node depositing again", 15)
    finally:
        rpc(anvil, "evm_setAutomine", True)
        miner.paused.clear()

    until(lambda: all("depositsMissing" not in w.channel(name, cid)
                      for name in ("alice", "bob")), "both nodes release the channel", 60)
    chain = await w.connected()
    # Deposited once again, no more: the chain holds exactly the shares.
    assert await chain.holdings(channel_id(cid)) == (wei("5"), wei("3"))
    log = w.daemons[vanished].log.read_text()
    assert log.count("of our share again in block") == 1, log[-4000:]
    w.pay("alice", cid, "1")  # 4 / 4
    w.pay("bob", cid, "0.5")  # 4.5 / 3.5
    assert w.close_together("alice", "bob", cid)["paidOut"] == {"ETH": "4.5"}
    await w.check_payouts(cid, alice=wei("4.5"), bob=wei("3.5"))
    for name in ("alice", "bob"):
        assert_clean_log(w.daemons[name])
