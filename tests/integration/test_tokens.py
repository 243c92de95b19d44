"""Tokens over the API on the embedded chain (issue #14's acceptance): a channel holding ETH and
the dev chain's test token PRN, payments in both, a cooperative close, and every on-chain
balance checked to the unit, gas included; and what bad token input gets."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import yaml

from perund.chain.anvil import rpc_call
from perund.errors import InsufficientFunds
from tests.integration.daemons import Daemon, generated, running

ETHER = 10**18
TWISTD = str(Path(sys.executable).with_name("twistd"))


def units(amount: str) -> int:
    """A decimal string of an 18-decimal currency in base units, exactly."""
    return int(Decimal(amount) * ETHER)


def chain_url(daemon: Daemon) -> str:
    """The embedded chain's URL, from the node's log."""
    found = re.search(r"embedded dev chain \d+ at (http://127\.0\.0\.1:\d+)",
                      daemon.log.read_text())
    assert found, daemon.log.read_text()[-2000:]
    return found.group(1)


def fees_paid(url: str, account: str, after_block: int) -> tuple[int, int]:
    """What `account`'s transactions in the blocks after `after_block` paid in gas (wei), and
    how many there were: read from the chain, not from the node."""
    paid, count = 0, 0
    head = int(rpc_call(url, "eth_blockNumber"), 16)
    for number in range(after_block + 1, head + 1):
        block = rpc_call(url, "eth_getBlockByNumber", [hex(number), True])
        for tx in block["transactions"]:
            if tx["from"].lower() == account.lower():
                receipt = rpc_call(url, "eth_getTransactionReceipt", [tx["hash"]])
                paid += int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
                count += 1
    return paid, count


def balances(node: Daemon, session: str) -> dict[str, int]:
    shown = node.call("session_balance", sessionId=session)["balances"]
    return {currency: units(amount) for currency, amount in shown.items()}


def test_a_channel_in_eth_and_prn_pays_both_and_closes_to_the_unit(tmp_path: Path) -> None:
    setup = generated(tmp_path / "node")
    files = {u.name: str(u.session_file) for u in setup.users}
    accounts = {u.name: u.on_chain_address for u in setup.users}
    with running(setup.node_config, workdir=tmp_path) as (node,):
        config = node.call("node_getConfig")
        assert list(config["assets"]) == ["ETH", "PRN"]
        assert config["assets"]["PRN"]["decimals"] == 18
        url = chain_url(node)
        opened = {name: node.call("session_open", configFile=files[name]) for name in files}
        a, b = opened["alice"]["sessionId"], opened["bob"]["sessionId"]
        before = {"alice": balances(node, a), "bob": balances(node, b)}
        assert before["alice"]["PRN"] == 1_000_000 * ETHER  # every dev account's supply
        start_block = int(rpc_call(url, "eth_blockNumber"), 16)

        pushes = node.socket()
        try:
            pushes.call("subscribe", sessionId=b, topic="proposals")
            pushes.call("subscribe", sessionId=b, topic="updates")
            with ThreadPoolExecutor(1) as pool:
                opening = pool.submit(node.call, "channel_open", sessionId=a, peer="bob",
                                      balances={"ETH": {"self": "0.5", "peer": "0.5"},
                                                "PRN": {"self": "10", "peer": "10"}})
                proposal = pushes.wait(lambda p: "proposalId" in p)
                assert proposal["balances"] == {"ETH": {"self": "0.5", "peer": "0.5"},
                                                "PRN": {"self": "10", "peer": "10"}}
                node.call("channel_respondProposal", sessionId=b,
                          proposalId=proposal["proposalId"], accept=True)
                channel = opening.result(120)
            cid = channel["channelId"]
            assert channel["phase"] == "open"

            paid = node.call("channel_send", sessionId=a, channelId=cid, payments=[
                {"currency": "PRN", "payee": "bob", "amount": "3"},
                {"currency": "ETH", "payee": "bob", "amount": "0.1"}])
            assert paid["balances"] == {"ETH": {"self": "0.4", "peer": "0.6"},
                                        "PRN": {"self": "7", "peer": "13"}}
            back = node.call("channel_send", sessionId=b, channelId=cid, payments=[
                {"currency": "PRN", "payee": "alice", "amount": "1"}])
            assert back["balances"]["PRN"] == {"self": "12", "peer": "8"}
            history = node.call("payment_list", sessionId=a, currency="PRN")["payments"]
            assert sorted((p["direction"], p["amount"]) for p in history) == [
                ("received", "1"), ("sent", "3")]

            with ThreadPoolExecutor(1) as pool:
                closing = pool.submit(node.call, "channel_close", sessionId=a, channelId=cid)
                final = pushes.wait(lambda p: p.get("type") == "final")
                node.call("channel_respondUpdate", sessionId=b, channelId=cid,
                          updateId=final["updateId"], accept=True)
                closed = closing.result(120)
            assert closed["phase"] == "closed"
            assert closed["paidOut"] == {"ETH": "0.4", "PRN": "8"}
            pushes.wait(lambda p: p.get("type") == "closed")
        finally:
            pushes.close()
        after = {"alice": balances(node, a), "bob": balances(node, b)}

        # Tokens move by exactly the channel's outcome: no gas is paid in them.
        assert after["alice"]["PRN"] - before["alice"]["PRN"] == -2 * ETHER
        assert after["bob"]["PRN"] - before["bob"]["PRN"] == 2 * ETHER
        # ETH by the outcome less each one's own gas, to the wei.
        for name, outcome in (("alice", units("-0.1")), ("bob", units("0.1"))):
            fee, count = fees_paid(url, accounts[name], start_block)
            # A token deposit: an approval (or a permit inside the deposit) and the deposit.
            assert count >= 1 and fee > 0
            assert after[name]["ETH"] == before[name]["ETH"] + outcome - fee, name

        # Bad input: an unknown currency, more decimals than PRN has.
        for payment, field in (
                ({"currency": "DOGE", "payee": "bob", "amount": "1"}, "payments[0].currency"),
                ({"currency": "PRN", "payee": "bob", "amount": "0.0000000000000000001"},
                 "payments[0].amount")):
            reply = node.request("channel_send", sessionId=a, channelId=cid,
                                 payments=[payment])
            assert reply["error"]["code"] == -32602, reply
            assert reply["error"]["data"]["field"] == field, reply
        reply = node.request("channel_open", sessionId=a, peer="bob",
                             balances={"PRN": {"self": "1.0000000000000000001", "peer": "0"}})
        assert reply["error"]["code"] == -32602, reply
        assert reply["error"]["data"]["field"] == "balances.PRN.self", reply
        assert "18 decimal places" in reply["error"]["data"]["requirement"], reply
        # More PRN than the account holds: refused before the peer hears of it.
        reply = node.request("channel_open", sessionId=a, peer="bob",
                             balances={"PRN": {"self": "2000000", "peer": "0"}})
        assert reply["error"]["code"] == InsufficientFunds.code, reply
        assert reply["error"]["data"]["asset"] == "PRN" and "PRN" in reply["error"]["message"]


def start_failure(config: Path, workdir: Path) -> str:
    """Start a node that must refuse to start; its one `start-up failed` line."""
    run = subprocess.run([TWISTD, "-n", "--pidfile=", "perund", "--config", str(config)],
                         cwd=workdir, capture_output=True, text=True, timeout=180)
    assert run.returncode == 1, run.stdout[-3000:]
    (line,) = [line for line in run.stdout.splitlines() if "start-up failed" in line]
    assert "Traceback" not in run.stdout
    return line


def test_a_configured_token_the_chain_lacks_is_disabled_and_the_node_starts(
        tmp_path: Path) -> None:
    setup = generated(tmp_path / "node")
    node = yaml.safe_load(setup.node_config.read_text())
    prn = node["chain"]["assets"]["PRN"]
    # No code at the address (an account, or the wrong chain).
    node["chain"]["assets"]["USDC"] = {"address": "0x" + "5a" * 20, "decimals": 6}
    # Code, but the decimals are not the token's.
    node["chain"]["assets"]["PRN"] = {"address": prn["address"], "decimals": 6}
    # Code that is no token (the Adjudicator).
    node["chain"]["assets"]["ADJ"] = {"address": "0x0161f5d592B2E5E64141144B1674aCFC22F1c82d",
                                      "decimals": 18}
    setup.node_config.write_text(yaml.safe_dump(node))
    with running(setup.node_config, workdir=tmp_path) as (daemon,):
        assets = daemon.call("node_getConfig")["assets"]
        assert assets["USDC"]["disabled"].startswith("no contract at 0x5a5A5a5a"), assets
        assert assets["PRN"]["disabled"].startswith("decimals is 6 in the config, but the "
                                                    "token at "), assets
        assert "18 decimals" in assets["PRN"]["disabled"], assets
        assert "not an ERC20 token" in assets["ADJ"]["disabled"], assets
        assert "disabled" not in assets["ETH"]
        log = daemon.log.read_text()
        for symbol in ("USDC", "PRN", "ADJ"):
            (line,) = [line for line in log.splitlines()
                       if f"chain.assets.{symbol}:" in line and "#critical]" in line]
            assert f"{symbol} is disabled" in line, line


def test_the_embedded_chains_token_elsewhere_stops_the_start(tmp_path: Path) -> None:
    # The embedded chain's PRN under its symbol at another address: a contradiction in the
    # config of the dev chain (which PRN is meant?), which only the embedded chain has.
    setup = generated(tmp_path / "node")
    node = yaml.safe_load(setup.node_config.read_text())
    node["chain"]["assets"]["PRN"] = {"address": "0x" + "5a" * 20, "decimals": 18}
    setup.node_config.write_text(yaml.safe_dump(node))
    line = start_failure(setup.node_config, tmp_path)
    assert "chain.assets.PRN: the embedded chain's test token PRN is at" in line, line
