"""`Deadlines` on a Clock: what expires when, with one timed call at a time."""

from __future__ import annotations

from twisted.internet.task import Clock

from perund.peer.deadlines import Deadlines


def _setup() -> tuple[Clock, Deadlines, list[str]]:
    clock = Clock()
    return clock, Deadlines(clock), []


def test_a_deadline_expires_once_its_timeout_has_passed_not_before() -> None:
    clock, deadlines, expired = _setup()
    deadlines.add(5.0, lambda: expired.append("a"))
    clock.advance(4.999)
    assert expired == []
    clock.advance(0.001)
    assert expired == ["a"]
    clock.advance(100)
    assert expired == ["a"]
    assert len(deadlines) == 0 and clock.getDelayedCalls() == []


def test_a_cancelled_deadline_never_expires_and_the_call_moves_to_the_next() -> None:
    clock, deadlines, expired = _setup()
    first = deadlines.add(5.0, lambda: expired.append("first"))
    clock.advance(1)
    deadlines.add(5.0, lambda: expired.append("second"))
    first.cancel()
    first.cancel()  # idempotent
    clock.advance(4)  # the first's time: nothing is due
    assert expired == []
    assert [call.getTime() for call in clock.getDelayedCalls()] == [6.0]
    clock.advance(1)
    assert expired == ["second"]


def test_a_shorter_timeout_added_later_expires_first() -> None:
    clock, deadlines, expired = _setup()
    deadlines.add(10.0, lambda: expired.append("long"))
    deadlines.add(2.0, lambda: expired.append("short"))
    deadlines.add(10.0, lambda: expired.append("long too"))
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(2)
    assert expired == ["short"]
    clock.advance(8)
    assert expired == ["short", "long", "long too"]
    assert clock.getDelayedCalls() == []


def test_a_stream_of_settled_requests_keeps_one_call_and_nothing_else() -> None:
    clock, deadlines, expired = _setup()
    for _ in range(10_000):
        deadlines.add(10.0, lambda: expired.append("never")).cancel()
        clock.advance(0.001)
        assert len(clock.getDelayedCalls()) <= 1
    assert len(deadlines) == 0
    waiting = deadlines.add(10.0, lambda: expired.append("waiting"))
    clock.advance(10)
    assert expired == ["waiting"]
    waiting.cancel()  # after it expired: nothing happens
    assert clock.getDelayedCalls() == []


def test_an_expiry_that_raises_does_not_stop_the_others() -> None:
    clock, deadlines, expired = _setup()

    def broken() -> None:
        raise RuntimeError("boom")

    deadlines.add(1.0, broken)
    deadlines.add(1.0, lambda: expired.append("after"))
    clock.advance(1)
    assert expired == ["after"]


def test_stop_drops_every_deadline_and_the_timed_call() -> None:
    clock, deadlines, expired = _setup()
    deadlines.add(5.0, lambda: expired.append("answered")).cancel()
    deadlines.add(7.0, lambda: expired.append("pending"))
    deadlines.stop()
    assert clock.getDelayedCalls() == [] and len(deadlines) == 0
    clock.advance(10)
    assert expired == []
