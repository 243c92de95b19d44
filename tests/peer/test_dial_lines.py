"""A peer that stays down is dialled every few seconds; the log says so sparsely: the first
failure, a failure that differs, then after 1 min, 10 min and hourly, each line counting the
attempts since the one before (docs/operations.md). On a memory reactor and its Clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.python.failure import Failure

from perund.channel.encoding import Signer
from perund.channel.types import Address
from perund.errors import FailedPrecondition
from perund.peer.dial_failures import DialFailures, DialLine
from perund.peer.manager import PeerManager

ALICE = Signer(b"\x11" * 32)
BOB = Signer(b"\x22" * 32)
BACKOFF = 5.0
HANDSHAKE = 2.0


class Dials:
    """Alice's manager keeping Bob connected, on a memory reactor where no dial connects:
    each is refused (or left to time out) by the test."""

    def __init__(self) -> None:
        self.reactor = MemoryReactorClock()
        self.endpoint = "tcp:host=127.0.0.1:port=5002"
        self.manager = PeerManager(self.reactor, ALICE, self.resolve, None,
                                   handshake_timeout=HANDSHAKE, backoff_initial=BACKOFF,
                                   backoff_max=BACKOFF, keepalive_interval=None)
        self.answered = 0

    def resolve(self, peer: Address) -> str | None:
        return self.endpoint if peer == BOB.address else None

    def refuse(self, count: int) -> None:
        """Refuse the next `count` dials, each followed by the backoff."""
        for _ in range(count):
            assert len(self.reactor.tcpClients) == self.answered + 1, "one dial at a time"
            factory = self.reactor.tcpClients[self.answered][2]
            self.answered += 1
            factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
            self.reactor.advance(BACKOFF)

    def time_out(self) -> None:
        """Let the next dial's handshake time out, then the backoff pass."""
        self.answered += 1
        self.reactor.advance(HANDSHAKE)
        self.reactor.advance(BACKOFF)


@pytest.fixture
def dials() -> Iterator[Dials]:
    d = Dials()
    yield d
    d.manager.keep_connected(BOB.address, False)
    d.manager.stop()
    d.reactor.advance(60)


def lines(events: list[LogEvent]) -> list[str]:
    return [formatEvent(e) for e in events if e.get("log_namespace") == "perund.peer"]


def test_a_peer_that_stays_down_is_logged_sparsely(dials: Dials) -> None:
    peer = "0x" + BOB.address.hex()
    refused = "Connection was refused by other side."
    with capturedLogs() as events:
        dials.manager.keep_connected(BOB.address, True)
        dials.refuse(13)    # 0 .. 60 s: the first line, then the one at 1 min
        dials.refuse(108)   # .. 10 min
        dials.refuse(720)   # .. 70 min: one more, an hour after the 10 min one
    assert lines(events) == [
        f"dialling peer {peer} at {dials.endpoint} failed: {refused} (retrying; while it fails "
        "so, a line after 1 min, 10 min, then hourly)",
        f"dialling peer {peer} at {dials.endpoint} still fails, for 1 min now: {refused} "
        "(12 failed attempts since the line before)",
        f"dialling peer {peer} at {dials.endpoint} still fails, for 10 min now: {refused} "
        "(108 failed attempts since the line before)",
        f"dialling peer {peer} at {dials.endpoint} still fails, for 1 h 10 min now: {refused} "
        "(720 failed attempts since the line before)",
    ]
    failed = [e for e in events if e.get("failed") is not None]
    assert [e["failed_in_run"] for e in failed] == [1, 13, 121, 841]  # the run's count, kept


def test_a_failure_that_differs_is_logged_at_once(dials: Dials) -> None:
    peer = "0x" + BOB.address.hex()
    with capturedLogs() as events:
        dials.manager.keep_connected(BOB.address, True)
        dials.refuse(3)
        dials.time_out()
        dials.refuse(1)
        dials.endpoint = "tcp:host=127.0.0.1:port=5003"  # the contact's address changed
        dials.refuse(2)
    shown = lines(events)
    assert len(shown) == 4, shown
    assert shown[1].startswith(f"dialling peer {peer} at tcp:host=127.0.0.1:port=5002 now "
                               "fails otherwise: ")
    assert shown[1].endswith("(3 failed attempts since the line before)")  # the timeout too
    assert shown[2].endswith("now fails otherwise: Connection was refused by other side. "
                             "(1 failed attempt since the line before)")
    assert shown[3].startswith(f"dialling peer {peer} at tcp:host=127.0.0.1:port=5003 now "
                               "fails otherwise")


def test_reaching_the_peer_ends_the_run() -> None:
    failures = DialFailures()
    assert failures.reached() is None  # no run: nothing to say
    assert failures.record(100.0, "e", "refused") == (DialLine.FIRST, 1)
    assert failures.record(105.0, "e", "refused") is None
    assert failures.reached() == (2, 100.0)
    # The next failure starts a run of its own, logged at once.
    assert failures.record(500.0, "e", "refused") == (DialLine.FIRST, 1)


class BrokenResolver(Dials):
    """Alice's resolver raises `self.error` for Bob (set by the test) instead of naming an
    endpoint: every dial of the kept peer finds no endpoint and waits the backoff."""

    error: Exception = RuntimeError("the contacts' index is broken")

    def resolve(self, peer: Address) -> str | None:
        raise self.error

    def loop(self, count: int) -> None:
        for _ in range(count):
            self.reactor.advance(BACKOFF)


def test_a_resolver_bug_is_logged_once_with_its_traceback_then_sparsely() -> None:
    """The session's resolver (its contacts' lookup) raises nothing: what one raises is a bug,
    logged with its traceback once, then as the failed dials are (every backoff, a line after
    1 min, 10 min, hourly), not a traceback every 5 s."""
    dials = BrokenResolver()
    peer = "0x" + BOB.address.hex()
    bug = "RuntimeError: the contacts' index is broken"
    try:
        with capturedLogs() as events:
            dials.manager.keep_connected(BOB.address, True)
            dials.loop(12)    # .. 60 s: the first line, then the one at 1 min
            dials.loop(108)   # .. 10 min
        assert dials.reactor.tcpClients == []  # nothing to dial
        shown = lines(events)
        assert shown == [
            f"finding the endpoint of peer {peer} failed, a bug: {bug} (retrying; a line after "
            "1 min, 10 min, then hourly; this traceback is logged once)",
            f"finding the endpoint of peer {peer} still fails, for 1 min now: {bug} "
            "(12 failed attempts since the line before)",
            f"finding the endpoint of peer {peer} still fails, for 10 min now: {bug} "
            "(108 failed attempts since the line before)",
        ]
        traced = [e for e in events if e.get("log_failure") is not None]
        assert len(traced) == 1 and traced[0]["log_failure"].check(RuntimeError)
        # Another bug: said at once, without a second traceback.
        dials.error = KeyError("0x12")
        with capturedLogs() as events:
            dials.loop(1)
        assert lines(events) == [
            f"finding the endpoint of peer {peer} failed: KeyError: '0x12' (retrying; "
            "1 failed attempt since the line before)"]
        assert all(e.get("log_failure") is None for e in events)
    finally:
        dials.manager.keep_connected(BOB.address, False)
        dials.manager.stop()
        dials.reactor.advance(60)


def test_a_resolvers_reason_in_words_has_no_traceback() -> None:
    """A resolver that refuses with a `PerundError` says why in words: no traceback."""
    dials = BrokenResolver()
    dials.error = FailedPrecondition("the session's contacts are being reloaded")
    try:
        with capturedLogs() as events:
            dials.manager.keep_connected(BOB.address, True)
            dials.loop(3)
        assert lines(events) == [
            f"finding the endpoint of peer 0x{BOB.address.hex()} failed: the session's contacts "
            "are being reloaded (retrying; a line after 1 min, 10 min, then hourly)"]
        assert all(e.get("log_failure") is None for e in events)
    finally:
        dials.manager.keep_connected(BOB.address, False)
        dials.manager.stop()
        dials.reactor.advance(60)
