"""A payee that countersigns our payments falsely, in memory on a fake clock: the payer's user
hears they are paid (docs/protocol.md, "Verification by interest"), and a close registers the
last state whose signatures verify, saying why; an honest payee's countersignature is checked
when the state goes on-chain and registered as it is."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from perund.channel import events as ev
from perund.channel.types import ETH, Address, Signature
from perund.wire.messages import Message, UpdateAccept

from .fakes import Net, Side, open_channel, result, side
from .hostile import LogCapture


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    capture = LogCapture()
    globalLogPublisher.addObserver(capture)
    try:
        yield capture
    finally:
        globalLogPublisher.removeObserver(capture)


def lying(payee: Side) -> None:
    """`payee` answers every update with a countersignature that verifies for nobody's key."""
    send = payee.links.send

    def false_accepts(peer: Address, msg: Message) -> Deferred[None]:
        if isinstance(msg, UpdateAccept):
            msg = UpdateAccept(msg.channel_id, msg.version, Signature(os.urandom(64) + b"\x1b"))
        return send(peer, msg)

    payee.links.send = false_accepts  # type: ignore[method-assign]


@pytest.mark.parametrize("liar", [True, False], ids=["lying-payee", "honest-payee"])
def test_a_close_registers_what_verifies(liar: bool, logs: LogCapture) -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob)
    opening = alice.client.channels[cid].current
    assert opening is not None
    if liar:
        lying(bob)
    for _ in range(3):
        paid = alice.client.send(cid, ((ETH, 1),))
        clock.advance(0)
        assert result(paid).latest.version > opening.state.version  # her user hears it is paid
    latest = alice.client.channels[cid].current
    assert latest is not None and latest.state.version == 3

    alice.client.force_close(cid)
    clock.advance(0)
    registered = [e for e in alice.chain.asked if isinstance(e, ev.Register)]
    assert len(registered) == 1
    expected = opening if liar else latest
    assert (registered[0].state, registered[0].signatures) == (expected.state,
                                                             expected.signatures)
    warned = logs.warned("registering version 0, not our latest 3",
                         "countersigned falsely")
    assert warned is liar
