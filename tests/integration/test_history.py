"""Payment history over a real node on the embedded chain (issue #15's acceptance): alice pays
bob five times 0.01 ETH and bob pays alice 0.02; each lists six entries for the channel,
mirrored, the same after the node restarts; filters and limit work; the `payments` topic
pushes each one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemons import generated, open_channel, running


def _listed(node: Any, session: str, **params: Any) -> list[tuple[str, str, str, int]]:
    page = node.call("payment_list", sessionId=session, **params)
    return [(p["direction"], p["amount"], p["peer"], p["version"]) for p in page["payments"]]


@pytest.mark.slow
def test_each_side_lists_its_payments_mirrored_across_a_restart(tmp_path: Path) -> None:
    setup = generated(tmp_path / "node")
    files = {u.name: str(u.session_file) for u in setup.users}
    with running(setup.node_config, workdir=tmp_path) as (node,):
        opened = {name: node.call("session_open", configFile=files[name])["sessionId"]
                  for name in files}
        a, b = opened["alice"], opened["bob"]
        channel = open_channel(node, a, b, "1", "1")
        pushes = node.socket()
        try:
            pushes.call("subscribe", sessionId=b, topic="payments")
            for _ in range(5):
                node.call("channel_send", sessionId=a, channelId=channel, payments=[
                    {"currency": "ETH", "payee": "bob", "amount": "0.01"}])
            node.call("channel_send", sessionId=b, channelId=channel, payments=[
                {"currency": "ETH", "payee": "alice", "amount": "0.02"}])
            pushed = [pushes.wait(lambda p: "paymentId" in p) for _ in range(6)]
        finally:
            pushes.close()
        assert [(p["direction"], p["amount"]) for p in pushed] == [
            *[("received", "0.01")] * 5, ("sent", "0.02")]

        alice = [("received", "0.02", "bob", 6),
                 *[("sent", "0.01", "bob", v) for v in (5, 4, 3, 2, 1)]]
        bob = [("sent", "0.02", "alice", 6),
               *[("received", "0.01", "alice", v) for v in (5, 4, 3, 2, 1)]]
        assert _listed(node, a, channelId=channel) == alice
        assert _listed(node, b, channelId=channel) == bob
        entry = node.call("payment_list", sessionId=a)["payments"][0]
        assert entry["channelId"] == channel and entry["currency"] == "ETH"
        assert entry["peerAddress"] and entry["time"] > 1_600_000_000
        assert node.call("payment_get", sessionId=a, paymentId=entry["paymentId"]) == entry

        node.stop()
        node.start()
        node.wait_for_sessions(2)
        assert _listed(node, a, channelId=channel) == alice
        assert _listed(node, b) == bob
        assert _listed(node, a, direction="sent", limit=2) == alice[1:3]
        assert _listed(node, b, peer="alice", currency="ETH", direction="sent") == bob[:1]
        page = node.call("payment_list", sessionId=a, limit=4)
        rest = node.call("payment_list", sessionId=a, limit=4, cursor=page["nextCursor"])
        assert [p["version"] for p in page["payments"] + rest["payments"]] == [6, 5, 4, 3, 2, 1]
        assert rest["nextCursor"] is None
