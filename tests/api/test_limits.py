"""What one API client may hold of the node, over real loopback sockets: a request must be
complete in time, idle connections close, the number of connections and subscriptions is
capped, a WebSocket client that stops reading is dropped, malformed text gets a JSON-RPC error,
and there is no access log."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs, formatEvent

from perund.api.amounts import Currencies
from perund.api.connections import ApiLimits
from perund.api.site import make_site
from perund.errors import FailedPrecondition
from tests.api.helpers import USDC, RawClient
from tests.api.memfacade import MemoryNode
from tests.api.test_ws import Client

TOKEN = "limits-t0ken-for-the-api-tests-0123456789"
RPC = b'{"jsonrpc":"2.0","method":"node_time","id":1}'


async def serve(**limits: Any) -> tuple[Any, Any, MemoryNode]:
    node = MemoryNode(reactor)
    site = make_site(node, TOKEN, reactor=reactor, currencies=Currencies([USDC]),
                     limits=ApiLimits(**limits),
                     allowed_origins=["https://wallet.example"])
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    return port, site, node


def post(body: bytes, *, keep_alive: bool = False, headers: bytes = b"") -> bytes:
    return (b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\n" + headers
            + (b"" if keep_alive else b"Connection: close\r\n")
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def raw(port: Any, payload: bytes) -> RawClient:
    client = RawClient(payload)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
        Factory.forProtocol(lambda: client))
    return client


async def settle(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await deferLater(reactor, 0.02, lambda: None)


@pytest_twisted.ensureDeferred
async def test_silent_half_sent_and_idle_connections_are_closed() -> None:
    port, site, _ = await serve(request_timeout=0.3, idle_timeout=0.6)
    try:
        started = time.monotonic()
        silent = await raw(port, b"")
        half = await raw(port, b"POST /rpc HTTP/1.1\r\nHost: x\r\n")  # headers never end
        body_missing = await raw(port, post(RPC)[:-10])  # the body never completes
        done = await raw(port, post(RPC, keep_alive=True))  # then stays idle
        for client in (silent, half, body_missing):
            await client.done
        assert time.monotonic() - started < 2.0
        await settle(lambda: b'"result"' in done.received)
        await done.done  # closed by the idle timeout, after its answer
        assert site.connections.open == 0
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_silent_connections_at_the_cap_give_way_to_new_ones(
        logs: list[dict[str, Any]]) -> None:
    """At the cap, a new connection closes the oldest that never authenticated: a flood of
    silent connections cannot lock a client out (it churns through its own)."""
    port, site, _ = await serve(max_connections=3, request_timeout=30.0)
    try:
        held = [await raw(port, b"") for _ in range(3)]
        await settle(lambda: site.connections.open == 3)
        answered = await raw(port, post(RPC))
        await answered.done
        assert b'"result"' in answered.received
        await held[0].done  # the oldest silent one made room
        assert not held[1].done.called and not held[2].done.called
        more = [await raw(port, b"") for _ in range(4)]
        await held[1].done
        await held[2].done
        warnings = [formatEvent(e) for e in logs if "to let new ones in" in formatEvent(e)]
        assert len(warnings) == 1  # one line for the flood, not one per connection
        assert site.connections.open <= 3
        for client in more:
            client.transport.loseConnection()
        await settle(lambda: site.connections.open == 0)
    finally:
        for client in held:
            client.transport.loseConnection()
        await port.stopListening()


class _Connection:
    """A connection as ConnectionCount sees it: something with a transport to abort."""

    def __init__(self) -> None:
        self.aborted = False
        self.transport = self

    def abortConnection(self) -> None:
        self.aborted = True


def test_at_the_cap_the_party_holding_most_gives_way_and_one_each_is_kept() -> None:
    from twisted.internet.task import Clock

    from perund.api.connections import ConnectionCount

    count = ConnectionCount(Clock(), 4)
    hog = [_Connection() for _ in range(3)]
    for connection in hog:
        assert count.admit("peer")
        count.opened(connection)
        count.claim(connection, "aa" * 16)
    operator = _Connection()
    assert count.admit("peer")
    count.opened(operator)
    count.claim(operator, "operator")
    # Full: another user's connection comes in by closing the hog's oldest.
    other = _Connection()
    assert count.admit("peer") and hog[0].aborted and count.open == 4
    count.opened(other)
    count.claim(other, "bb" * 16)
    count.release(hog[0])  # its close arrives later: counted once
    assert count.open == 4 and count.evicted == 1
    assert count.admit("peer") and hog[1].aborted
    count.opened(newest := _Connection())
    count.claim(newest, "cc" * 16)
    # Now every party holds one connection: the next is refused, nobody is closed.
    assert not count.admit("peer") and count.refused == 1
    assert not any(c.aborted for c in (hog[2], operator, other, newest))


def test_a_session_holds_at_most_its_share_and_its_newest_closes_its_oldest() -> None:
    """One user's credentials cannot pile up connections, each able to buffer a message and
    replies, until the node holds gigabytes (found by an audit); the operator is not capped."""
    from twisted.internet.task import Clock

    from perund.api.connections import ConnectionCount

    count = ConnectionCount(Clock(), 100, per_session=3)
    mine = [_Connection() for _ in range(5)]
    with capturedLogs() as events:
        for connection in mine:
            assert count.admit("peer")
            count.opened(connection)
            count.claim(connection, "aa" * 16)
    assert [c.aborted for c in mine] == [True, True, False, False, False]
    assert count.open == 3
    assert any("limits.api_connections_per_session: 3" in formatEvent(e) for e in events)
    for closed in mine[:2]:
        count.release(closed)  # their closes arrive later: counted once
    assert count.open == 3
    operators = [_Connection() for _ in range(5)]
    for connection in operators:
        assert count.admit("peer")
        count.opened(connection)
        count.claim(connection, "operator")
    assert not any(c.aborted for c in operators) and count.open == 8


@pytest_twisted.ensureDeferred
async def test_a_sessions_websockets_past_its_share_are_really_closed() -> None:
    """The cap closes WebSockets too: autobahn takes the transport from the HTTP channel it
    upgrades, and the first version of the cap, closing through the channel, closed none
    (found by an audit: 1,500 of one session's sockets stayed open)."""
    port, site, _ = await serve(connections_per_session=2)
    try:
        opened = (await site.dispatcher.dispatch(
            {"jsonrpc": "2.0", "method": "session_open", "params": {"configFile": "a.yaml"},
             "id": 1}, _operator()))["result"]
        clients = [await socket_client(port, token=opened["token"]) for _ in range(3)]
        await clients[0].closed
        assert not clients[1].closed.called and not clients[2].closed.called
        assert isinstance(await clients[2].call("node_time"), float)
        assert site.connections.open == 2
        for client in clients[1:]:
            client.sendClose()
            await client.closed
        await settle(lambda: site.connections.open == 0)
    finally:
        await port.stopListening()


async def socket_client(port: Any, token: str = TOKEN) -> Client:
    number = port.getHost().port
    from autobahn.twisted.websocket import WebSocketClientFactory

    factory = WebSocketClientFactory(f"ws://127.0.0.1:{number}/ws",
                                     headers={"Authorization": f"Bearer {token}"},
                                     origin="https://wallet.example")  # an allowed origin
    factory.protocol = Client
    factory.opened = Deferred()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", number).connect(factory)
    client: Client = await factory.opened
    return client


@pytest_twisted.ensureDeferred
async def test_subscriptions_are_capped_per_socket_and_per_session() -> None:
    port, _, _ = await serve(subscriptions_per_socket=3, subscriptions_per_session=4)
    try:
        first, second = await socket_client(port), await socket_client(port)
        session = (await first.call("session_open", {"configFile": "alice.yaml"}))["sessionId"]
        params = {"sessionId": session, "topic": "proposals"}
        for _ in range(3):
            await first.call("subscribe", params)
        request = {"jsonrpc": "2.0", "method": "subscribe", "params": params, "id": "over"}
        reply = await first.send_raw(json.dumps(request).encode(), "over")
        assert reply["error"]["code"] == FailedPrecondition.code
        assert "limits.ws_subscriptions" in reply["error"]["message"]
        await second.call("subscribe", params)  # the session's fourth
        request["id"] = "session"
        reply = await second.send_raw(json.dumps(request).encode(), "session")
        assert "limits.session_subscriptions" in reply["error"]["message"]
        for client in (first, second):
            client.sendClose()
            await client.closed
    finally:
        await port.stopListening()


def _frame(text: bytes) -> bytes:
    """A masked client text frame (mask zero: the payload as it is)."""
    head = b"\x81" + (bytes([0x80 | len(text)]) if len(text) < 126
                      else b"\xfe" + struct.pack("!H", len(text)))
    return head + b"\0\0\0\0" + text


@pytest_twisted.ensureDeferred
async def test_a_websocket_client_that_stops_reading_is_dropped() -> None:
    cap = 64 * 1024
    port, site, node = await serve(socket_send_buffer=cap)
    try:
        session = (await site.dispatcher.dispatch(
            {"jsonrpc": "2.0", "method": "session_open", "params": {"configFile": "a.yaml"},
             "id": 1}, _operator()))["result"]["sessionId"]
        raw_session = bytes.fromhex(session[2:])
        node.sessions[raw_session].peers["bob"] = _bob()
        # A client with a tiny receive buffer that subscribes and then never reads.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port.getHost().port))
        key = base64.b64encode(os.urandom(16))
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                     b"\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        # A client sends frames only after the 101 (RFC 6455), then reads nothing more.
        assert (await threads.deferToThread(sock.recv, 4096)).startswith(b"HTTP/1.1 101 ")
        subscribe = {"jsonrpc": "2.0", "method": "subscribe", "id": 1,
                     "params": {"sessionId": session, "topic": "proposals"}}
        sock.sendall(_frame(json.dumps(subscribe).encode()))
        hub = site.hubs.attach(raw_session)
        await settle(lambda: hub.subscribers == 1)
        (socket_protocol,) = site.sockets.open_sockets()
        most = 0
        with capturedLogs() as events:
            for _ in range(20_000):
                node.propose(raw_session, "bob", {b"\0" * 20: (1, 1)})
                most = max(most, socket_protocol._unsent)
                if not socket_protocol.open:
                    break
                if _ % 500 == 0:
                    await deferLater(reactor, 0, lambda: None)
        assert not socket_protocol.open, "the slow client is still connected"
        (dropped,) = [e for e in events if "did not read" in formatEvent(e)]
        assert formatEvent(dropped).startswith("dropped 1 WebSocket client that did not read")
        assert most > 0  # pushes the client had not taken were counted
        assert most <= cap + 2048  # never past the cap (plus one push)
        assert not site.sockets.buffers.held  # what was queued no longer counts
        await settle(lambda: site.connections.open == 0)
        sock.close()
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_upgrades_from_a_foreign_origin_are_logged_once_per_interval() -> None:
    """Any credential may knock from a foreign origin as often as it likes: the log gets one
    line per interval, with the count, not one per refusal (docs/security.md, "Limits")."""
    port, _, _ = await serve()
    try:
        request = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                   b"\r\nSec-WebSocket-Key: " + base64.b64encode(os.urandom(16))
                   + b"\r\nSec-WebSocket-Version: 13\r\nOrigin: http://evil.example\r\n"
                   b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
        with capturedLogs() as events:
            for _ in range(30):
                raw = RawClient(request, until_headers=True)
                await TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
                    Factory.forProtocol(lambda: raw))  # noqa: B023 - used at once
                assert (await raw.done).startswith(b"HTTP/1.1 403 ")
        lines = [formatEvent(e) for e in events if "origin" in formatEvent(e)]
        assert len(lines) == 1 and lines[0].startswith("refused 1 WebSocket upgrade from"), lines
        assert "http://evil.example" in lines[0]
    finally:
        await port.stopListening()


def _operator() -> Any:
    from perund.api.credentials import OPERATOR
    from perund.api.method_spec import CallContext

    return CallContext("http", credential=OPERATOR)


def _bob() -> Any:
    from perund.api.node_views import PeerView
    from perund.channel.types import to_address

    return PeerView("bob", to_address("0x" + "b0" * 20), "127.0.0.1:5002", "tcp")


@pytest_twisted.ensureDeferred
async def test_lone_surrogates_get_json_rpc_errors_over_http_and_ws(
        logs: list[dict[str, Any]]) -> None:
    port, _, node = await serve()
    body = b'{"jsonrpc":"2.0","method":"session_open","params":{"configFile":"\\ud800"},"id":7}'
    try:
        client = await raw(port, post(body))
        answer = (await client.done).split(b"\r\n\r\n", 1)
        assert answer[0].startswith(b"HTTP/1.1 200 ")
        assert json.loads(answer[1])["error"]["code"] == -32700
        socket = await socket_client(port)
        reply = await socket.send_raw(body, None)
        assert reply["error"]["code"] == -32700
        assert "surrogate" in reply["error"]["data"]["requirement"]
        socket.sendClose()
        await socket.closed
        assert node.calls == []
        assert not [e for e in logs if e.get("log_failure") is not None]
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_no_access_log_line_carries_a_request() -> None:
    port, _, _ = await serve()
    captured: list[str] = []
    from twisted.python import log as legacy

    legacy.addObserver(lambda event: captured.append(repr(event)))
    try:
        client = await raw(port, post(RPC, headers=b"X-Secret: ZQX-7731\r\n").replace(
            b"POST /rpc", b"POST /rpc?token=ZQX-7731"))
        await client.done
        await threads.deferToThread(time.sleep, 0.05)
        assert not any("ZQX-7731" in line for line in captured)
    finally:
        await port.stopListening()


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    import resource
    import subprocess
    import sys

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 64:
        pytest.skip("no finite hard limit to raise to")
    script = ("import resource; from perund.node import raise_open_file_limit; "
              "s, h = resource.getrlimit(resource.RLIMIT_NOFILE); "
              "resource.setrlimit(resource.RLIMIT_NOFILE, (64, h)); "
              "print(raise_open_file_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0], h)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out[0] == out[1] == out[2] == str(hard)


def _frame_head(length: int) -> bytes:
    """The head of a masked client text frame of `length` bytes (mask zero)."""
    return b"\x81\xff" + struct.pack("!Q", length) + b"\0\0\0\0"


@pytest_twisted.ensureDeferred
async def test_a_sessions_websockets_together_hold_at_most_its_buffer() -> None:
    """Messages arriving on all of one session's sockets count against one budget: the socket
    that takes the session past it is dropped, its message never handled; the others go on;
    the operator's sockets are not counted (an audit: one user's sockets, each sending most
    of a 1 MiB message, took a node from 94 to 708 MB that it never gave back)."""
    kib = 1024
    port, site, _ = await serve(session_buffer=256 * kib)
    try:
        token = (await site.dispatcher.dispatch(
            {"jsonrpc": "2.0", "method": "session_open", "params": {"configFile": "a.yaml"},
             "id": 1}, _operator()))["result"]["token"]
        mine = [await socket_client(port, token=token) for _ in range(3)]
        operator = await socket_client(port)
        call = json.dumps({"jsonrpc": "2.0", "method": "node_time", "id": 7}).encode()
        message = call + b" " * (150 * kib - len(call))
        buffers = site.sockets.buffers
        for number, client in enumerate(mine):
            client.transport.write(_frame_head(len(message)) + message[:100 * kib])
            await settle(lambda n=number: sum(buffers.held.values()) >= (n + 1) * 100 * kib
                         or buffers.dropped)
        await mine[2].closed
        assert buffers.dropped == 1 and not mine[0].closed.called and not mine[1].closed.called
        operator.transport.write(_frame_head(len(message)) + message[:100 * kib])
        mine[0].transport.write(message[100 * kib:])  # the rest: handled as usual
        reply = await mine[0].replies.setdefault(7, Deferred())
        assert isinstance(reply["result"], float)
        assert list(buffers.held.values()) == [100 * kib]  # the second socket's part
        for client in (*mine[:2], operator):
            client.transport.abortConnection()
        await settle(lambda: not buffers.held and site.connections.open == 0)
    finally:
        await port.stopListening()
