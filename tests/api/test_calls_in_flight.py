"""limits.api_calls_in_flight: one party's calls in progress at once are bounded, over every
connection; read-only credentials take at most half; other parties are not touched."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from perund.api.credentials import OPERATOR, Access, Credential, Scope
from perund.api.dispatcher import Dispatcher
from perund.api.method_spec import CallContext, Method, Param

ALICE = "ab" * 16
BOB = "cd" * 16
SESSION_ID = {"type": "string", "pattern": "^0x[0-9a-fA-F]{32}$"}


class Held:
    """A session read that answers only when the test lets it."""

    def __init__(self) -> None:
        self.waiting: list[Deferred[None]] = []

    async def handler(self, args: dict[str, Any], ctx: CallContext) -> Any:
        d: Deferred[None] = Deferred()
        self.waiting.append(d)
        await d
        return "done"

    def release_all(self) -> None:
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)


def _setup(limit: int = 8) -> tuple[Dispatcher, Held]:
    held = Held()
    method = Method("hold", "", (Param("sessionId", SESSION_ID),), {}, held.handler,
                    access=Access.SESSION_READ)
    return Dispatcher([method], Clock(), max_in_flight=limit), held


def _call(rpc: Dispatcher, credential: Credential, session: str) -> Deferred[Any]:
    request = {"jsonrpc": "2.0", "id": 1, "method": "hold", "params": {"sessionId": "0x" + session}}
    return Deferred.fromCoroutine(rpc.dispatch(request, CallContext("ws", credential=credential)))


def _refused(d: Deferred[Any]) -> dict[str, Any] | None:
    """The error of a call answered at once, None while it is in progress."""
    results: list[Any] = []
    d.addCallback(results.append)
    if not results:
        return None
    error: dict[str, Any] | None = results[0].get("error")
    return error


def test_a_session_has_at_most_the_limit_in_progress_and_others_go_on() -> None:
    rpc, held = _setup(limit=8)
    alice = Credential("a1", Scope.SESSION, ALICE)
    alices_other = Credential("a2", Scope.SESSION, ALICE)
    bob = Credential("b1", Scope.SESSION, BOB)
    calls = [_call(rpc, alice if i % 2 else alices_other, ALICE) for i in range(8)]
    assert all(_refused(d) is None for d in calls)
    over = _refused(_call(rpc, alice, ALICE))
    assert over is not None and over["code"] == 204 and over["data"]["limit"] == 8
    assert "limits.api_calls_in_flight" in over["message"]
    # Bob's calls and the operator's are their own.
    assert _refused(_call(rpc, bob, BOB)) is None
    assert _refused(_call(rpc, OPERATOR, ALICE)) is None
    held.release_all()
    assert all(d.called for d in calls)
    assert rpc._in_flight == {}  # nothing left counted
    assert _refused(_call(rpc, alice, ALICE)) is None  # room again


def test_read_only_credentials_take_at_most_half() -> None:
    rpc, held = _setup(limit=8)
    dashboard = Credential("r1", Scope.READ, ALICE)
    alice = Credential("a1", Scope.SESSION, ALICE)
    reads = [_call(rpc, dashboard, ALICE) for _ in range(4)]
    assert all(_refused(d) is None for d in reads)
    over = _refused(_call(rpc, dashboard, ALICE))
    assert over is not None and over["code"] == 204 and over["data"]["limit"] == 4
    assert "read-only" in over["message"]
    # The user's own credential still has the other half.
    mine = [_call(rpc, alice, ALICE) for _ in range(4)]
    assert all(_refused(d) is None for d in mine)
    assert _refused(_call(rpc, alice, ALICE)) is not None
    held.release_all()
    assert rpc._in_flight == {}


def test_a_batch_beyond_the_limit_has_its_extra_calls_refused_and_the_rest_answered() -> None:
    rpc, held = _setup(limit=8)
    alice = Credential("a1", Scope.SESSION, ALICE)
    batch = [{"jsonrpc": "2.0", "id": i, "method": "hold", "params": {"sessionId": "0x" + ALICE}}
             for i in range(10)]
    replies: list[Any] = []
    Deferred.fromCoroutine(rpc.dispatch(batch, CallContext("http", credential=alice))) \
        .addCallback(replies.append)
    held.release_all()
    (answers,) = replies
    assert [a.get("result") for a in answers].count("done") == 8
    assert [a["error"]["code"] for a in answers if "error" in a] == [204, 204]
    assert rpc._in_flight == {}
