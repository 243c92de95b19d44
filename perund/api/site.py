"""`make_site`: the API's twisted.web Site with `/rpc` and `/ws`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import Resource
from twisted.web.server import Site

from perund.api.amounts import Currencies
from perund.api.credentials import CredentialRegistry
from perund.api.dispatcher import Dispatcher, encode_json
from perund.api.facade import NodeFacade
from perund.api.http import (
    MAX_BODY,
    ApiRequest,
    MetricsResource,
    RpcResource,
    refuse_unauthorized,
)
from perund.api.hub import Hubs
from perund.api.methods import build_methods
from perund.api.ws import ApiSocketFactory, WebSocketEntry
from perund.metrics import Metrics


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
    """The API's Site; `dispatcher` and `hubs` are exposed for the node and for tests."""

    requestFactory = ApiRequest

    def __init__(self, root: Resource, *, credentials: CredentialRegistry, max_body: int,
                 dispatcher: Dispatcher, hubs: Hubs) -> None:
        super().__init__(root)  # type: ignore[no-untyped-call]  # no logPath: no access log, whose URIs could carry ?token=
        self.credentials = credentials
        self.max_body = max_body
        self.dispatcher = dispatcher
        self.hubs = hubs


def make_site(facade: NodeFacade, credentials: CredentialRegistry | str, *,
              reactor: IReactorTime,
              currencies: Currencies | None = None, max_body: int = MAX_BODY,
              max_batch: int = 100, closed_ttl: float = 3600.0,
              metrics: Metrics | None = None,
              render_metrics: Callable[[], str] | None = None) -> ApiSite:
    """The API on one Site: `POST /rpc` and `GET /ws` (and, given `render_metrics`,
    `GET /metrics`), all behind `credentials` (or, given a string, the operator's token alone,
    with session credentials kept in memory). API calls are counted in `metrics`."""
    if isinstance(credentials, str):
        clock: Any = reactor  # zope interfaces do not type-check as protocols
        credentials = CredentialRegistry(credentials, clock=clock.seconds)
    table = currencies if currencies is not None else Currencies()
    hubs = Hubs(facade, reactor, closed_ttl=closed_ttl)
    dispatcher = Dispatcher(build_methods(facade, table, hubs, credentials), reactor,
                            max_batch=max_batch, metrics=metrics, credentials=credentials)
    root: Any = _Root()  # Any: Resource's zope interfaces do not type-check without mypy-zope
    root.putChild(b"rpc", RpcResource(dispatcher, credentials, max_body))
    root.putChild(b"ws", WebSocketEntry(ApiSocketFactory(dispatcher, table, credentials,
                                                         reactor, max_body)))
    if render_metrics is not None:
        root.putChild(b"metrics", MetricsResource(render_metrics))
    site = ApiSite(root, credentials=credentials, max_body=max_body, dispatcher=dispatcher,
                   hubs=hubs)
    site_any: Any = site
    site_any.displayTracebacks = False
    return site
