"""`GET /ws`: the JSON-RPC API over a WebSocket, with pushes.

The token is checked before the upgrade (header `Authorization: Bearer`, or `?token=` for
clients that cannot set headers, such as browsers); without it the answer is a plain 401 and
no WebSocket is made. Each text or binary message is one JSON-RPC message for the same
dispatcher as `/rpc`; `subscribe` / `unsubscribe` work only here. Pushes are JSON-RPC
notifications `{"jsonrpc": "2.0", "method": "perund_notification",
"params": {"subscription": id, "result": ...}}`. A client that disconnects is unsubscribed.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from perund.api.amounts import Currencies
from perund.api.dispatcher import CallContext, Dispatcher, encode_json
from perund.api.http import MAX_BODY, ApiRequest, bearer, refuse_unauthorized, token_matches
from perund.api.hub import ClientSubscriptions
from perund.api.methods import NOTIFICATION_METHOD
from perund.api.views import Notification, Withdrawn

log = Logger(namespace="perund.api.ws")


class ApiSocket(WebSocketServerProtocol):
    """One WebSocket client: requests in, replies and pushes out."""

    factory: ApiSocketFactory

    def onOpen(self) -> None:
        self.subscriptions = ClientSubscriptions(self._push)
        self.open = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        handled = Deferred.fromCoroutine(self._handle(payload))
        handled.addErrback(self._failed)

    async def _handle(self, payload: bytes) -> None:
        context = CallContext("ws", self.subscriptions)
        reply = await self.factory.dispatcher.dispatch_bytes(payload, context)
        if not self.open:
            self.subscriptions.close()
            return
        if reply is not None:
            self.sendMessage(reply, isBinary=False)  # type: ignore[no-untyped-call]
        self.subscriptions.release()

    def _push(self, subscription_id: str, notification: Notification) -> None:
        if not self.open or isinstance(notification, Withdrawn):
            return
        message = {"jsonrpc": "2.0", "method": NOTIFICATION_METHOD,
                   "params": {"subscription": subscription_id,
                              "result": notification.to_json(self.factory.currencies)}}
        self.sendMessage(encode_json(message),  # type: ignore[no-untyped-call]
                         isBinary=False)

    def _failed(self, failure: Failure) -> None:
        log.failure("a WebSocket message could not be handled", failure)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.open = False
        subscriptions = getattr(self, "subscriptions", None)
        if subscriptions is not None:
            subscriptions.close()


class ApiSocketFactory(WebSocketServerFactory):
    """Builds `ApiSocket`s sharing one dispatcher and currency table."""

    protocol = ApiSocket  # type: ignore[assignment]  # Twisted's Factory types it narrowly

    def __init__(self, dispatcher: Dispatcher, currencies: Currencies,
                 max_message: int = MAX_BODY, ping_interval: float = 30.0) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # autobahn is untyped
        self.dispatcher = dispatcher
        self.currencies = currencies
        # A dead peer is noticed by pings (its subscriptions end); messages are as bounded as
        # HTTP bodies.
        self.setProtocolOptions(  # type: ignore[no-untyped-call]
            maxMessagePayloadSize=max_message, maxFramePayloadSize=max_message,
            autoPingInterval=ping_interval, autoPingTimeout=ping_interval)


class WebSocketEntry(Resource):
    """`/ws`: checks the token, then hands the connection to Autobahn."""

    isLeaf = True

    def __init__(self, factory: ApiSocketFactory, token: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted leaves it untyped
        self._token = token
        self._upgrade: Any = WebSocketResource(factory)  # type: ignore[no-untyped-call]

    def render(self, request: Any) -> bytes | int:
        """Upgrade an authorised request; 401 otherwise."""
        if not self._authorized(request):
            return refuse_unauthorized(request)
        result: bytes | int = self._upgrade.render(request)
        return result

    def _authorized(self, request: Any) -> bool:
        if isinstance(request, ApiRequest) and request.authorized:
            return True
        if token_matches(self._token, bearer(request.getHeader(b"authorization"))):
            return True
        offered = (request.args or {}).get(b"token")
        return offered is not None and len(offered) == 1 and token_matches(self._token,
                                                                           offered[0])
