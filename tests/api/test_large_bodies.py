"""A session's large request bodies are bounded in bytes a second: parsing a 1 MiB body costs
the reactor up to ~40 ms, and a WebSocket client may send them without waiting (found by an
audit). Small bodies and the operator are not counted."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from perund.api.credentials import OPERATOR, Access, Credential, Scope
from perund.api.dispatcher import LARGE_BODY, LARGE_BODY_BURST, LARGE_BODY_RATE, Dispatcher
from perund.api.method_spec import CallContext, Method

ALICE, BOB = "ab" * 16, "cd" * 16


async def _echo(args: dict[str, Any], ctx: CallContext) -> Any:
    return len(args["text"])


def _send(rpc: Dispatcher, credential: Credential, size: int) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "echo",
                       "params": {"text": "x" * size}}).encode()
    results: list[bytes | None] = []
    Deferred.fromCoroutine(rpc.dispatch_bytes(body, CallContext("ws", credential=credential))
                           ).addCallback(results.append)
    rpc.clock.advance(0)  # a large body takes more than a turn of the fair scheduler
    (reply,) = results
    assert reply is not None
    answer: dict[str, Any] = json.loads(reply)
    return answer


def test_a_sessions_large_bodies_are_bounded_in_bytes_a_second() -> None:
    from perund.api.method_spec import Param

    clock = Clock()
    method = Method("echo", "", (Param("text", {"type": "string"}),), {}, _echo,
                    access=Access.ANYONE)
    rpc = Dispatcher([method], clock)
    alice = Credential("a1" * 16, Scope.SESSION, ALICE, "", 0.0)
    bob = Credential("b1" * 16, Scope.SESSION, BOB, "", 0.0)
    size = 900 * 1024
    fits = LARGE_BODY_BURST // (size + 80)
    for _ in range(fits):
        assert _send(rpc, alice, size)["result"] == size
    refused = _send(rpc, alice, size)["error"]
    assert refused["code"] == 204 and "faster than 1 MiB a second" in refused["message"]
    assert refused["data"]["retryAfter"] > 0
    assert _send(rpc, alice, LARGE_BODY // 2)["result"] == LARGE_BODY // 2  # small: not counted
    assert _send(rpc, bob, size)["result"] == size  # another session: its own allowance
    for _ in range(fits + 1):
        assert _send(rpc, OPERATOR, size)["result"] == size  # the operator: not counted
    clock.advance((size + 80) / LARGE_BODY_RATE)  # refilled by one body's worth
    assert _send(rpc, alice, size)["result"] == size
    assert "error" in _send(rpc, alice, size)
