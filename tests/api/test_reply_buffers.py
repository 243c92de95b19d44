"""limits.api_session_buffer counts every reply byte a client has not taken, HTTP included,
in Twisted's send buffer too (audit finding 5: 64 connections that never read their replies
took a node from 103 to 320 MB). Transports here are StringTransports: what is written stays
"unsent" until the test says the kernel took it (the transport resumes its producer)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from perund.api.connections import ApiLimits
from perund.api.fair import FairScheduler
from perund.api.site import make_site
from tests.api.helpers import OPERATOR_TOKEN, now
from tests.api.memfacade import MemoryNode

LIMIT = 64 * 1024
BATCH = json.dumps([{"jsonrpc": "2.0", "id": i, "method": "node_getConfig"}
                    for i in range(80)]).encode()  # its answer: some 26 KB


def _post(token: str, body: bytes) -> bytes:
    return (b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def _connect(site: Any) -> tuple[Any, StringTransport]:
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def _body(transport: StringTransport) -> Any:
    return json.loads(transport.value().split(b"\r\n\r\n", 1)[1])


def test_unread_http_replies_count_against_the_sessions_buffer() -> None:
    clock = Clock()
    clock.advance(1_700_000_000)
    site = make_site(MemoryNode(clock), OPERATOR_TOKEN, reactor=clock,
                     limits=ApiLimits(session_buffer=LIMIT))
    opened = now(site.dispatcher.dispatch(
        {"jsonrpc": "2.0", "id": 1, "method": "session_open",
         "params": {"configFile": "a.yaml"}}, _operator()), clock)["result"]
    token, party = opened["token"], opened["sessionId"][2:]
    buffers = site.sockets.buffers  # the WebSockets' and (now) HTTP's
    channels = []
    for _ in range(3):
        channel, transport = _connect(site)
        channel.dataReceived(_post(token, BATCH))
        for _ in range(5):
            clock.advance(0)
        channels.append((channel, transport))
        assert buffers.held.get(party, 0) <= LIMIT
    (first, t1), (second, t2), (_, t3) = channels
    assert isinstance(_body(t1), list) and isinstance(_body(t2), list)
    size = len(t1.value().split(b"\r\n\r\n", 1)[1])
    # Two answers wait for clients that have not read them; the third would not fit.
    error = _body(t3)["error"]
    assert error["code"] == 204 and "limits.api_session_buffer" in error["message"]
    assert error["data"]["limit"] == LIMIT
    held = buffers.held[party]
    assert 2 * size <= held <= LIMIT
    # The kernel took the first client's answer: it no longer counts.
    first.resumeProducing()
    assert buffers.held[party] == held - size
    # A closed connection frees what it held.
    second.connectionLost(None)
    assert buffers.held.get(party, 0) == held - 2 * size
    assert buffers.most <= LIMIT


def test_a_session_without_room_gets_no_turn_until_its_clients_take_their_answers() -> None:
    clock = Clock()
    fair = FairScheduler(clock)
    full = {"bob"}
    fair.ready = lambda party: party not in full
    ran: list[str] = []
    fair.submit("bob", lambda: ran.append("bob"))
    fair.submit("alice", lambda: ran.append("alice"))
    assert ran == ["alice"] and fair.waiting("bob") == 1
    full.clear()
    fair.wake("bob")
    assert ran == ["alice", "bob"]


def _operator() -> Any:
    from perund.api.credentials import OPERATOR
    from perund.api.method_spec import CallContext
    return CallContext("http", credential=OPERATOR)
