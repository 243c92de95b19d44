"""Shared pieces of the API tests: run a coroutine that completes at once, build the API."""

from __future__ import annotations

import json
from collections.abc import Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from perund.api.amounts import Currencies, Currency
from perund.api.credentials import OPERATOR, CredentialRegistry
from perund.api.dispatcher import Dispatcher
from perund.api.hub import Hubs
from perund.api.method_spec import CallContext
from perund.api.methods import build_methods
from perund.channel.types import to_address
from tests.api.memfacade import MemoryNode

OPERATOR_TOKEN = "operator-token-0123456789"
AS_OPERATOR = CallContext("http", credential=OPERATOR)
TOKEN_ASSET = to_address("0x" + "70" * 20)
USDC = Currency("USDC", TOKEN_ASSET, 6)


def now(coroutine: Coroutine[Any, Any, Any], clock: Clock | None = None) -> Any:
    """The result of a coroutine that must complete without waiting on anything (but, given
    the `clock` of the dispatcher, the reactor turns its fair scheduler waits for: a batch
    of more calls than a turn takes)."""
    results: list[Any] = []
    Deferred.fromCoroutine(coroutine).addBoth(results.append)
    for _ in range(100 if clock is not None else 0):
        if results:
            break
        assert clock is not None
        clock.advance(0)
    assert results, "the call did not complete synchronously"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


class Api:
    """The perund dispatcher over a MemoryNode, with a Clock, called with dicts."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.node = MemoryNode(self.clock)
        self.currencies = Currencies([USDC])
        self.hubs = Hubs(self.node, self.clock)
        self.credentials = CredentialRegistry(OPERATOR_TOKEN, clock=self.clock.seconds)
        self.dispatcher = Dispatcher(
            build_methods(self.node, self.currencies, self.hubs, self.credentials), self.clock,
            credentials=self.credentials)
        self._ids = 0

    def raw(self, message: Any, context: CallContext | None = None) -> Any:
        """Dispatch a parsed message (as the operator unless `context` says otherwise); the
        parsed reply."""
        return now(self.dispatcher.dispatch(message, context or AS_OPERATOR), self.clock)

    def raw_bytes(self, body: bytes) -> Any:
        """Dispatch raw bytes as the operator; the parsed reply (None for no reply)."""
        reply = now(self.dispatcher.dispatch_bytes(body, AS_OPERATOR), self.clock)
        return None if reply is None else json.loads(reply)

    def reply(self, method: str, params: Any = None,
              context: CallContext | None = None) -> dict[str, Any]:
        """The whole reply object of one call."""
        self._ids += 1
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": self._ids}
        if params is not None:
            request["params"] = params
        reply: dict[str, Any] = self.raw(request, context)
        assert reply["id"] == self._ids
        return reply

    def call(self, method: str, params: Any = None, context: CallContext | None = None) -> Any:
        """The result of one call; AssertionError if it failed."""
        reply = self.reply(method, params, context)
        assert "error" not in reply, reply
        return reply["result"]

    def error(self, method: str, params: Any = None,
              context: CallContext | None = None) -> dict[str, Any]:
        """The error object of one call; AssertionError if it succeeded."""
        reply = self.reply(method, params, context)
        assert "result" not in reply, reply
        error: dict[str, Any] = reply["error"]
        return error

    def session(self) -> str:
        """Open a session; its ID."""
        opened = self.call("session_open", {"configFile": "alice.yaml"})
        session_id: str = opened["sessionId"]
        return session_id

    def session_with_peer(self) -> tuple[str, str]:
        """A session with contact `bob`, and an open channel with him (5 ETH / 5 ETH,
        100 USDC ours); `(session ID, channel ID)`."""
        session = self.session()
        self.call("session_addPeer", {"sessionId": session, "peer": {
            "alias": "bob", "offChainAddress": "0x" + "b0" * 20,
            "commAddress": "127.0.0.1:5002"}})
        channel = self.call("channel_open", {
            "sessionId": session, "peer": "bob", "challengeDuration": 60,
            "balances": {"ETH": {"self": "5", "peer": "5"}, "USDC": {"self": "100",
                                                                      "peer": "0"}}})
        channel_id: str = channel["channelId"]
        return session, channel_id


class RawClient(Protocol):
    """Sends `payload` as it is and keeps every byte of the answer (`done` fires with them when
    the connection ends). With `until_headers`, it hangs up once the response headers are in."""

    def __init__(self, payload: bytes, until_headers: bool = False) -> None:
        self.payload = payload
        self.until_headers = until_headers
        self.received = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self.payload)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.until_headers and b"\r\n\r\n" in self.received and self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.received)
