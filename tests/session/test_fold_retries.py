"""`FoldRetries` alone, on a fake clock: which failures make a fold go again, when, and for how
long (perund/session/fold_retries.py)."""

from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock

from perund.channel.events import Reason
from perund.channel.types import ChannelID, VirtualProof
from perund.errors import (
    FailedPrecondition,
    PeerDisconnected,
    PeerRejected,
    PeerRequestTimedOut,
    PeerUnreachable,
)
from perund.session import fold_retries
from perund.session.fold_retries import FoldRetries, passing

VID, PARENT = ChannelID(b"\x01" * 32), ChannelID(b"\x02" * 32)
PROOF = object()
AWAY = PeerUnreachable("no connection", peer="0x", timeout=10)
DROPPED = PeerDisconnected("the link dropped", peer="0x", timeout=None)
NO_MATCH = PeerRejected("the peer rejected the update", peer="0x", reason=Reason.NO_MATCH.value)


class _Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def _retries(value: float = 0.0) -> tuple[Clock, list[float], FoldRetries]:
    clock, sent = Clock(), []

    def send(vid: ChannelID, parent: ChannelID, proof: VirtualProof) -> None:
        assert (vid, parent, proof) == (VID, PARENT, PROOF)
        sent.append(clock.seconds())

    return clock, sent, FoldRetries(clock, send, _Fixed(value))


@pytest.mark.parametrize(("error", "expected"), [
    (AWAY, True), (DROPPED, True), (NO_MATCH, True),
    (PeerRequestTimedOut("no answer in time", peer="0x", timeout=3), False),
    (PeerRejected("the peer rejected the update", peer="0x", reason=Reason.VIRTUAL.value), False),
    (FailedPrecondition("the store failed"), False), (None, False),
])
def test_which_failures_may_pass(error: BaseException | None, expected: bool) -> None:
    assert passing(error) is expected


def test_a_dropped_connection_goes_again_at_once_then_after_pauses() -> None:
    clock, sent, retries = _retries()
    for _ in range(fold_retries.REFOLDS):
        assert retries.again(VID, PARENT, PROOF, DROPPED)  # type: ignore[arg-type]
    assert sent == [0.0] * fold_retries.REFOLDS and not retries.pausing(VID)
    assert retries.again(VID, PARENT, PROOF, DROPPED)  # type: ignore[arg-type]
    assert retries.pausing(VID) and len(sent) == fold_retries.REFOLDS
    clock.advance(1.0)
    assert sent[-1] == 1.0 and not retries.pausing(VID)


def _pause(clock: Clock) -> float:
    """How long the pending fold waits, and let it go."""
    [call] = clock.getDelayedCalls()
    pause = call.getTime() - clock.seconds()
    clock.advance(pause)
    return pause


def test_the_pauses_grow_to_their_cap_and_end_with_the_patience() -> None:
    clock, sent, retries = _retries()
    pauses = []
    while retries.again(VID, PARENT, PROOF, AWAY):  # type: ignore[arg-type]
        pauses.append(_pause(clock))
    assert pauses[:4] == [1.0, 2.0, 4.0, 4.0] and set(pauses[2:]) == {4.0}
    assert sent[-1] >= fold_retries.PATIENCE - 4.0 and clock.seconds() >= fold_retries.PATIENCE
    assert not retries.pausing(VID) and clock.getDelayedCalls() == []
    assert retries.again(VID, PARENT, PROOF, NO_MATCH)  # type: ignore[arg-type]
    assert _pause(clock) == 1.0  # forgotten: a new failure starts anew


def test_a_random_share_of_up_to_half_comes_off_each_pause() -> None:
    clock, _, retries = _retries(value=0.999)
    pauses = []
    for _ in range(3):
        assert retries.again(VID, PARENT, PROOF, NO_MATCH)  # type: ignore[arg-type]
        pauses.append(round(_pause(clock), 2))
    assert pauses == [0.5, 1.0, 2.0]


def test_a_hurried_fold_goes_at_once_and_not_again() -> None:
    clock, sent, retries = _retries()
    assert retries.again(VID, PARENT, PROOF, AWAY)  # type: ignore[arg-type]
    retries.hurry(VID)
    clock.advance(0)
    assert sent == [0.0]
    assert not retries.again(VID, PARENT, PROOF, AWAY)  # type: ignore[arg-type]


def test_a_fold_that_fails_for_good_or_is_over_is_forgotten() -> None:
    clock, sent, retries = _retries()
    assert retries.again(VID, PARENT, PROOF, AWAY)  # type: ignore[arg-type]
    retries.forget(VID)
    clock.advance(10)
    assert sent == [] and not retries.pausing(VID)
    assert retries.again(VID, PARENT, PROOF, AWAY)  # type: ignore[arg-type]
    retries.stop()
    clock.advance(10)
    assert sent == [] and clock.getDelayedCalls() == []


def test_a_fold_hurried_before_its_first_failure_does_not_go_again() -> None:
    _, sent, retries = _retries()
    retries.hurry(VID)
    assert not retries.again(VID, PARENT, PROOF, NO_MATCH)  # type: ignore[arg-type]
    assert sent == []
