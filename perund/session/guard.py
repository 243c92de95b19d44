"""`store_intact`: a user request of the channel client fails at once, with the session's store
error, once the store failed to make a write durable (`ChannelClient._store_broken`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from twisted.internet.defer import Deferred, fail

from perund.errors import FailedPrecondition


class WithStore(Protocol):
    """What the guard reads: the store error, once there is one."""

    store_error: FailedPrecondition | None


_C = TypeVar("_C", bound=WithStore)
_P = ParamSpec("_P")
_T = TypeVar("_T")


def store_intact(method: Callable[Concatenate[_C, _P], Deferred[_T]],
                 ) -> Callable[Concatenate[_C, _P], Deferred[_T]]:
    """Guard a method returning a Deferred (module doc)."""
    @functools.wraps(method)
    def guarded(client: _C, /, *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        if client.store_error is not None:
            return fail(client.store_error)
        return method(client, *args, **kwargs)

    return guarded
