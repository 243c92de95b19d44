"""Session credentials over real loopback HTTP and WebSocket: a made-up one is HTTP 401, another
user's is refused call by call, a revoked one closes its WebSocket, the metrics stay the
operator's."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint

from perund.api.amounts import Currencies
from perund.api.credentials import CLOSE_REVOKED, TOKEN_PREFIX
from perund.api.site import make_site
from perund.errors import Unauthorized
from perund.metrics import Metrics
from tests.api.helpers import USDC
from tests.api.memfacade import MemoryNode
from tests.api.test_http import Server
from tests.api.test_ws import Client

pytestmark = pytest.mark.filterwarnings("ignore:Using readBody:DeprecationWarning")

OPERATOR_TOKEN = "operator-t0ken-for-the-credential-tests"
BOB = "0x" + "b0" * 20


class Node:
    """A site over a MemoryNode with alice's and bob's sessions, opened by the operator."""

    async def start(self) -> None:
        self.node = MemoryNode(reactor)
        metrics = Metrics()
        site = make_site(self.node, OPERATOR_TOKEN, reactor=reactor,
                         currencies=Currencies([USDC]), metrics=metrics,
                         render_metrics=lambda: metrics.render([]))
        self.port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.http = Server(self.port, self.node)
        self.alice, self.alice_token = await self._open("alice.yaml")
        self.bob, self.bob_token = await self._open("bob.yaml")
        await self.call("session_addPeer", {"sessionId": self.bob, "peer": {
            "alias": "carol", "offChainAddress": "0x" + "c0" * 20,
            "commAddress": "127.0.0.1:5003"}})
        channel = await self.call("channel_open", {
            "sessionId": self.bob, "peer": "carol",
            "balances": {"ETH": {"self": "1", "peer": "1"}}})
        self.bob_channel: str = channel["channelId"]

    async def _open(self, config: str) -> tuple[str, str]:
        opened = await self.call("session_open", {"configFile": config})
        return opened["sessionId"], opened["token"]

    async def reply(self, method: str, params: Any = None,
                    token: str = OPERATOR_TOKEN) -> tuple[int, Any]:
        request = {"jsonrpc": "2.0", "method": method, "id": 1, "params": params or {}}
        code, _, body = await self.http.post(json.dumps(request).encode(), token=token)
        return code, json.loads(body)

    async def call(self, method: str, params: Any = None, token: str = OPERATOR_TOKEN) -> Any:
        code, reply = await self.reply(method, params, token)
        assert code == 200 and "result" in reply, reply
        return reply["result"]

    async def socket(self, token: str) -> Client:
        number = self.port.getHost().port
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{number}/ws",
                                         headers={"Authorization": f"Bearer {token}"})
        factory.protocol = Client
        factory.opened = Deferred()
        await TCP4ClientEndpoint(reactor, "127.0.0.1", number).connect(factory)
        client: Client = await factory.opened
        return client

    async def stop(self) -> None:
        await self.http.pool.closeCachedConnections()
        await self.port.stopListening()


def node_test(test: Any) -> Any:
    @pytest_twisted.ensureDeferred
    async def run() -> None:
        node = Node()
        await node.start()
        try:
            await test(node)
        finally:
            await node.stop()

    run.__name__ = test.__name__
    return run


@node_test
async def test_a_made_up_credential_is_http_401(node: Node) -> None:
    made_up = TOKEN_PREFIX + os.urandom(16).hex() + "_" + "A" * 43
    forged = node.alice_token[:-2] + ("AB" if not node.alice_token.endswith("AB") else "CD")
    for token in (made_up, forged, "pdt_", node.alice_token + node.alice_token):
        code, reply = await node.reply("node_time", None, token)
        assert code == 401 and reply == {"error": "a valid bearer token is required"}


@node_test
async def test_another_users_session_is_refused_over_http_and_ws(node: Node) -> None:
    aimed_at_bob = [("channel_get", {"sessionId": node.bob, "channelId": node.bob_channel}),
                    ("channel_send", {"sessionId": node.bob, "channelId": node.bob_channel,
                                      "payments": [{"currency": "ETH", "payee": "carol",
                                                    "amount": "0.5"}]}),
                    ("session_close", {"sessionId": node.bob, "force": True}),
                    ("subscribe", {"sessionId": node.bob, "topic": "updates"})]
    for method, params in aimed_at_bob:
        code, reply = await node.reply(method, params, node.alice_token)
        assert code == 200 and reply["error"]["code"] == Unauthorized.code, (method, reply)
    socket = await node.socket(node.alice_token)
    try:
        for index, (method, params) in enumerate(aimed_at_bob):
            key = f"bob-{index}"
            request = {"jsonrpc": "2.0", "method": method, "params": params, "id": key}
            reply = await socket.send_raw(json.dumps(request).encode(), key)
            assert reply["error"]["code"] == Unauthorized.code, (method, reply)
        assert await socket.call("channel_list", {"sessionId": node.alice}) == []
    finally:
        socket.sendClose()
        await socket.closed
    # Nothing of bob's moved, and bob's own credential (and the operator's) still work.
    channel = await node.call("channel_get", {"sessionId": node.bob,
                                              "channelId": node.bob_channel}, node.bob_token)
    assert channel["balances"]["ETH"] == {"self": "1", "peer": "1"}
    assert await node.call("channel_get", {"sessionId": node.bob,
                                           "channelId": node.bob_channel})


@node_test
async def test_revoking_a_credential_closes_its_websocket(node: Node) -> None:
    socket = await node.socket(node.alice_token)
    await socket.call("subscribe", {"sessionId": node.alice, "topic": "proposals"})
    tokens = await node.call("session_listTokens", {"sessionId": node.alice})
    await node.call("session_revokeToken", {"sessionId": node.alice,
                                            "tokenId": tokens[0]["tokenId"]})
    await socket.closed
    assert socket.remoteCloseCode == CLOSE_REVOKED
    code, _ = await node.reply("node_time", None, node.alice_token)
    assert code == 401


@node_test
async def test_closing_a_session_over_its_own_websocket_answers_then_closes(node: Node) -> None:
    socket = await node.socket(node.alice_token)
    assert await socket.call("session_close", {"sessionId": node.alice}) == []
    await socket.closed
    assert socket.remoteCloseCode == CLOSE_REVOKED


@node_test
async def test_the_metrics_are_the_operators(node: Node) -> None:
    code, _, body = await node.http.post(b"", token=node.alice_token, path=b"/metrics",
                                         method=b"GET")
    assert code == 403 and b"operator" in body
    code, _, _ = await node.http.post(b"", token=OPERATOR_TOKEN, path=b"/metrics",
                                      method=b"GET")
    assert code == 200
