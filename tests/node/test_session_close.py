"""A request that waits on its peer when its session ends: closed by another client, it is
told the session was closed; when the node stops, that the node stopped. Over the JSON-RPC API
of a node on the embedded chain, as its clients see it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from perund.chain.anvil import free_port
from perund.cli.apiclient import ApiClient
from perund.cli.generate import generate
from perund.config import load_node_config
from perund.node import NodeService
from perund.session.notices import Notice, ProposalNotice


async def _waiting_open(tmp_path: Path) -> tuple[NodeService, ApiClient, str,
                                                    Deferred[dict[str, Any]]]:
    """A node where alice's `channel_open` (over the API) waits for bob's user, who does not
    answer: the node, an operator's API client, alice's session ID and the call's answer."""
    setup = generate(tmp_path, api_port=free_port(), comm_ports=(free_port(), free_port()))
    node = NodeService(reactor, load_node_config(setup.node_config))
    node.startService()
    await node.ready
    alice = await node.open_session(str(setup.users[0].session_file))
    bob = await node.open_session(str(setup.users[1].session_file))
    seen: list[Notice] = []
    bob.client.observers.append(seen.append)
    port = int(node.config.api.listen.split(":")[1])
    client = ApiClient(port, node.config.token_path.read_text().strip())
    session_id = "0x" + alice.id
    opening: Deferred[dict[str, Any]] = deferToThread(client.invoke, "channel_open", {
        "sessionId": session_id, "peer": setup.users[1].name,
        "balances": {"ETH": {"self": "1", "peer": "0"}}}, None)
    for _ in range(200):
        if any(isinstance(n, ProposalNotice) for n in seen):
            return node, client, session_id, opening
        assert not opening.called, opening.result
        await deferLater(reactor, 0.05, lambda: None)
    await node.stopService()
    raise AssertionError("bob never got the proposal")


@pytest_twisted.ensureDeferred
async def test_a_request_cut_short_by_a_session_close_says_the_session_was_closed(
        tmp_path: Path) -> None:
    node, client, session_id, opening = await _waiting_open(tmp_path)
    try:
        # Another client closes alice's session while the open waits for bob's answer.
        closed = await deferToThread(client.invoke, "session_close",
                                     {"sessionId": session_id, "force": True})
        assert "error" not in closed, closed
        answer = await opening
    finally:
        await node.stopService()
    message = answer["error"]["message"]
    assert message.endswith(": the session was closed before the response came"), answer
    assert "this node stopped" not in message


@pytest_twisted.ensureDeferred
async def test_a_request_cut_short_by_the_node_stopping_says_the_node_stopped(
        tmp_path: Path) -> None:
    node, _, _, opening = await _waiting_open(tmp_path)
    await node.stopService()
    answer = await opening
    assert answer["error"]["message"].endswith(": this node stopped before the response came"), \
        answer
