"""The embedded dev chain keeps its state: a real `twistd -n perund` on it, a channel opened and
paid, the node stopped (SIGTERM) or killed (SIGKILL, after the chain's periodic dump), started
again: the channel is there with its latest version, and a cooperative close pays both sides to
the wei, less what each one's transactions cost.

A payment request bob had not answered when the node went down is not forgotten: after the
restart bob's first `updates` subscriber is told it is `gone`, and a late answer says why."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perund.cli.generate import Generated
from tests.integration.daemons import Daemon, generated, open_channel, running

ETHER = 10**18


def _rpc(url: str, method: str, params: list[Any]) -> Any:
    request = urllib.request.Request(url, json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode(),
        {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())["result"]


def _chain_url(daemon: Daemon) -> str:
    found = re.findall(r"embedded dev chain 1337 at (http://127\.0\.0\.1:\d+)",
                       daemon.log.read_text())
    assert found, "the node did not say where its chain is"
    return found[-1]


def _gas_paid(url: str, account: str) -> int:
    """Wei `account` paid for gas in every block of the chain."""
    total = 0
    last = int(_rpc(url, "eth_blockNumber", []), 16)
    for number in range(1, last + 1):
        block = _rpc(url, "eth_getBlockByNumber", [hex(number), True])
        for tx in block["transactions"]:
            if tx["from"].lower() == account.lower():
                receipt = _rpc(url, "eth_getTransactionReceipt", [tx["hash"]])
                total += int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
    return total


def _wei(amount: str) -> int:
    return int(Decimal(amount) * ETHER)


def _open_and_pay(node: Daemon, setup: Generated) -> tuple[dict[str, Any], str, dict[str, int]]:
    files = {u.name: str(u.session_file) for u in setup.users}
    opened = {name: node.call("session_open", configFile=files[name]) for name in files}
    start = {name: _wei(node.call("session_balance", sessionId=opened[name]["sessionId"])
                        ["balances"]["ETH"]) for name in files}
    a, b = opened["alice"]["sessionId"], opened["bob"]["sessionId"]
    channel = open_channel(node, a, b, "2", "0.5")
    for _ in range(3):
        node.call("channel_send", sessionId=a, channelId=channel,
                  payments=[{"currency": "ETH", "payee": "bob", "amount": "0.1"}])
    return opened, channel, start


def _ask_bob(node: Daemon, opened: dict[str, Any], channel: str,
             pool: ThreadPoolExecutor) -> str:
    """alice requests 0.1 ETH from bob, whose user sees the question and does not answer; the
    question's update ID."""
    a, b = opened["alice"]["sessionId"], opened["bob"]["sessionId"]
    pushes = node.socket()
    try:
        pushes.call("subscribe", sessionId=b, topic="updates", channelId=channel)
        pool.submit(node.call, "channel_send", sessionId=a, channelId=channel,
                    payments=[{"currency": "ETH", "payee": "self", "amount": "0.1"}])
        question = pushes.wait(lambda p: p.get("type") == "open")
        assert question["kind"] == "request"
        update_id: str = question["updateId"]
        return update_id
    finally:
        pushes.close()


def _told_gone(node: Daemon, opened: dict[str, Any], channel: str, update_id: str) -> None:
    b = opened["bob"]["sessionId"]
    node.wait_for_sessions(2)
    pushes = node.socket()
    try:
        pushes.call("subscribe", sessionId=b, topic="updates")
        gone = pushes.wait(lambda p: p.get("type") == "gone", timeout=20)
    finally:
        pushes.close()
    assert gone["updateId"] == update_id and gone["channelId"] == channel
    assert "before its user answered" in gone["error"]
    late = node.request("channel_respondUpdate", sessionId=b, channelId=channel,
                        updateId=update_id, accept=True)
    assert "the node restarted before it was answered" in late["error"]["message"]


def _close_and_check(node: Daemon, setup: Generated, opened: dict[str, Any], channel: str,
                     start: dict[str, int]) -> None:
    a, b = opened["alice"]["sessionId"], opened["bob"]["sessionId"]
    node.wait_for_sessions(2)  # the node opens them again by itself
    restored = node.call("channel_get", sessionId=a, channelId=channel)
    assert restored["version"] == 3 and restored["phase"] == "open"
    assert restored["balances"]["ETH"] == {"self": "1.7", "peer": "0.8"}
    pushes = node.socket()
    try:
        pushes.call("subscribe", sessionId=b, topic="updates")
        with ThreadPoolExecutor(1) as pool:
            closing = pool.submit(node.call, "channel_close", sessionId=a, channelId=channel)
            final = pushes.wait(lambda p: p.get("type") == "final")
            node.call("channel_respondUpdate", sessionId=b, channelId=channel,
                      updateId=final["updateId"], accept=True)
            assert closing.result(120)["phase"] == "closed"
    finally:
        pushes.close()
    url = _chain_url(node)
    outcome = {"alice": _wei("1.7") - _wei("2"), "bob": _wei("0.8") - _wei("0.5")}
    for user in setup.users:
        session = opened[user.name]["sessionId"]
        now = _wei(node.call("session_balance", sessionId=session)["balances"]["ETH"])
        gas = _gas_paid(url, user.on_chain_address)
        assert now == start[user.name] + outcome[user.name] - gas, user.name


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_channels_survive_a_restart_of_the_embedded_chain(how: str, tmp_path: Path) -> None:
    setup = generated(tmp_path / "node")
    with running(setup.node_config, workdir=tmp_path) as (node,), \
            ThreadPoolExecutor(1) as pool:
        opened, channel, start = _open_and_pay(node, setup)
        chain_url = _chain_url(node)
        update_id = _ask_bob(node, opened, channel, pool)
        if how == "sigterm":
            node.stop()
        else:
            time.sleep(3.0)  # the chain dumps its state every 2 s
            node.kill()
        # anvil went with the node (its parent-death signal), however the node ended.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                _rpc(chain_url, "eth_chainId", [])
            except OSError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the embedded chain outlived its node")
        node.start()
        _told_gone(node, opened, channel, update_id)
        _close_and_check(node, setup, opened, channel, start)
