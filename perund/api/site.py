"""`make_site`: the API's twisted.web Site with `/rpc` and `/ws`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Site

from perund.api.amounts import Currencies
from perund.api.connections import ApiChannel, ApiLimits, ConnectionCount, SessionBuffers
from perund.api.credentials import CredentialRegistry
from perund.api.dispatcher import Dispatcher, encode_json
from perund.api.facade import NodeFacade
from perund.api.http import (
    ApiRequest,
    MetricsResource,
    RpcResource,
    refuse_unauthorized,
)
from perund.api.hub import Hubs
from perund.api.methods import build_methods
from perund.api.ws import ApiSocketFactory, WebSocketEntry
from perund.metrics import Metrics
from perund.ratelimit import RateLimitedWarning


class _Root(Resource):
    """Anything but /rpc and /ws: 401 without the token, 404 with it (reveal nothing)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted leaves it untyped

    def getChild(self, path: bytes, request: Any) -> Resource:
        return self

    def render(self, request: Any) -> bytes:
        if not getattr(request, "authorized", False):
            return refuse_unauthorized(request)
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"application/json")
        return encode_json({"error": "no such resource: use POST /rpc, GET /ws or GET /metrics"})


class ApiSite(Site):
    """The API's Site; `dispatcher` and `hubs` are exposed for the node and for tests.

    No access log: the dispatcher logs each call (never its params), while an access log would
    write request lines that could carry what a client put in a URL.
    """

    requestFactory = ApiRequest
    # No HTTP/2 (its ALPN wrapper): the channel's deadlines are HTTP/1.1's.
    protocol = ApiChannel  # type: ignore[assignment]

    def __init__(self, root: Resource, *, credentials: CredentialRegistry, limits: ApiLimits,
                 dispatcher: Dispatcher, hubs: Hubs, reactor: Any) -> None:
        super().__init__(root, timeout=limits.idle_timeout,  # type: ignore[no-untyped-call]
                         reactor=reactor)
        self.credentials = credentials
        self.limits = limits
        self.max_body = limits.max_body
        self.dispatcher = dispatcher
        self.hubs = hubs
        self.connections = ConnectionCount(reactor, limits.max_connections,
                                           limits.connections_per_session)
        self.buffers: SessionBuffers | None = None
        """What each session's connections hold (limits.api_session_buffer), once built."""
        self.sockets: ApiSocketFactory | None = None
        """The WebSocket side (its open sockets), once `make_site` built it."""
        self.refusals = RateLimitedWarning(reactor, Logger(namespace="perund.api.http"))
        """The warning about requests without a valid credential (one line per interval)."""

    def buildProtocol(self, addr: Any) -> Any:
        """A counted API channel, or None (Twisted closes the connection) past the cap."""
        if not self.connections.admit(addr):
            return None
        channel: Any = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        channel.count = self.connections
        channel.buffers = self.buffers
        channel.request_timeout = self.limits.request_timeout
        return channel

    def log(self, request: Any) -> None:
        """No access log (see the class docstring)."""

    def startFactory(self) -> None:
        """No access log, hence no log file and no per-second log clock."""

    def stopFactory(self) -> None:
        """Nothing was started."""


def make_site(facade: NodeFacade, credentials: CredentialRegistry | str, *,
              reactor: IReactorTime, currencies: Currencies | None = None,
              limits: ApiLimits | None = None, allowed_origins: Iterable[str] = (),
              max_batch: int = 100,
              closed_ttl: float = 3600.0, metrics: Metrics | None = None,
              render_metrics: Callable[[], str] | None = None) -> ApiSite:
    """The API on one Site: `POST /rpc` and `GET /ws` (and, given `render_metrics`,
    `GET /metrics`), all behind `credentials` (or, given a string, the operator's token alone,
    with session credentials kept in memory), within `limits`. API calls are counted in
    `metrics`."""
    clock: Any = reactor  # zope interfaces do not type-check as protocols
    if isinstance(credentials, str):
        credentials = CredentialRegistry(credentials, clock=clock.seconds)
    limits = limits or ApiLimits()
    table = currencies if currencies is not None else Currencies()
    hubs = Hubs(facade, reactor, closed_ttl=closed_ttl,
                max_subscribers=limits.subscriptions_per_session, currencies=table)
    dispatcher = Dispatcher(build_methods(facade, table, hubs, credentials), reactor,
                            max_batch=max_batch, metrics=metrics, credentials=credentials,
                            max_in_flight=limits.calls_in_flight)
    root: Any = _Root()  # Any: Resource's zope interfaces do not type-check without mypy-zope
    root.putChild(b"rpc", RpcResource(dispatcher, credentials, limits.max_body))
    buffers = SessionBuffers(reactor, limits.session_buffer)
    _wait_for_room(dispatcher, buffers)
    sockets = ApiSocketFactory(dispatcher, table, credentials, reactor, limits,
                               allowed_origins=allowed_origins, buffers=buffers)
    root.putChild(b"ws", WebSocketEntry(sockets))
    if render_metrics is not None:
        root.putChild(b"metrics", MetricsResource(render_metrics))
    site = ApiSite(root, credentials=credentials, limits=limits, dispatcher=dispatcher,
                   hubs=hubs, reactor=reactor)
    site.sockets = sockets
    site.buffers = buffers
    site_any: Any = site
    site_any.displayTracebacks = False
    return site


def _wait_for_room(dispatcher: Dispatcher, buffers: SessionBuffers) -> None:
    """A session whose clients hold `limits.api_session_buffer` of answers not taken gets no
    turn (its messages are not read, its batches' calls not started) until they take some:
    its flood waits instead of growing what the node holds."""
    scheduler = dispatcher.scheduler
    def ready(queue: Any) -> bool:  # (party, read-only)
        return not buffers.full(queue[0])

    scheduler.ready = ready

    def room(party: str) -> None:
        scheduler.wake((party, False))
        scheduler.wake((party, True))

    buffers.on_room = room
