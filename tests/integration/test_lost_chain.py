"""A node whose chain lost what its channels hold (the embedded chain started afresh, as a
fresh anvil at the same URL would be): it refuses to start, naming the channel and the amounts;
started with --accept-lost-channels it marks the channel lost, tells the user, and never
reports a payout the chain does not show."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.daemons import TWISTD, generated, open_channel, running


@pytest.mark.slow
def test_a_lost_chain_stops_the_start_or_marks_the_channels(tmp_path: Path) -> None:
    setup = generated(tmp_path / "node")
    files = {u.name: str(u.session_file) for u in setup.users}
    with running(setup.node_config, workdir=tmp_path) as (node,):
        opened = {name: node.call("session_open", configFile=files[name]) for name in files}
        a, b = opened["alice"]["sessionId"], opened["bob"]["sessionId"]
        channel = open_channel(node, a, b, "2", "0.5")
        node.stop()

        # The chain starts afresh: the start fails, naming the channel and what it held.
        refused = subprocess.run([TWISTD, "-n", "--pidfile=", "perund", "--config",
                                  str(setup.node_config), "--fresh-chain"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1
        (line,) = [x for x in refused.stdout.splitlines() if "start-up failed" in x]
        assert f"channel {channel[:10]}…" in line and "2.5 ETH expected, 0 ETH held" in line
        assert "--accept-lost-channels" in line
        # Each session at stake is named, not only the first; and the node never said ready.
        assert files["alice"] in line and files["bob"] in line
        assert "node ready" not in refused.stdout
        # --fresh-chain by mistake: the line says where the old chain went and how to go back.
        undo = re.search(r"run `mv (\S+) (\S+) && mv (\S+) (\S+)` and start without "
                         r"--fresh-chain", line)
        assert undo is not None, line
        new_chain, new_aside, old_chain, devchain = undo.groups()
        assert new_chain == devchain and ".replaced-" in old_chain
        Path(new_chain).rename(new_aside)
        Path(old_chain).rename(devchain)
        node.start()
        node.wait_for_sessions(2)
        assert node.call("channel_get", sessionId=a, channelId=channel)["phase"] == "open"
        node.stop()

        # Started knowing it: the channel is marked lost, the users are told.
        node.start("--fresh-chain", "--accept-lost-channels")
        node.wait_for_sessions(2)
        socket = node.socket()
        try:
            socket.call("subscribe", sessionId=a, topic="updates")
            lost = socket.wait(lambda p: p.get("type") == "chainLost")
            assert lost["channelId"] == channel and "2.5 ETH expected" in lost["error"]
        finally:
            socket.close()
        info = node.call("channel_get", sessionId=a, channelId=channel)
        assert info["phase"] == "chainLost"
        closing = node.request("channel_close", sessionId=a, channelId=channel)
        assert closing["error"]["code"] == 204 and "lost" in closing["error"]["message"]
        paying = node.request("channel_send", sessionId=a, channelId=channel, payments=[
            {"currency": "ETH", "payee": "bob", "amount": "0.1"}])
        assert "error" in paying
        assert node.call("session_list")[0]["openChannels"] == 0
