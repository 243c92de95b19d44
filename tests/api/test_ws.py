"""GET /ws over real loopback: auth before the upgrade, JSON-RPC over the socket, pushes,
caching while nobody listens, several subscribers, clean-up on disconnect."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater

from perund.api.amounts import Currencies
from perund.api.connections import ApiLimits
from perund.api.site import ApiSite, make_site
from perund.channel.types import ETH
from tests.api.helpers import USDC, RawClient
from tests.api.memfacade import MemoryNode

TOKEN = "ws-t0ken-for-the-api-tests-only-0123456789"
BOB = "0x" + "b0" * 20


class Client(WebSocketClientProtocol):  # type: ignore[misc]
    """Collects replies by id and pushes in order."""

    def __init__(self) -> None:
        super().__init__()
        self.replies: dict[Any, Deferred[Any]] = {}
        self.pushes: DeferredQueue[dict[str, Any]] = DeferredQueue()
        self.order: list[str] = []
        self.closed: Deferred[None] = Deferred()
        self._next = 0

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        message = json.loads(payload)
        if isinstance(message, dict) and message.get("method") == "perund_notification":
            self.order.append("push")
            self.pushes.put(message)
            return
        key = message["id"] if isinstance(message, dict) else "batch"
        self.order.append(f"reply {key}")
        self.replies.setdefault(key, Deferred()).callback(message)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.close_code = code
        if not self.closed.called:
            self.closed.callback(None)

    async def send_raw(self, payload: bytes, key: Any) -> Any:
        waiter = self.replies.setdefault(key, Deferred())
        self.sendMessage(payload)
        return await waiter

    async def call(self, method: str, params: Any = None) -> Any:
        self._next += 1
        request = {"jsonrpc": "2.0", "method": method, "id": self._next}
        if params is not None:
            request["params"] = params
        reply = await self.send_raw(json.dumps(request).encode(), self._next)
        assert "error" not in reply, reply
        return reply["result"]


async def start(limits: ApiLimits | None = None) -> tuple[Any, ApiSite, MemoryNode]:
    node = MemoryNode(reactor)
    site = make_site(node, TOKEN, reactor=reactor, currencies=Currencies([USDC]), limits=limits)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    return port, site, node


async def connect(port: Any, *, header: bool = True) -> Client:
    """A client with the token in its Authorization header, or (header False) as a browser
    sends it: in the subprotocols it offers."""
    number = port.getHost().port
    url = f"ws://127.0.0.1:{number}/ws"
    factory = WebSocketClientFactory(
        url, headers={"Authorization": f"Bearer {TOKEN}"} if header else {},
        protocols=None if header else ["perund", f"perund.bearer.{TOKEN}"])
    factory.protocol = Client
    factory.opened = Deferred()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", number).connect(factory)
    client: Client = await factory.opened
    return client


async def hang_up(client: Client) -> None:
    client.sendClose()
    await client.closed


async def settle(condition: Any) -> None:
    """Let the reactor run until `condition()` holds (the server's side of a close)."""
    for _ in range(500):
        if condition():
            return
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError("the condition never held")


HANDSHAKE = (b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


async def _answer(port: Any, request: bytes) -> bytes:
    """The head of the server's answer to a raw `request`."""
    protocol = RawClient(request, until_headers=True)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
        Factory.forProtocol(lambda: protocol))
    answer: bytes = await protocol.done
    return answer


@pytest_twisted.ensureDeferred
async def test_the_upgrade_needs_the_token() -> None:
    port, _, node = await start()
    try:
        twice = f"Authorization: Bearer {TOKEN}\r\n".encode() * 2
        for query, auth in ((b"", b""), (b"?token=wrong-token-0123456789", b""),
                            (b"?token=" + TOKEN.encode(), b""),  # never in a URL
                            (b"", twice),
                            (b"", b"Sec-WebSocket-Protocol: perund, perund.bearer.nope-nope\r\n"),
                            (b"", b"Authorization: Bearer nope-nope-nope-nope\r\n")):
            answer = await _answer(port, b"GET /ws" + query + b" HTTP/1.1\r\n" + HANDSHAKE
                                   + auth + b"\r\n")
            assert answer.startswith(b"HTTP/1.1 401 "), answer[:40]
            assert b"101" not in answer.split(b"\r\n")[0]
        assert node.calls == []
        by_subprotocol = await connect(port, header=False)
        assert by_subprotocol.websocket_protocol_in_use == "perund"  # the token is not echoed
        assert isinstance(await by_subprotocol.call("node_time"), float)
        await hang_up(by_subprotocol)
        # A browser's origin must be allowed explicitly (none is, by default).
        bearer = f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        answer = await _answer(port, b"GET /ws HTTP/1.1\r\n" + HANDSHAKE
                               + b"Origin: https://evil.example\r\n" + bearer)
        assert answer.startswith(b"HTTP/1.1 403 ")
        # A GET without the handshake is answered in JSON, not with autobahn's HTML page.
        answer = await _answer(port, b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n" + bearer)
        assert answer.startswith(b"HTTP/1.1 426 ") and b"application/json" in answer
        assert b"Autobahn" not in answer
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_message_over_the_limit_is_closed_with_code_1009() -> None:
    port, _, _ = await start()
    try:
        client = await connect(port)
        client.sendMessage(b"[" + b" " * (1024 * 1024) + b"]")
        await client.closed
        assert client.close_code == 1009
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_reply_longer_than_the_message_limit_is_sent() -> None:
    """The limit bounds what clients send; a reply may be longer (autobahn applied it to
    sends too: the calls were made, and the client got an internal error instead)."""
    port, _, _ = await start(ApiLimits(max_body=64 * 1024))
    try:
        client = await connect(port)
        batch = b"[" + b",".join(b'{"jsonrpc":"2.0","method":"rpc.discover","id":%d}' % i
                                  for i in range(4)) + b"]"
        replies = await client.send_raw(batch, "batch")
        assert len(replies) == 4 and all("result" in r for r in replies)
        assert len(json.dumps(replies)) > 64 * 1024
        # The limit still holds for what the client sends.
        assert isinstance(await client.call("node_time"), float)
        await hang_up(client)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_json_rpc_over_the_socket() -> None:
    port, _, _ = await start()
    try:
        client = await connect(port)
        opened = await client.call("session_open", {"configFile": "alice.yaml"})
        assert opened["restoredChannels"] == []
        parse = await client.send_raw(b"{oops", None)
        assert parse["error"]["code"] == -32700
        batch = await client.send_raw(
            b'[{"jsonrpc":"2.0","method":"node_time","id":"a"},'
            b'{"jsonrpc":"2.0","method":"nope","id":"b"}]', "batch")
        assert [r["id"] for r in batch] == ["a", "b"]
        assert batch[1]["error"]["code"] == -32601
        # still serving after bad input
        assert isinstance(await client.call("node_time"), float)
        await hang_up(client)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_pushes_cached_delivered_fanned_out_and_cleaned_up() -> None:
    port, site, node = await start()
    try:
        alice = await connect(port)
        session = (await alice.call("session_open", ["alice.yaml"]))["sessionId"]
        raw = bytes.fromhex(session[2:])
        await alice.call("session_addPeer", [session, {
            "alias": "bob", "offChainAddress": BOB, "commAddress": "127.0.0.1:5002"}])

        # A proposal while nobody listens is kept, then delivered right after the reply.
        waiting = node.propose(raw, "bob", {ETH: (10**18, 2 * 10**18)})
        sub = await alice.call("subscribe", {"sessionId": session, "topic": "proposals"})
        push = await alice.pushes.get()
        assert alice.order[-2:] == [f"reply {alice._next}", "push"]
        assert push["params"]["subscription"] == sub
        shown = dict(push["params"]["result"])
        assert shown.pop("peerAddress").lower() == BOB
        assert shown == {"type": "proposed", "proposalId": "0x" + waiting.proposal_id.hex(),
                         "peer": "bob",
                         "balances": {"ETH": {"self": "1", "peer": "2"}},
                         "challengeDuration": 600, "expiry": waiting.expiry,
                         "kind": "ledger"}

        # A second client on the same topic: both get the next proposal.
        carol = await connect(port)
        await carol.call("subscribe", [session, "proposals"])
        second = node.propose(raw, "bob", {ETH: (1, 1)})
        for client in (alice, carol):
            got = await client.pushes.get()
            assert got["params"]["result"]["proposalId"] == "0x" + second.proposal_id.hex()

        # Accepting over the socket; then updates of that channel, pushed and answered.
        channel = await alice.call("channel_respondProposal",
                                   [session, "0x" + waiting.proposal_id.hex(), True])
        await alice.call("subscribe", {"sessionId": session, "topic": "updates",
                                       "channelId": channel["channelId"]})
        request = node.peer_update(raw, bytes.fromhex(channel["channelId"][2:]), ETH,
                                   -(10**17))
        got = await alice.pushes.get()
        result = got["params"]["result"]
        assert result["type"] == "open" and result["kind"] == "request"
        assert result["channel"]["balances"]["ETH"] == {"self": "0.9", "peer": "2.1"}
        answered = await alice.call("channel_respondUpdate", [
            session, channel["channelId"], "0x" + (request.update_id or b"").hex(), True])
        assert answered["version"] == 1

        # Disconnecting unsubscribes; what arrives then is cached for the next subscriber.
        hub = site.hubs.attach(raw)
        assert hub.subscribers == 3
        await hang_up(carol)
        await hang_up(alice)
        await settle(lambda: hub.subscribers == 0)
        third = node.propose(raw, "bob", {ETH: (1, 1)})
        assert [getattr(n, "proposal_id", None) for n in hub.cached()] == [third.proposal_id]
        dave = await connect(port)
        await dave.call("subscribe", [session, "proposals"])
        got = await dave.pushes.get()
        assert got["params"]["result"]["proposalId"] == "0x" + third.proposal_id.hex()
        await dave.call("unsubscribe", [got["params"]["subscription"]])
        await hang_up(dave)
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_push_while_the_socket_closes_is_dropped_quietly(
        logs: list[dict[str, Any]]) -> None:
    """A push that comes after the closing handshake began and before `onClose` (a client
    hanging up while its node pushes) is not sent: autobahn refuses to send then, which
    used to log a traceback in the node."""
    port, site, node = await start()
    try:
        client = await connect(port)
        session = (await client.call("session_open", ["alice.yaml"]))["sessionId"]
        await client.call("session_addPeer", [session, {
            "alias": "bob", "offChainAddress": BOB, "commAddress": "127.0.0.1:5002"}])
        await client.call("subscribe", [session, "proposals"])
        (server,) = site.sockets.open_sockets()
        server.sendClose()  # the server's side of the closing handshake begins now
        assert server.open and server.state != server.STATE_OPEN
        node.propose(bytes.fromhex(session[2:]), "bob", {ETH: (1, 1)})
        await client.closed
    finally:
        await port.stopListening()
    assert not [e for e in logs if e.get("log_failure") is not None], logs


def test_nothing_is_sent_once_the_client_began_closing() -> None:
    """A push delivered between the client's close frame and `onClose` (the socket still
    counts as open to us) is dropped, not an error: autobahn refuses to send then."""
    from twisted.internet.task import Clock

    from perund.api.connections import SessionBuffers
    from perund.api.credentials import Credential, Scope
    from perund.api.ws import ApiSocket

    socket = ApiSocket()
    buffers = SessionBuffers(Clock(), 1 << 20)
    socket.factory = SimpleNamespace(buffers=buffers)  # type: ignore
    socket.credential = Credential("a1" * 16, Scope.SESSION, session_id="ab" * 16)
    socket.open = True
    socket.state = ApiSocket.STATE_CLOSING
    socket._transmit(b'{"jsonrpc": "2.0"}')  # autobahn would raise Disconnected
    assert not buffers.held and not socket._unsent  # nothing sent, nothing counted
