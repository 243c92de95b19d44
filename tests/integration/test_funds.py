"""Money that is not there is refused before anything moves: a channel the account cannot fund
(its deposit plus the gas) is refused at once, before any message goes to the peer, and so is
accepting a proposal one cannot fund."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest

from perund.errors import InsufficientFunds
from tests.integration.daemons import generated, running


def test_unfundable_channels_are_refused_up_front(tmp_path: Path) -> None:
    setup = generated(tmp_path / "node")
    files = {u.name: str(u.session_file) for u in setup.users}
    with running(setup.node_config, workdir=tmp_path) as (node,):
        opened = {name: node.call("session_open", configFile=files[name]) for name in files}
        a, b = opened["alice"]["sessionId"], opened["bob"]["sessionId"]
        held = Decimal(node.call("session_balance", sessionId=a)["balances"]["ETH"])
        pushes = node.socket()
        try:
            pushes.call("subscribe", sessionId=b, topic="proposals")
            started = time.monotonic()
            reply = node.request("channel_open", sessionId=a, peer="bob",
                                 balances={"ETH": {"self": str(held), "peer": "0"}})
            took = time.monotonic() - started
            error = reply["error"]
            assert error["code"] == InsufficientFunds.code and took < 1.0, (error, took)
            assert Decimal(error["data"]["available"]) == held
            assert Decimal(error["data"]["required"]) > held  # the deposit and the gas
            assert "gas" in error["message"]
            with pytest.raises(TimeoutError):  # bob was never asked
                pushes.wait(lambda p: "proposalId" in p, timeout=1.0)
            assert "proposal" not in node.log.read_text().split("channel_open", 1)[-1]

            # bob is asked to deposit more than he has: accepting is refused, he may reject.
            with ThreadPoolExecutor(1) as pool:
                opening = pool.submit(node.request, "channel_open", sessionId=a, peer="bob",
                                      balances={"ETH": {"self": "1", "peer": str(held * 2)}})
                proposal = pushes.wait(lambda p: "proposalId" in p)
                accepted = node.request("channel_respondProposal", sessionId=b,
                                        proposalId=proposal["proposalId"], accept=True)
                assert accepted["error"]["code"] == InsufficientFunds.code
                node.call("channel_respondProposal", sessionId=b,
                          proposalId=proposal["proposalId"], accept=False)
                assert opening.result(60)["error"]["code"] == 102  # rejected
        finally:
            pushes.close()
        assert node.call("channel_list", sessionId=a) == []
