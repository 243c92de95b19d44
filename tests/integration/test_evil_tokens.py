"""Hostile tokens against two real daemons on anvil (the audit of hostile tokens): a configured
token that breaks (every call reverts, as an upgraded proxy might) or that the config gets
wrong disables that token alone; the node still starts and watches and settles every channel,
those holding the token too; a payout the token refuses is shown as owed, not paid, across
restarts, until the node withdraws it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest_twisted
import yaml

from perund.chain.anvil import Anvil
from perund.channel.types import to_address
from perund.errors import FailedPrecondition
from tests.cli.conftest import CLI, cli_env
from tests.integration.daemons import assert_clean_log
from tests.integration.evil import SUPPLY, SYMBOL, evil_world, open_channel, send
from tests.integration.onchain import stored_channel, until, wei
from tests.integration.pair import CHALLENGE, World, stale_state_refuted
from tests.integration.test_daemons import metric, scrape


def critical_lines(text: str, what: str) -> list[str]:
    return [line for line in text.splitlines() if "#critical]" in line and what in line]


@pytest_twisted.ensureDeferred
async def test_a_token_that_breaks_leaves_the_node_watching_every_channel(
        anvil: Anvil, tmp_path: Path) -> None:
    w, token = await evil_world(anvil, tmp_path)
    try:
        eth = open_channel(w, {"ETH": ("1", "1")})
        evl = open_channel(w, {SYMBOL: ("10", "10")})
        send(w, "bob", eth, "ETH", "0.1")
        backup = w.backup("bob", tmp_path)  # alice 1.1 ETH, bob 0.9
        send(w, "bob", eth, "ETH", "0.8")  # alice 1.9 ETH, bob 0.1
        send(w, "alice", evl, SYMBOL, "3")  # alice 7 EVL, bob 13
        token.tx("setBroken", True)  # every call of the token reverts from now on
        w.alice.stop()
        w.restart("alice")  # the node starts all the same

        # The token is disabled, alone, and says so: once in the log, in the config, a metric.
        assets = w.alice.call("node_getConfig")["assets"]
        assert "does not answer decimals()" in assets[SYMBOL]["disabled"], assets
        assert "disabled" not in assets["ETH"], assets
        assert len(critical_lines(w.alice.log.read_text(), f"chain.assets.{SYMBOL}:")) == 1
        assert metric(scrape(w.alice), f'perund_token_disabled{{currency="{SYMBOL}"}}') == 1
        assert metric(scrape(w.bob), f'perund_token_disabled{{currency="{SYMBOL}"}}') == 0
        # No new channel in it.
        reply = w.request("alice", "channel_open", peer="bob",
                          balances={SYMBOL: {"self": "1", "peer": "1"}},
                          challengeDuration=CHALLENGE)
        assert reply["error"]["code"] == FailedPrecondition.code, reply
        assert reply["error"]["data"]["asset"] == SYMBOL, reply

        # The channel holding it still closes: the Adjudicator credits the payouts the token
        # refuses (both, here), and alice's node shows hers.
        w.close_together("alice", "bob", evl)
        chain = await w.connected()
        assert await chain.owed(to_address(w.receiver("alice")), to_address(token.address)) \
            == wei("7")
        assert w.channel("alice", evl)["credited"] == {SYMBOL: "7"}

        # Bob registers the old state of the ETH channel: alice's node refutes it.
        w.bob.stop()
        old = stored_channel(backup, eth)
        await stale_state_refuted(w, eth, old, w.channel("alice", eth)["version"])
        await w.check_payouts(eth, wei("1.9"), wei("0.1"))
    finally:
        w.close()
    assert_clean_log(w.alice)


@pytest_twisted.ensureDeferred
async def test_a_typo_in_a_token_entry_disables_it_and_the_node_starts(
        anvil: Anvil, tmp_path: Path) -> None:
    w, _ = await evil_world(anvil, tmp_path)
    try:
        # Alice's operator gets the decimals wrong, and adds a token at an address with no code.
        w.alice.stop()
        node = yaml.safe_load(w.alice.config.read_text())
        node["chain"]["assets"][SYMBOL]["decimals"] = 6
        node["chain"]["assets"]["USDC"] = {"address": "0x" + "5a" * 20, "decimals": 6}
        w.alice.config.write_text(yaml.safe_dump(node))
        w.restart("alice")
        assets = w.alice.call("node_getConfig")["assets"]
        assert assets[SYMBOL]["disabled"].startswith("decimals is 6 in the config, but the "
                                                     "token at "), assets
        assert assets["USDC"]["disabled"].startswith("no contract at 0x5a5A5a5a"), assets
        log = w.alice.log.read_text()
        assert len(critical_lines(log, f"chain.assets.{SYMBOL}:")) == 1
        assert len(critical_lines(log, "chain.assets.USDC:")) == 1

        # Bob proposes a channel in EVL: alice's user cannot accept it, only reject it.
        with w.pushes("alice") as pushes:
            opening = w.background(w.request, "bob", "channel_open", peer="alice",
                                   balances={SYMBOL: {"self": "1", "peer": "1"}},
                                   challengeDuration=CHALLENGE)
            proposal = pushes.wait(lambda p: "proposalId" in p)
            reply = w.request("alice", "channel_respondProposal",
                              proposalId=proposal["proposalId"], accept=True)
            assert reply["error"]["code"] == FailedPrecondition.code, reply
            assert reply["error"]["data"]["asset"] == SYMBOL, reply
            w.call("alice", "channel_respondProposal", proposalId=proposal["proposalId"],
                   accept=False)
            assert "rejected" in opening.result(60)["error"]["message"]
        # An ETH channel opens as ever.
        open_channel(w, {"ETH": ("1", "1")})
    finally:
        w.close()
    assert_clean_log(w.alice)


def cli(w: World, name: str, *args: str) -> str:
    """What `perund-cli --session <name's> ARGS` prints, against `name`'s node."""
    daemon = w.daemons[name]
    run = subprocess.run(
        [CLI, "--session", w.sessions[name], *args], capture_output=True, text=True,
        timeout=60, env=cli_env(daemon, daemon.workdir / f"cli-{name}"))
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


@pytest_twisted.ensureDeferred
async def test_a_credited_payout_is_shown_as_owed_across_restarts_until_withdrawn(
        anvil: Anvil, tmp_path: Path) -> None:
    w, token = await evil_world(anvil, tmp_path)
    try:
        cid = open_channel(w, {SYMBOL: ("10", "10")})
        send(w, "alice", cid, SYMBOL, "3")  # alice 7 EVL, bob 13
        token.tx("setBlocked", w.receiver("bob"), True)  # the token refuses bob's account
        w.close_together("alice", "bob", cid)
        until(lambda: w.phase("bob", cid) == "closed", "bob's node seeing the conclusion")
        chain = await w.connected()
        bob, evl = to_address(w.receiver("bob")), to_address(token.address)
        assert await chain.owed(bob, evl) == wei("13")

        def shown() -> dict[str, Any]:
            channel = w.channel("bob", cid)
            return {k: channel.get(k) for k in ("paidOut", "credited", "withdrawn")}

        owed = {"paidOut": {SYMBOL: "0"}, "credited": {SYMBOL: "13"}, "withdrawn": None}
        assert shown() == owed
        assert w.channel("alice", cid).get("paidOut") == {SYMBOL: "7"}
        info = cli(w, "bob", "channel", "info", cid)
        assert "13 EVL owed to you, not paid yet" in info, info
        assert "you 13 EVL" not in info.split("paid out", 1)[1], info
        # A restart: the payout and the credit are still known.
        w.bob.stop()
        w.restart("bob")
        assert shown() == owed
        # The token lets bob's account go: the withdraw at the next open gets the credit.
        token.tx("setBlocked", w.receiver("bob"), False)
        w.bob.stop()
        w.restart("bob")
        withdrawn = until(lambda: shown()["withdrawn"], "bob's node withdrawing")
        assert set(withdrawn) == {SYMBOL} and shown()["credited"] == {SYMBOL: "13"}
        assert await chain.owed(bob, evl) == 0
        assert token.view("balanceOf", w.receiver("bob")) == SUPPLY - wei("10") + wei("13")
        info = cli(w, "bob", "channel", "info", cid)
        assert "13 EVL credited, withdrawn " in info and "owed to you" not in info, info
    finally:
        w.close()
    assert_clean_log(w.bob)


@pytest_twisted.ensureDeferred
async def test_a_token_whose_balance_cannot_be_read_hides_no_other_currency(
        anvil: Anvil, tmp_path: Path) -> None:
    w, token = await evil_world(anvil, tmp_path)
    try:
        token.tx("setBroken", True)  # its balanceOf reverts
        balance = w.call("alice", "session_balance")
        assert list(balance["balances"]) == ["ETH"], balance
        assert "balanceOf reverts" in balance["errors"][SYMBOL], balance
        shown = cli(w, "alice", "balance")
        rows = {line.split()[0]: line.split(None, 1)[1] for line in shown.splitlines()[2:]}
        assert rows["ETH"] == balance["balances"]["ETH"], shown
        assert rows[SYMBOL].startswith("unknown: "), shown
    finally:
        w.close()
