"""Fairness: one party's batches do not hold another's calls for more than a bounded number of
jobs (docs/security.md, "Fairness"); a flood's waiting calls count against
limits.api_calls_in_flight. Ordering and counts only: no wall-clock timing."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from perund.api.credentials import Access, Credential, Scope
from perund.api.dispatcher import Dispatcher
from perund.api.fair import FairScheduler
from perund.api.method_spec import CallContext, Method

ALICE = Credential("a1" * 16, Scope.SESSION, session_id="ab" * 16)
BOB = Credential("b1" * 16, Scope.SESSION, session_id="cd" * 16)
BOB_READER = Credential("b2" * 16, Scope.READ, session_id="cd" * 16)


def _setup(turn_jobs: int = 16, limit: int = 128) -> tuple[Dispatcher, list[str], Clock]:
    order: list[str] = []

    async def tick(args: dict[str, Any], ctx: CallContext) -> Any:
        assert ctx.credential is not None
        order.append(ctx.credential.id)
        return len(order)

    clock = Clock()
    method = Method("tick", "", (), {}, tick, access=Access.ANYONE)
    return Dispatcher([method], clock, turn_jobs=turn_jobs, max_in_flight=limit), order, clock


def _batch(size: int) -> bytes:
    return json.dumps([{"jsonrpc": "2.0", "id": i, "method": "tick"}
                       for i in range(size)]).encode()


def _send(rpc: Dispatcher, credential: Credential, body: bytes) -> list[Any]:
    answers: list[Any] = []
    Deferred.fromCoroutine(rpc.dispatch_bytes(body, CallContext("http", credential=credential))
                           ).addCallback(lambda reply: answers.append(json.loads(reply)))
    return answers


def _settle(clock: Clock, *answers: list[Any]) -> None:
    for _ in range(1000):
        if all(answers):
            return
        clock.advance(0)
    raise AssertionError("not answered")


def test_a_call_is_answered_before_another_sessions_queued_batch_runs_out() -> None:
    rpc, order, clock = _setup(turn_jobs=16)
    bobs = [_send(rpc, BOB, _batch(100)) for _ in range(4)]
    alices = _send(rpc, ALICE, json.dumps({"jsonrpc": "2.0", "id": 1,
                                           "method": "tick"}).encode())
    _settle(clock, alices, *bobs)
    assert alices[0]["result"] == order.index(ALICE.id) + 1
    # Before the sockets were read again, bob's first batch had a turn's worth of its calls
    # started (16, its read among them); alice's call then waits one job of bob's at most.
    assert order.index(ALICE.id) <= 16 + 1
    # Bob's later reads came while the calls of the one before waited: 100 + 100 + 28 calls
    # ran, the rest were refused (limits.api_calls_in_flight, 128).
    assert order.count(BOB.id) == 228


def test_a_read_only_flood_does_not_hold_its_own_sessions_user() -> None:
    rpc, order, clock = _setup(turn_jobs=8)
    floods = [_send(rpc, BOB_READER, _batch(60)) for _ in range(2)]
    owner = _send(rpc, BOB, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tick"}).encode())
    _settle(clock, owner, *floods)
    assert order.index(BOB.id) <= 8 + 1
    assert order.count(BOB_READER.id) == 120


def test_waiting_calls_count_against_calls_in_flight() -> None:
    rpc, order, clock = _setup(turn_jobs=16, limit=128)
    _send(rpc, ALICE, _batch(100))  # takes this turn: bob's two batches wait to be read
    first = _send(rpc, BOB, _batch(100))
    second = _send(rpc, BOB, _batch(100))
    _settle(clock, first, second)
    assert all("result" in reply for reply in first[0])
    refused = [reply["error"] for reply in second[0] if "error" in reply]
    # The first batch's 100 calls were waiting when the second was read: 28 slots were left.
    assert len(refused) == 72 and len(second[0]) == 100
    assert {e["code"] for e in refused} == {204}
    assert all(e["data"]["limit"] == 128 and "limits.api_calls_in_flight" in e["message"]
               for e in refused)
    # Answered in request order, the refused ones where they were.
    assert [reply["id"] for reply in second[0]] == list(range(100))
    assert order.count(BOB.id) == 128
    # Once answered, the slots are free again.
    third = _send(rpc, BOB, _batch(100))
    _settle(clock, third)
    assert all("result" in reply for reply in third[0])


def test_one_client_alone_is_answered_at_once() -> None:
    """The fast path: nothing waits, so a call takes no reactor turn."""
    rpc, _, _ = _setup()
    answers = _send(rpc, ALICE, json.dumps({"jsonrpc": "2.0", "id": 1,
                                            "method": "tick"}).encode())
    assert answers and answers[0]["result"] == 1


class Turns:
    """A reactor whose turns a test takes one at a time."""

    def __init__(self) -> None:
        self.pending: list[Any] = []

    def seconds(self) -> float:
        return 0.0

    def callLater(self, delay: float, f: Any, *args: Any) -> object:
        self.pending.append((f, args))
        return object()

    def turn(self) -> None:
        pending, self.pending = self.pending, []
        for f, args in pending:
            f(*args)


def test_the_scheduler_goes_round_robin_within_a_turn_budget() -> None:
    clock = Turns()
    fair = FairScheduler(clock, turn_jobs=4)
    ran: list[str] = []

    def flood() -> None:  # a's read: its batch, then b's arrives
        for _ in range(6):
            fair.submit("a", lambda: ran.append("a"))
        for _ in range(3):
            fair.submit("b", lambda: ran.append("b"))

    fair.submit("a", flood)
    assert ran == ["a", "b", "a"] and fair.waiting() == 6  # 4 jobs a turn, the read first
    clock.turn()
    assert ran == ["a", "b", "a", "b", "a", "b", "a"] and fair.waiting("a") == 2
    clock.turn()
    assert ran.count("a") == 6 and fair.waiting() == 0
