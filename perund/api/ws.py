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
from perund.api.credentials import CLOSE_REVOKED, Credential, CredentialRegistry
from perund.api.dispatcher import Dispatcher, encode_json
from perund.api.http import MAX_BODY, ApiRequest, bearer, refuse_unauthorized
from perund.api.hub import ClientSubscriptions
from perund.api.method_spec import CallContext
from perund.api.methods import NOTIFICATION_METHOD
from perund.api.views import Notification, Withdrawn

log = Logger(namespace="perund.api.ws")


class ApiSocket(WebSocketServerProtocol):
    """One WebSocket client: requests in, replies and pushes out."""

    factory: ApiSocketFactory
    credential: Credential | None = None
    """Who authenticated the upgrade; every message is called as them."""

    def onOpen(self) -> None:
        self.subscriptions = ClientSubscriptions(self._push)
        self.open = True
        self.factory.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        handled = Deferred.fromCoroutine(self._handle(payload))
        handled.addErrback(self._failed)

    async def _handle(self, payload: bytes) -> None:
        context = CallContext("ws", self.subscriptions, self.credential)
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
        self.factory.closed(self)
        subscriptions = getattr(self, "subscriptions", None)
        if subscriptions is not None:
            subscriptions.close()

    def credential_revoked(self) -> None:
        """Its credential ended (revoked, or its session closed): end the connection, after
        the reply in flight (the revoking call's own, say) has gone out."""
        if self.open:
            self.open = False
            subscriptions = getattr(self, "subscriptions", None)
            if subscriptions is not None:
                subscriptions.close()
            self.sendClose(code=CLOSE_REVOKED,
                           reason="the credential of this connection was revoked")


class ApiSocketFactory(WebSocketServerFactory):
    """Builds `ApiSocket`s sharing one dispatcher and currency table."""

    protocol = ApiSocket  # type: ignore[assignment]  # Twisted's Factory types it narrowly

    def __init__(self, dispatcher: Dispatcher, currencies: Currencies,
                 credentials: CredentialRegistry, reactor: Any,
                 max_message: int = MAX_BODY, ping_interval: float = 30.0) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # autobahn is untyped
        self.dispatcher = dispatcher
        self.currencies = currencies
        self.credentials = credentials
        self._reactor = reactor
        self.upgrading: Credential | None = None
        """The credential of the upgrade being handed over (set only during that call)."""
        self._sockets: dict[str, set[ApiSocket]] = {}
        credentials.on_revoked(self._revoked)
        # A dead peer is noticed by pings (its subscriptions end); messages are as bounded as
        # HTTP bodies.
        self.setProtocolOptions(  # type: ignore[no-untyped-call]
            maxMessagePayloadSize=max_message, maxFramePayloadSize=max_message,
            autoPingInterval=ping_interval, autoPingTimeout=ping_interval)


    def buildProtocol(self, addr: Any) -> Any:
        """A socket carrying the credential its upgrade was authenticated with."""
        protocol: Any = super().buildProtocol(addr)
        protocol.credential = self.upgrading
        return protocol

    def opened(self, socket: ApiSocket) -> None:
        """Track `socket` under its credential, to close it should that end."""
        if socket.credential is not None:
            self._sockets.setdefault(socket.credential.id, set()).add(socket)

    def closed(self, socket: ApiSocket) -> None:
        """Stop tracking `socket`."""
        if socket.credential is not None:
            sockets = self._sockets.get(socket.credential.id)
            if sockets is not None:
                sockets.discard(socket)
                if not sockets:
                    del self._sockets[socket.credential.id]

    def _revoked(self, credential: Credential) -> None:
        for socket in list(self._sockets.get(credential.id, ())):
            self._reactor.callLater(0, socket.credential_revoked)


class WebSocketEntry(Resource):
    """`/ws`: checks the token, then hands the connection to Autobahn."""

    isLeaf = True

    def __init__(self, factory: ApiSocketFactory) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted leaves it untyped
        self._factory = factory
        self._upgrade: Any = WebSocketResource(factory)  # type: ignore[no-untyped-call]

    def render(self, request: Any) -> bytes | int:
        """Upgrade an authorised request; 401 otherwise."""
        credential = self._credential(request)
        if credential is None:
            return refuse_unauthorized(request)
        self._factory.upgrading = credential
        try:
            result: bytes | int = self._upgrade.render(request)
        finally:
            self._factory.upgrading = None
        return result

    def _credential(self, request: Any) -> Credential | None:
        if isinstance(request, ApiRequest) and request.credential is not None:
            return request.credential
        credentials = self._factory.credentials
        credential = credentials.authenticate(bearer(request.getHeader(b"authorization")))
        if credential is not None:
            return credential
        offered = (request.args or {}).get(b"token")
        if offered is None or len(offered) != 1:
            return None
        return credentials.authenticate(offered[0])
