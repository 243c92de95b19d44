"""Virtual channels end to end (issue #17): three real `twistd perund` daemons on anvil, one per
user (alice, ingrid the intermediary, carol), driven through the API only.

alice and carol each open a ledger channel with ingrid; alice opens a virtual channel with
carol through ingrid, pays her, and the virtual channel closes either cooperatively (folded
back into both ledgers, no transaction) or through a dispute (carol gone). Every payout is
checked to the wei from the contract's `PaidOut` events.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted

from perund.chain.account import Account
from perund.chain.anvil import Anvil
from perund.channel.types import VirtualProof
from perund.cli.generate import Generated, anvil_dev_key
from tests.integration.daemons import assert_clean_log
from tests.integration.hub import CHALLENGE, Hub
from tests.integration.onchain import stored_channel, until, wei


@pytest.fixture
def hub(hub_setup: Generated, tmp_path: Path, anvil: Anvil) -> Iterator[Hub]:
    h = Hub(hub_setup, tmp_path, anvil)
    try:
        yield h
    finally:
        h.close()
    for daemon in h.daemons.values():
        assert_clean_log(daemon)


def ledgers(h: Hub) -> tuple[str, str]:
    return h.ledgers()


# ------------------------------------------------------------------------------------------------


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_virtual_channel_opens_pays_and_closes_with_no_transaction(hub: Hub) -> None:
    h = hub
    la, lc = ledgers(h)
    nonces = h.nonces()
    v = h.open("alice", "carol", "1", "0", via="ingrid")
    vid = v["channelId"]
    assert v["kind"] == "virtual" and v["via"] == "ingrid" and v["fundedBy"] == [la, lc]
    assert h.channel("carol", vid)["fundedBy"] == [lc, la]
    assert h.channel("alice", la)["funds"] == [vid]
    assert h.channel("alice", la)["balances"] == {"ETH": {"self": "4", "peer": "5"}}
    # A ledger that funds an open virtual channel does not close.
    refused = h.request("alice", "channel_close", channelId=la)
    assert refused["error"]["code"] == 204 and refused["error"]["data"]["virtual_channels"] \
        == [vid], refused
    ingrid_versions = {cid: h.channel("ingrid", cid)["version"] for cid in (la, lc)}
    for _ in range(100):
        h.call("alice", "channel_send", channelId=vid, payments=[
            {"currency": "ETH", "payee": "carol", "amount": "0.001"}])
    assert h.channel("carol", vid)["balances"] == {"ETH": {"self": "0.1", "peer": "0.9"}}
    # Ingrid's node handled none of the payments: her ledgers did not move, she records none.
    assert {cid: h.channel("ingrid", cid)["version"] for cid in (la, lc)} == ingrid_versions
    assert h.call("ingrid", "payment_list")["payments"] == []
    assert len(h.call("carol", "payment_list", limit=200)["payments"]) == 100
    h.close_together("alice", "carol", vid)
    until(lambda: h.channel("carol", vid)["phase"] == "closed", "carol's fold")
    # No transaction from the ledgers' funding to the virtual channel's close.
    assert h.nonces() == nonces
    assert h.channel("alice", la)["balances"] == {"ETH": {"self": "4.9", "peer": "5.1"}}
    assert h.channel("carol", lc)["balances"] == {"ETH": {"self": "5.1", "peer": "4.9"}}
    assert h.channel("ingrid", la)["balances"] == {"ETH": {"self": "5.1", "peer": "4.9"}}
    assert "funds" not in h.channel("alice", la)
    # The ledgers close as any channel, paying the virtual channel's outcome to the wei.
    for name, cid in (("alice", la), ("carol", lc)):
        h.close_together(name, "ingrid", cid)
    await h.check_payouts(la, alice=wei("4.9"), ingrid=wei("5.1"))
    await h.check_payouts(lc, carol=wei("5.1"), ingrid=wei("4.9"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_carol_gone_alice_gets_her_balance_on_chain(hub: Hub) -> None:
    h = hub
    la, lc = ledgers(h)
    vid = h.open("alice", "carol", "1", "0", via="ingrid")["channelId"]
    for _ in range(3):
        h.call("alice", "channel_send", channelId=vid, payments=[
            {"currency": "ETH", "payee": "carol", "amount": "0.1"}])
    h.daemons["carol"].kill()
    closing = h.background(h.call, "alice", "channel_close", channelId=vid, force=True)
    until(lambda: h.channel("alice", vid)["phase"] == "disputed", "the virtual registration", 90)
    until(lambda: h.channel("alice", la)["phase"] == "disputed", "the ledger's registration")
    # Ingrid sees the virtual channel registered and takes her other ledger on-chain too.
    until(lambda: h.channel("ingrid", lc)["phase"] == "disputed", "ingrid's registration", 90)
    h.travel(CHALLENGE + 1)
    assert closing.result(120)["phase"] == "closed"
    until(lambda: h.channel("alice", la)["phase"] == "closed", "alice's ledger concluded", 90)
    until(lambda: h.channel("ingrid", lc)["phase"] == "closed", "carol's ledger concluded", 90)
    # alice: her free 4 + her virtual 0.7; carol, offline, is paid her 5 + 0.3 all the same.
    await h.check_payouts(la, alice=wei("4.7"), ingrid=wei("5.3"))
    await h.check_payouts(lc, carol=wei("5.3"), ingrid=wei("4.7"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_ingrid_gone_the_final_state_is_settled_through_both_ledgers(hub: Hub) -> None:
    h = hub
    la, lc = ledgers(h)
    vid = h.open("alice", "carol", "2", "0", via="ingrid")["channelId"]
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "0.5"}])
    h.daemons["ingrid"].kill()
    # alice and carol still pay each other: ingrid takes no part.
    h.call("carol", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "alice", "amount": "0.25"}])
    with h.pushes("carol") as pushes:
        closing = h.background(h.call, "alice", "channel_close", channelId=vid)
        final = pushes.wait(lambda p: p.get("type") == "final")
        h.call("carol", "channel_respondUpdate", channelId=vid, updateId=final["updateId"],
               accept=True)
    # The folds find nobody, and would go again for minutes (fold_retries.PATIENCE); each user
    # closes the ledger meanwhile, not waiting for ingrid, which disputes it with the final
    # state at once.
    until(lambda: all(h.channel(n, vid)["phase"] == "closing" for n in ("alice", "carol")),
          "the virtual channel final at both", 30)
    ledger_closes = [h.background(h.call, name, "channel_close", channelId=ledger, peerWait=0)
                     for name, ledger in (("alice", la), ("carol", lc))]
    for name, ledger in (("alice", la), ("carol", lc)):
        until(lambda n=name, c=ledger: h.channel(n, c)["phase"] == "disputed",
              f"{name}'s ledger registered", 90)
    h.travel(CHALLENGE + 1)
    assert closing.result(120)["phase"] == "closed"
    assert [c.result(120)["phase"] for c in ledger_closes] == ["closed", "closed"]
    for name, ledger in (("alice", la), ("carol", lc)):
        until(lambda n=name, c=ledger: h.channel(n, c)["phase"] == "closed",
              f"{name}'s ledger concluded", 90)
    until(lambda: h.channel("carol", vid)["phase"] == "closed", "carol's virtual channel")
    # Everyone gets the final state's outcome; ingrid's absence costs her only the close.
    await h.check_payouts(la, alice=wei("4.75"), ingrid=wei("5.25"))
    await h.check_payouts(lc, carol=wei("5.25"), ingrid=wei("4.75"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_a_stale_virtual_state_registered_by_a_cheater_is_refuted(
        hub: Hub, tmp_path: Path) -> None:
    h = hub
    la, lc = ledgers(h)
    vid = h.open("alice", "carol", "2", "0", via="ingrid")["channelId"]
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "0.1"}])   # alice 1.9: her backup
    backup = tmp_path / "alice-backup"
    shutil.copytree(h.users["alice"].session_file.parent / "db", backup)
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "1.5"}])   # alice 0.4, carol 1.6
    h.daemons["alice"].kill()
    # alice, cheating, registers her old virtual state through her ledger.
    v_old, la_old = stored_channel(backup, vid), stored_channel(backup, la)
    assert v_old.current is not None and la_old.current is not None
    chain = await h.view.connected()
    proof = VirtualProof(v_old.params, v_old.current.state,  # type: ignore[arg-type]
                         v_old.current.signatures)
    await chain.register_virtual(Account(anvil_dev_key(1)), la_old.params,  # type: ignore[arg-type]
                                 la_old.current.state, la_old.current.signatures, proof)
    # carol's node refutes with the latest state through her own ledger; ingrid settles both.
    until(lambda: (h.channel("carol", vid).get("onChain") or {}).get("version")
          == h.channel("carol", vid)["version"], "carol's refutation", 90)
    h.travel(CHALLENGE + 1)
    for name, ledger in (("ingrid", la), ("ingrid", lc)):
        until(lambda n=name, c=ledger: h.channel(n, c)["phase"] == "closed",
              f"{ledger} concluded", 90)
    until(lambda: h.channel("carol", vid)["phase"] == "closed", "carol's virtual channel", 90)
    await h.check_payouts(la, alice=wei("3.4"), ingrid=wei("6.6"))
    await h.check_payouts(lc, carol=wei("6.6"), ingrid=wei("3.4"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_restarts_keep_the_virtual_channel_and_the_intermediarys_record(hub: Hub) -> None:
    h = hub
    la, lc = ledgers(h)
    nonces = h.nonces()
    vid = h.open("alice", "carol", "1", "1", via="ingrid")["channelId"]
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "0.5"}])
    for name in ("ingrid", "alice"):
        h.daemons[name].stop()
        h.restart(name)
    assert h.channel("alice", vid)["kind"] == "virtual"
    assert h.channel("alice", vid)["balances"] == {"ETH": {"self": "0.5", "peer": "1.5"}}
    h.call("carol", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "alice", "amount": "0.25"}])
    h.close_together("carol", "alice", vid)
    until(lambda: h.channel("alice", vid)["phase"] == "closed", "alice's fold")
    assert h.nonces() == nonces
    assert h.channel("ingrid", la)["balances"] == {"ETH": {"self": "5.25", "peer": "4.75"}}
    assert h.channel("ingrid", lc)["balances"] == {"ETH": {"self": "4.75", "peer": "5.25"}}


async def register_old_ledger(h: Hub, backup: Path, ledger: str, cheater: int) -> None:
    """A cheater registers the ledger state of an old store backup (from before the lock)."""
    old = stored_channel(backup, ledger)
    assert old.current is not None and not old.current.state.locked
    await h.view.register_old(cheater, old)


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_alice_registers_her_ledger_from_before_the_lock_and_is_refuted(
        hub: Hub, tmp_path: Path) -> None:
    h = hub
    la, lc = ledgers(h)
    backup = tmp_path / "alice-backup"
    shutil.copytree(h.users["alice"].session_file.parent / "db", backup)
    vid = h.open("alice", "carol", "3", "0", via="ingrid")["channelId"]
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "2"}])     # alice 1, carol 2
    h.daemons["alice"].kill()
    await register_old_ledger(h, backup, la, cheater=1)  # alice 5, ingrid 5: no lock
    # ingrid refutes with the ledger's lock (and the virtual state she holds, version 0);
    # carol refutes that version 0 with the latest through her own ledger.
    until(lambda: h.channel("ingrid", la).get("onChain", {}).get("version")
          == h.channel("ingrid", la)["version"], "ingrid's refutation", 90)
    until(lambda: (h.channel("carol", vid).get("onChain") or {}).get("version")
          == h.channel("carol", vid)["version"], "carol's refutation", 90)
    h.travel(CHALLENGE + 1)
    for ledger in (la, lc):
        until(lambda c=ledger: h.channel("ingrid", c)["phase"] == "closed", "conclusions", 90)
    until(lambda: h.channel("carol", vid)["phase"] == "closed", "carol's virtual channel", 90)
    await h.check_payouts(la, alice=wei("3"), ingrid=wei("7"))
    await h.check_payouts(lc, carol=wei("7"), ingrid=wei("3"))


@pytest.mark.anvil
@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_ingrid_registers_a_ledger_from_before_the_lock_and_is_refuted(
        hub: Hub, tmp_path: Path) -> None:
    h = hub
    la, lc = ledgers(h)
    h.call("alice", "channel_send", channelId=la, payments=[
        {"currency": "ETH", "payee": "ingrid", "amount": "1"}])    # alice 4, ingrid 6
    backup = tmp_path / "ingrid-backup"
    shutil.copytree(h.users["ingrid"].session_file.parent / "db", backup)
    h.call("ingrid", "channel_send", channelId=la, payments=[
        {"currency": "ETH", "payee": "alice", "amount": "1"}])     # alice 5, ingrid 5
    vid = h.open("alice", "carol", "2", "0", via="ingrid")["channelId"]
    h.call("alice", "channel_send", channelId=vid, payments=[
        {"currency": "ETH", "payee": "carol", "amount": "0.5"}])   # alice 1.5, carol 0.5
    h.daemons["ingrid"].kill()
    await register_old_ledger(h, backup, la, cheater=2)  # alice 4, ingrid 6: no lock
    # alice refutes with her ledger's latest state and the virtual channel's; carol, seeing it
    # registered, settles her ledger through it too. Ingrid is gone.
    until(lambda: (h.channel("alice", vid).get("onChain") or {}).get("version")
          == h.channel("alice", vid)["version"], "alice's refutation", 90)
    until(lambda: h.channel("carol", lc)["phase"] == "disputed", "carol's ledger", 90)
    h.travel(CHALLENGE + 1)
    until(lambda: h.channel("alice", la)["phase"] == "closed", "alice's ledger", 90)
    until(lambda: h.channel("carol", lc)["phase"] == "closed", "carol's ledger", 90)
    until(lambda: h.channel("alice", vid)["phase"] == "closed", "the virtual channel", 90)
    await h.check_payouts(la, alice=wei("4.5"), ingrid=wei("5.5"))
    await h.check_payouts(lc, carol=wei("5.5"), ingrid=wei("4.5"))
