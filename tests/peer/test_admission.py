"""The admission rules of the peer port, on a fake clock: counts, windows, cut-offs, and one
warning per interval however big the flood."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import formatEvent

import perund.peer.admission as admission_module
from perund.channel.types import Address
from perund.peer.admission import Admission, PeerLimits
from perund.ratelimit import WARN_INTERVAL

LOGGED_REFUSALS = PeerLimits().logged_refusals

MALLORY = Address(b"\x0d" * 20)
CAROL = Address(b"\x0c" * 20)


def test_refusals_are_logged_a_few_then_the_peer_is_cut_off_for_the_window(
        logs: list[dict[str, Any]]) -> None:
    clock = Clock()
    admission = Admission(clock, PeerLimits(refusals=10, refusal_window=60.0))
    verdicts = [admission.refused(MALLORY) for _ in range(10)]
    assert verdicts[:LOGGED_REFUSALS] == [(True, False)] * LOGGED_REFUSALS
    assert verdicts[LOGGED_REFUSALS:9] == [(False, False)] * (9 - LOGGED_REFUSALS)
    assert verdicts[9] == (False, True)
    assert admission.cut_off_until(MALLORY) == 60.0
    assert admission.cut_off_until(CAROL) is None
    assert admission.seconds_cut_off(MALLORY) == 60  # what messages say: "for another 60 s"
    assert admission.seconds_cut_off(CAROL) is None
    clock.advance(59.5)
    assert admission.seconds_cut_off(MALLORY) == 1
    clock.advance(0.5)
    assert sum("sent 10 messages that were refused" in formatEvent(e) for e in logs) == 1
    assert admission.cut_off_until(MALLORY) is None
    # A new window: the count starts again (nine slow refusals a minute never cut anyone off).
    for _ in range(3):
        for _ in range(9):
            assert admission.refused(CAROL)[1] is False
        clock.advance(61.0)
    assert admission.cut_off_until(CAROL) is None


def test_connection_caps_warn_once_per_interval(logs: list[dict[str, Any]]) -> None:
    clock = Clock()
    admission = Admission(clock, PeerLimits(handshakes=4, handshakes_per_host=2,
                                            connections_per_host=3, strangers=1))
    assert admission.admit_incoming("10.0.0.1", 0, 0, 0)
    assert not admission.admit_incoming("10.0.0.1", 1, 2, 2)  # two in their handshake
    assert not admission.admit_incoming("10.0.0.2", 4, 0, 0)  # four in all
    assert not admission.admit_incoming("10.0.0.3", 0, 0, 3)  # three from that host
    assert admission.admit_stranger(MALLORY, 0)
    assert not admission.admit_stranger(MALLORY, 1)
    assert [formatEvent(e) for e in logs if "refused" in formatEvent(e)] == [
        "refused 1 incoming peer connection: 1 in their handshake (2 from 10.0.0.1), "
        "2 from 10.0.0.1 in all (limits.peer_handshakes, limits.peer_handshakes_per_host, "
        "limits.peer_connections_per_host)"]
    clock.advance(WARN_INTERVAL)
    assert not admission.admit_incoming("10.0.0.1", 9, 9, 9)
    assert len([e for e in logs if "refused" in formatEvent(e)]) == 2
    clock.advance(WARN_INTERVAL)
    assert not admission.admit_stranger(MALLORY, 1)
    assert formatEvent(logs[-1]) == (
        f"refused 1 connection of an unknown peer (the last 0x{MALLORY.hex()}): 1 unknown "
        "peer is connected (limits.peer_strangers)")


class _Key(bytes):
    """A peer address that counts how often it is hashed: the work a dict does with it."""

    hashes = 0

    def __hash__(self) -> int:
        _Key.hashes += 1
        return bytes.__hash__(self)


def test_cutting_off_one_more_peer_costs_the_same_however_many_are_cut_off() -> None:
    """Pruning the cut-offs that are over takes O(1) per entry: an audit measured 1.2 ms per
    cut-off at 25,000 live ones, each cut-off rebuilding them all (each key hashed again)."""
    clock = Clock()
    admission = Admission(clock, PeerLimits(refusals=1, refusal_window=60.0))
    for i in range(6000):
        admission.refused(Address(_Key(i.to_bytes(20, "big"))))
    clock.advance(30.0)
    _Key.hashes = 0
    for i in range(6000, 6100):
        assert admission.refused(Address(_Key(i.to_bytes(20, "big"))))[1]
    assert _Key.hashes <= 100 * 20  # a few dict operations each, not 6,000
    assert len(admission._cut_off) == 6100
    # Once over they go (and only then), a few at a time: memory stays bounded.
    clock.advance(30.0)
    assert admission.refused(Address(_Key(b"\xff" * 20)))[1]
    assert len(admission._cut_off) == 101
    assert admission.cut_off_until(Address(_Key((6000).to_bytes(20, "big")))) == 90.0
    assert admission.cut_off_until(Address(_Key((0).to_bytes(20, "big")))) is None


def test_a_new_refusal_window_costs_the_same_however_many_are_open(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tallies of refusals whose window is over are dropped from the front too: they used
    to be walked whole at each new peer once 4,096 were open (throw-away keys, one refused
    message each)."""
    reads = 0

    class CountedTally(admission_module._Tally):
        def __getattribute__(self, name: str) -> Any:
            nonlocal reads
            if name == "started":
                reads += 1
            return super().__getattribute__(name)

    monkeypatch.setattr(admission_module, "_Tally", CountedTally)
    clock = Clock()
    admission = Admission(clock, PeerLimits(refusals=100, refusal_window=60.0))
    for i in range(6000):
        admission.refused(Address(i.to_bytes(20, "big")))
    clock.advance(30.0)
    reads = 0
    for i in range(6000, 6100):
        assert admission.refused(Address(i.to_bytes(20, "big")))[1] is False
    assert reads <= 100 * 4  # not 6,000 each
    # A peer whose window is over starts a new one at the end, after those still open.
    clock.advance(30.0)
    admission.refused(Address((0).to_bytes(20, "big")))
    assert len(admission._tallies) == 101
    clock.advance(30.0)
    admission.refused(Address(b"\xff" * 20))
    assert list(admission._tallies) == [Address((0).to_bytes(20, "big")), Address(b"\xff" * 20)]
