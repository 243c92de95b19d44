"""Two daemons on a chain that mines a block every second, acting only on what is
`chain.confirmations` deep: a channel's whole life still works, through the API."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_twisted
import yaml

from perund.chain.anvil import Anvil, free_port, rpc_call
from perund.cli.generate import Generated, generate
from tests.integration.daemons import Daemon, assert_clean_log, running
from tests.node.conftest import deploy, two_nodes

CONFIRMATIONS = 2


@pytest.fixture
def ticking_anvil() -> Iterator[Anvil]:
    with Anvil(extra_args=["--block-time", "1"]) as node:
        yield node


@pytest_twisted.async_fixture
async def setup(ticking_anvil: Anvil, tmp_path: Path) -> Generated:
    return generate(tmp_path, chain_url=ticking_anvil.url, chain_id=ticking_anvil.chain_id,
                    adjudicator=await deploy(ticking_anvil), api_port=free_port(),
                    comm_ports=(free_port(), free_port()))


@pytest.fixture
def daemons(setup: Generated, tmp_path: Path) -> Iterator[tuple[Daemon, ...]]:
    configs = two_nodes(setup)
    for config in configs:
        node = yaml.safe_load(config.read_text())
        node["chain"].update(confirmations=CONFIRMATIONS, block_time="1s",
                             poll_interval="200ms")
        node["timeouts"] = {"tx": "10s", "funding": "60s"}
        config.write_text(yaml.safe_dump(node))
    with running(*configs, workdir=tmp_path) as both:
        yield both


@pytest.mark.anvil
@pytest.mark.slow
def test_a_channel_life_with_confirmations(daemons: tuple[Daemon, Daemon], setup: Generated,
                                           ticking_anvil: Anvil) -> None:
    alice, bob = daemons
    files = {u.name: str(u.session_file) for u in setup.users}
    a = alice.call("session_open", configFile=files["alice"])["sessionId"]
    b = bob.call("session_open", configFile=files["bob"])["sessionId"]
    pushes = bob.socket()
    try:
        pushes.call("subscribe", sessionId=b, topic="proposals")
        pushes.call("subscribe", sessionId=b, topic="updates")
        with ThreadPoolExecutor(1) as pool:
            opening = pool.submit(alice.call, "channel_open", sessionId=a, peer="bob",
                                  balances={"ETH": {"self": "2", "peer": "1"}},
                                  challengeDuration=120)
            proposal = pushes.wait(lambda p: "proposalId" in p)
            bob.call("channel_respondProposal", sessionId=b,
                     proposalId=proposal["proposalId"], accept=True)
            channel = opening.result(90)
            assert channel["phase"] == "open"
            cid = channel["channelId"]
            # Open only once both deposits are CONFIRMATIONS deep: the chain has moved on.
            head = int(rpc_call(ticking_anvil.url, "eth_blockNumber"), 16)
            logs = rpc_call(ticking_anvil.url, "eth_getLogs", [{
                "fromBlock": "0x0", "toBlock": "latest",
                "address": yaml.safe_load(setup.node_config.read_text())["chain"]["adjudicator"],
            }])
            deposits = [int(log["blockNumber"], 16) for log in logs
                        if log["topics"][1] == cid]
            assert len(deposits) == 2 and head - max(deposits) >= CONFIRMATIONS

            paid = alice.call("channel_send", sessionId=a, channelId=cid,
                              payments=[{"currency": "ETH", "payee": "bob", "amount": "0.5"}])
            assert paid["balances"] == {"ETH": {"self": "1.5", "peer": "1.5"}}

            closing = pool.submit(alice.call, "channel_close", sessionId=a, channelId=cid)
            final = pushes.wait(lambda p: p.get("type") == "final")
            bob.call("channel_respondUpdate", sessionId=b, channelId=cid,
                     updateId=final["updateId"], accept=True)
            closed = closing.result(90)
            assert closed["phase"] == "closed"
            assert closed["balances"] == {"ETH": {"self": "1.5", "peer": "1.5"}}
            pushes.wait(lambda p: p.get("type") == "closed" and p["channelId"] == cid, 60)
    finally:
        pushes.close()
    for daemon in daemons:
        assert_clean_log(daemon)
