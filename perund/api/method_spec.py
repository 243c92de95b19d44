"""What an API method is: its params, result, access rule and handler, and the call context.

These types describe methods for the dispatcher (which validates, authorises and runs them) and
for the OpenRPC document (perund/api/openrpc.py); neither of those is imported here, so the
three modules form no circle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from perund.api.credentials import Access, Credential
from perund.api.schema import Schema
from perund.errors import PerundError

if TYPE_CHECKING:
    from perund.api.hub import ClientSubscriptions


class CallContext:
    """Where a call came from: the transport's name, the caller's credential (None: nobody
    authenticated, which every method refuses) and, on a WebSocket, the connection's
    subscriptions (None over HTTP, which cannot push)."""

    def __init__(self, transport: str = "http",
                 subscriptions: ClientSubscriptions | None = None,
                 credential: Credential | None = None) -> None:
        self.transport = transport
        self.subscriptions = subscriptions
        self.credential = credential


Handler = Callable[[dict[str, Any], CallContext], Awaitable[Any]]
"""Runs a method on validated params (still JSON values); returns the JSON-ready result."""


@dataclass(frozen=True, slots=True)
class Param:
    """One named parameter; positional calls give them in this order."""

    name: str
    schema: Schema
    required: bool = True
    description: str = ""


@dataclass(frozen=True, slots=True)
class Method:
    """A method: its params and result schemas (the OpenRPC entry), who may call it, and its
    handler.

    `handler` calls the node; `render` turns what it returned into JSON values. A failure in
    `handler` is the node's (application error, or 401 for a bug); a failure in `render` is
    this layer's own (-32603). `access` says which credentials may call it; for the session
    levels, the `sessionId` param must name the credential's own session.
    """

    name: str
    summary: str
    params: tuple[Param, ...]
    result: Schema
    handler: Handler
    render: Callable[[Any], Any] = lambda value: value
    description: str = ""
    result_name: str = "result"
    errors: tuple[type[PerundError], ...] = ()
    access: Access = Access.OPERATOR
