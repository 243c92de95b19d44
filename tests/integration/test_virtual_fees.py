"""Intermediary fees end to end (issue #17 point 3): three real `twistd perund` daemons on
anvil, driven through the API only; ingrid's session charges openers a fee
(docs/protocol.md "Intermediary fees").

alice's open without `maxFee` fails before carol is asked, naming the fee; with it, the
virtual channel opens (the fee moving to ingrid in alice's lock), pays, folds, and both ledger
channels close on-chain, every account paid to the wei, the fee included; and when carol
vanishes, the dispute through both ledgers pays everyone exactly, the fee included.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted

from perund.chain.anvil import Anvil
from perund.cli.generate import Generated
from tests.integration.daemons import assert_clean_log
from tests.integration.hub import CHALLENGE, Hub
from tests.integration.onchain import until, wei
from tests.integration.test_daemons import metric, scrape

FEE = "0.0011"  # 0.0001 ETH base + 1000 ppm of the 1 ETH locked


@pytest.fixture
def hub(hub_setup: Generated, tmp_path: Path, anvil: Anvil) -> Iterator[Hub]:
    h = Hub(hub_setup, tmp_path, anvil, intermediary={
        "enabled": True, "lock_window": "5s", "fee": {"ETH": {"base": "0.0001", "ppm": 1000}}})
    try:
        yield h
    finally:
        h.close()
    for daemon in h.daemons.values():
        assert_clean_log(daemon)


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_ingrid_charges_a_fee_and_every_account_is_paid_to_the_wei(hub: Hub) -> None:
    h = hub
    (ingrid,) = h.daemons["ingrid"].call("session_list")
    assert ingrid["intermediary"] == {"lockWindow": 5.0,
                                      "fee": {"ETH": {"base": "0.0001", "ppm": 1000}}}
    la, lc = h.ledgers()
    nonces = h.nonces()
    # Without maxFee alice pays nothing: the open fails, naming the fee, before carol is asked.
    opening = {"peer": "carol", "balances": {"ETH": {"self": "1", "peer": "0"}},
               "challengeDuration": 60, "via": "ingrid"}
    with h.pushes("carol") as pushes:
        refused = h.request("alice", "channel_open", **opening)
        assert refused["error"]["code"] == 204, refused
        assert f"charges a fee of {FEE} ETH" in refused["error"]["message"]
        assert refused["error"]["data"]["fee"] == {"ETH": FEE}
        too_low = h.request("alice", "channel_open", **opening, maxFee={"ETH": "0.001"})
        assert too_low["error"]["code"] == 204, too_low
        with pytest.raises(TimeoutError):  # carol was never asked
            pushes.wait(lambda p: "proposalId" in p, timeout=1.0)
    v = h.open("alice", "carol", "1", "0", via="ingrid", max_fee="0.01")
    vid = v["channelId"]
    # The lock moved the fee (the quote, not the limit) from alice to ingrid.
    assert h.channel("alice", la)["balances"] == {"ETH": {"self": "3.9989", "peer": "5.0011"}}
    assert h.channel("alice", la)["fees"] == {"ETH": {"earned": "0", "paid": FEE}}
    assert h.channel("ingrid", la)["fees"] == {"ETH": {"earned": FEE, "paid": "0"}}
    assert "fees" not in h.channel("carol", lc) and "fees" not in h.channel("ingrid", lc)
    earned = 'perund_intermediary_fees{currency="ETH",direction="earned"}'
    paid = 'perund_intermediary_fees{currency="ETH",direction="paid"}'
    assert metric(scrape(h.daemons["ingrid"]), earned) == float(FEE)
    assert metric(scrape(h.daemons["alice"]), paid) == float(FEE)
    assert metric(scrape(h.daemons["carol"]), paid) == 0.0
    for _ in range(10):
        h.call("alice", "channel_send", channelId=vid, payments=[
            {"currency": "ETH", "payee": "carol", "amount": "0.01"}])
    with h.pushes("carol") as pushes:
        closing = h.background(h.call, "alice", "channel_close", channelId=vid)
        final = pushes.wait(lambda p: p.get("type") == "final")
        h.call("carol", "channel_respondUpdate", channelId=vid, updateId=final["updateId"],
               accept=True)
        assert closing.result(60)["phase"] == "closed"
    until(lambda: h.channel("carol", vid)["phase"] == "closed", "carol's fold")
    assert h.nonces() == nonces  # the fee moved with no transaction either
    assert h.channel("alice", la)["balances"] == {"ETH": {"self": "4.8989", "peer": "5.1011"}}
    assert h.channel("carol", lc)["balances"] == {"ETH": {"self": "5.1", "peer": "4.9"}}
    for name, cid in (("alice", la), ("carol", lc)):
        with h.pushes("ingrid") as pushes:
            closing = h.background(h.call, name, "channel_close", channelId=cid)
            final = pushes.wait(lambda p: p.get("type") == "final")
            h.call("ingrid", "channel_respondUpdate", channelId=cid,
                   updateId=final["updateId"], accept=True)
            assert closing.result(60)["phase"] == "closed"
    # alice: 5 - 1 locked - the fee + 0.9 back; ingrid: 5 + the fee + carol's 0.1 in L_A,
    # 5 - alice's 1 locked + alice's 0.9 in L_C; carol: 5 + 0.1.
    await h.check_payouts(la, alice=wei("4.8989"), ingrid=wei("5.1011"))
    await h.check_payouts(lc, carol=wei("5.1"), ingrid=wei("4.9"))
    assert wei("5.1011") + wei("4.9") == wei("10") + wei(FEE)


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_carol_gone_the_dispute_pays_everyone_with_the_fee_included(hub: Hub) -> None:
    h = hub
    la, lc = h.ledgers()
    vid = h.open("alice", "carol", "1", "0", via="ingrid", max_fee=FEE)["channelId"]
    for _ in range(3):
        h.call("alice", "channel_send", channelId=vid, payments=[
            {"currency": "ETH", "payee": "carol", "amount": "0.1"}])
    h.daemons["carol"].kill()
    closing = h.background(h.call, "alice", "channel_close", channelId=vid, force=True)
    until(lambda: h.channel("alice", vid)["phase"] == "disputed", "the virtual registration", 90)
    until(lambda: h.channel("ingrid", lc)["phase"] == "disputed", "ingrid's registration", 90)
    h.travel(CHALLENGE + 1)
    assert closing.result(120)["phase"] == "closed"
    until(lambda: h.channel("alice", la)["phase"] == "closed", "alice's ledger concluded", 90)
    until(lambda: h.channel("ingrid", lc)["phase"] == "closed", "carol's ledger concluded", 90)
    # alice: her free 4 less the fee + her virtual 0.7; ingrid: 5 + the fee + carol's 0.3 in
    # L_A; carol, offline, is paid her 5 + 0.3 in L_C all the same.
    await h.check_payouts(la, alice=wei("4.6989"), ingrid=wei("5.3011"))
    await h.check_payouts(lc, carol=wei("5.3"), ingrid=wei("4.7"))
