"""`GET /ws`: the JSON-RPC API over a WebSocket, with pushes.

The credential is checked before the upgrade: one `Authorization: Bearer` header, or, for
clients that cannot set headers (browsers), the subprotocol `perund.bearer.<token>` offered with
`perund` in `Sec-WebSocket-Protocol` (never a query string, which proxies and logs keep).
Without it the answer is a plain 401 and no WebSocket is made. A request carrying an `Origin`
(a browser's) is refused with 403 unless that origin is on `api.allowed_origins`.

Each text or binary message is one JSON-RPC message for the same dispatcher as `/rpc`;
`subscribe` / `unsubscribe` work only here. Pushes are JSON-RPC notifications
`{"jsonrpc": "2.0", "method": "perund_notification", "params": {"subscription": id,
"result": ...}}`. A client that disconnects is unsubscribed. A client that stops reading gets
its replies and pushes held (in Twisted's send buffer, counted until the transport says it
sent them: `meter_sends`) up to `limits.ws_send_buffer` bytes, then the connection is
dropped (it resubscribes and reads the current state when it comes back). A socket is not
read while one of its messages waits for its session's turn (`FairScheduler`).

What one session's connections hold together, messages still arriving and replies and pushes
not taken, is bounded by `limits.api_session_buffer` (`SessionBuffers`, shared with HTTP): a
socket that takes its session past it is dropped. Without it one user's credentials could
make the node hold `api_connections_per_session` times a message and a send buffer (about
320 MiB), which the allocator does not give back (found by an audit).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from perund.api.amounts import Currencies
from perund.api.connections import (
    ApiLimits,
    SessionBuffers,
    claim_connection,
    let_close,
    meter_sends,
)
from perund.api.credentials import CLOSE_REVOKED, OPERATOR_ID, Credential, CredentialRegistry
from perund.api.dispatcher import INTERNAL_ERROR, Dispatcher, encode_json, error_reply
from perund.api.http import ApiRequest, credential_of, party_of, refuse_unauthorized
from perund.api.hub import ClientSubscriptions
from perund.api.method_spec import CallContext
from perund.api.methods import NOTIFICATION_METHOD
from perund.api.views import Delivered, Withdrawn
from perund.ratelimit import RateLimitedWarning

log = Logger(namespace="perund.api.ws")


class ApiSocket(WebSocketServerProtocol):
    """One WebSocket client: requests in, replies and pushes out."""

    factory: ApiSocketFactory
    credential: Credential | None = None
    """Who authenticated the upgrade; every message is called as them."""
    channel: Any = None
    """The HTTP channel the socket was upgraded from (its connection count is ours now)."""

    def onConnect(self, request: Any) -> str | None:
        """Accept the upgrade; a browser's `perund` subprotocol is confirmed (the token it
        offered beside it is not echoed)."""
        return SUBPROTOCOL if SUBPROTOCOL in (request.protocols or ()) else None

    _held = 0
    """Bytes of this socket that count against its session's `SessionBuffers`."""
    _dropped = False
    """Dropped for taking its session past `limits.api_session_buffer`."""

    _metered = False
    """Whether its transport tells it of every flush (`meter_sends`; not under TLS)."""

    _unsent = 0
    """Bytes of replies and pushes written that the client has not taken yet (`meter_sends`:
    the transport resumes us once it has sent everything)."""

    def onOpen(self) -> None:
        self.subscriptions = ClientSubscriptions(
            self._push, self.factory.limits.subscriptions_per_socket)
        self.open = True
        # The transport tells us when its buffer is empty: we take over from the HTTP
        # channel, registered there before the upgrade.
        self._metered = meter_sends(self.transport, self)
        self.factory.opened(self)

    def pauseProducing(self) -> None:
        """Not called for a pull producer (`meter_sends`): what we wrote stays counted until
        `resumeProducing`."""

    def resumeProducing(self) -> None:
        """The client took everything written so far."""
        unsent, self._unsent = self._unsent, 0
        self._release(unsent)
        let_close(self.transport)

    def stopProducing(self) -> None:
        """The connection is going: what it held is freed."""
        unsent, self._unsent = self._unsent, 0
        self._release(unsent)

    def _hold(self, size: int) -> bool:
        """Count `size` more bytes against the session's buffer; False (the socket dropped)
        if that takes the session past it."""
        if self._dropped:
            return False
        self._held += size
        if self.factory.buffers.hold(_party(self), size):
            return True
        self._dropped = True
        self.factory.buffers.over(_party(self), "WebSocket")
        self._drop()
        return False

    def _drop(self) -> None:
        self.open = False
        self.stopProducing()
        self.dropConnection(abort=True)

    def _release(self, size: int) -> None:
        if size:
            self._held -= size
            self.factory.buffers.release(_party(self), size)

    def onMessageFrameData(self, payload: bytes) -> None:
        """A part of a message arrived: autobahn keeps it until the message is complete."""
        if self._hold(len(payload)):
            super().onMessageFrameData(payload)

    def onMessageEnd(self) -> None:
        """The message is complete: handed over, its parts no longer held. A message of a
        socket dropped for its session's buffer is not: parts of it were left out."""
        if self._dropped:
            return
        self._release(self._held - self._unsent)
        super().onMessageEnd()

    def _send_if_open(self, data: bytes) -> None:
        # The client may have begun the closing handshake before `onClose` runs (our `open`
        # is still set then): what would go out now has no one to read it.
        if self.state != self.STATE_OPEN:
            return
        # autobahn bounds what we send by the same size as what we receive. The limit is for
        # what clients send us; a reply may be longer (a thousand contacts, a batch of
        # listings), and refusing to send it would only fail the calls already made.
        limit: int = self.maxMessagePayloadSize  # type: ignore[has-type]  # autobahn
        self.maxMessagePayloadSize = 0
        try:
            self.sendMessage(data, isBinary=False)  # type: ignore[no-untyped-call]
        finally:
            self.maxMessagePayloadSize = limit

    def _transmit(self, data: bytes) -> None:
        """Send a reply or push, counted until the client has taken it: past
        `limits.ws_send_buffer` for this socket, or its session's buffer, it is dropped."""
        if self.state != self.STATE_OPEN:
            return
        if not self._metered:  # under TLS (`meter_sends`): uncounted
            self._send_if_open(data)
            return
        if not self._hold(len(data)):
            return
        self._unsent += len(data)
        if self._unsent > self.factory.limits.socket_send_buffer:
            self.factory.slow_consumer(self)
            self._drop()
            return
        self._send_if_open(data)

    _unread = 0
    """Messages of this socket the dispatcher has not read yet (they wait for their turn)."""
    _reading_paused = False

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self._unread += 1
        handled = Deferred.fromCoroutine(self._handle(payload))
        handled.addErrback(self._failed)
        if self._unread and not self._reading_paused and self.transport is not None:
            # Its message waits for its session's turn: read no more of this client until it
            # is read (what the last read brought is all it can have waiting), rather than
            # queue whatever it sends (docs/security.md, "Fairness").
            self._reading_paused = True
            self.transport.pauseProducing()

    def _read(self) -> None:
        """The dispatcher reads one of this socket's messages now."""
        self._unread -= 1
        if not self._unread and self._reading_paused:
            self._reading_paused = False
            if self.transport is not None:
                self.transport.resumeProducing()

    async def _handle(self, payload: bytes) -> None:
        context = CallContext("ws", self.subscriptions, self.credential)
        reply = await self.factory.dispatcher.dispatch_bytes(payload, context, self._read)
        if not self.open:
            self.subscriptions.close()
            return
        if reply is not None:
            self._transmit(reply)
        self.subscriptions.release()

    def _push(self, subscription_id: str, notification: Delivered) -> None:
        if not self.open or isinstance(notification, Withdrawn):
            return
        message = {"jsonrpc": "2.0", "method": NOTIFICATION_METHOD,
                   "params": {"subscription": subscription_id,
                              "result": notification.to_json(self.factory.currencies)}}
        self._transmit(encode_json(message))

    def _failed(self, failure: Failure) -> None:
        # The dispatcher answers every error itself: reaching this is a bug. The client still
        # gets a JSON-RPC error, not silence.
        log.failure("a WebSocket message could not be handled", failure)
        if self.open:
            self._transmit(encode_json(error_reply(None, INTERNAL_ERROR)))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.open = False
        self._unsent = 0
        self._release(self._held)
        self.factory.closed(self)
        if self.channel is not None:
            self.channel.count.release(self.channel)
            self.channel.socket = None  # no cycle keeps a closed socket's buffers alive
            self.channel = None
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
                 credentials: CredentialRegistry, reactor: Any, limits: ApiLimits,
                 ping_interval: float = 30.0, allowed_origins: Iterable[str] = (),
                 buffers: SessionBuffers | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # autobahn is untyped
        self.dispatcher = dispatcher
        self.currencies = currencies
        self.credentials = credentials
        self.limits = limits
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self._reactor = reactor
        self.upgrading: tuple[Credential, Any] | None = None
        """The credential and HTTP channel of the upgrade being handed over (set only during
        that call)."""
        self._sockets: dict[str, set[ApiSocket]] = {}
        self.buffers = buffers or SessionBuffers(reactor, limits.session_buffer)
        """What each session's connections hold (the Site's, shared with HTTP)."""
        self._slow = RateLimitedWarning(reactor, log)
        self.foreign_origins = RateLimitedWarning(reactor, log)
        """Refused upgrades from an origin `api.allowed_origins` does not name."""
        credentials.on_revoked(self._revoked)
        # A dead peer is noticed by pings (its subscriptions end); messages are as bounded as
        # HTTP bodies.
        # failByDrop=False: a message over the limit is answered with close code 1009 (and a
        # protocol error with its code) before the connection ends, not a bare drop.
        self.setProtocolOptions(  # type: ignore[no-untyped-call]
            maxMessagePayloadSize=limits.max_body, maxFramePayloadSize=limits.max_body,
            autoPingInterval=ping_interval, autoPingTimeout=ping_interval, failByDrop=False)


    def buildProtocol(self, addr: Any) -> Any:
        """A socket carrying the credential its upgrade was authenticated with."""
        protocol: Any = super().buildProtocol(addr)
        if self.upgrading is not None:
            protocol.credential, protocol.channel = self.upgrading
            protocol.channel.socket = protocol  # the caps close it through the channel
        return protocol

    def slow_consumer(self, socket: ApiSocket) -> None:
        """Log (at most once per interval) that a client that does not read was dropped."""
        self._slow.warn("dropped {counted} that did not read: over {limit} "
                        "bytes of replies and pushes waited for one (limits.ws_send_buffer)",
                        "WebSocket client", limit=self.limits.socket_send_buffer)

    def open_sockets(self) -> list[ApiSocket]:
        """The sockets open now that carry a credential."""
        return [socket for group in self._sockets.values() for socket in group]

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


def _party(socket: ApiSocket) -> str | None:
    """The session whose budget `socket` draws on (None: the operator's, or nobody's)."""
    credential = socket.credential
    if credential is None:
        return None
    party = party_of(credential)
    return None if party == OPERATOR_ID else party


class WebSocketEntry(Resource):
    """`/ws`: checks the token, then hands the connection to Autobahn."""

    isLeaf = True

    def __init__(self, factory: ApiSocketFactory) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted leaves it untyped
        self._factory = factory
        self._upgrade: Any = WebSocketResource(factory)  # type: ignore[no-untyped-call]

    def render(self, request: Any) -> bytes | int:
        """Upgrade an authorised request from an allowed origin; 401 or 403 otherwise."""
        credential = self._credential(request)
        if credential is None:
            return refuse_unauthorized(request)
        origin = request.getHeader(b"origin")
        if origin is not None and not self._origin_allowed(origin):
            # Any credential may ask again and again: one line per interval (docs/security.md).
            self._factory.foreign_origins.warn(
                "refused {counted} from origins not allowed (the last: "
                "{origin}; api.allowed_origins)", "WebSocket upgrade",
                origin=origin.decode("ascii", "replace")[:100])
            request.setResponseCode(403)
            request.setHeader(b"content-type", b"application/json")
            return encode_json({"error": "this origin may not use the API "
                                         "(api.allowed_origins)"})
        upgrade = (request.getHeader(b"upgrade") or b"").lower()
        if upgrade != b"websocket":
            # Not a WebSocket handshake: a JSON answer, as every refusal (autobahn's own would
            # be an HTML page naming its version).
            request.setResponseCode(426)
            request.setHeader(b"upgrade", b"websocket")
            request.setHeader(b"content-type", b"application/json")
            return encode_json({"error": "GET /ws is a WebSocket: send Upgrade: websocket "
                                         "(JSON-RPC over HTTP is POST /rpc)"})
        channel = request.channel
        claim_connection(request, party_of(credential))  # (a browser's token came late)
        self._factory.upgrading = (credential, channel)
        try:
            result: bytes | int = self._upgrade.render(request)
        finally:
            self._factory.upgrading = None
        if hasattr(channel, "upgraded"):
            channel.upgraded()
        return result

    def _origin_allowed(self, origin: bytes) -> bool:
        text = origin.decode("ascii", "replace").rstrip("/").lower()
        return text in self._factory.allowed_origins

    def _credential(self, request: Any) -> Credential | None:
        """From the one Authorization header (two are refused), or from a browser's
        subprotocol offer; never from the query string."""
        credentials = self._factory.credentials
        if request.requestHeaders.getRawHeaders(b"authorization") is not None:
            if isinstance(request, ApiRequest):
                return request.credential
            return credential_of(credentials, request)
        offered = b",".join(request.requestHeaders.getRawHeaders(
            b"sec-websocket-protocol") or [])
        for item in offered.split(b","):
            token = item.strip()
            if token.startswith(BEARER_PREFIX):
                return credentials.authenticate(token[len(BEARER_PREFIX):])
        return None


SUBPROTOCOL = "perund"
"""The subprotocol a browser offers (with `perund.bearer.<token>`) to send its credential."""

BEARER_PREFIX = b"perund.bearer."
