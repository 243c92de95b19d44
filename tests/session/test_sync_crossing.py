"""A Sync that only answers one of the peer's crosses an update of ours awaiting the peer's
user: the question stays, the user's answer counts, and a close stays cooperative.

The crossing, on a fake clock: alice's update (a close, or a payment request) reaches bob's
user; a Sync of bob's reaches alice before bob answered (a replayed one, or a reconnection's);
alice answers it with her own state, and that answer reaches bob after her update. It says
that alice's update still awaits bob, so bob keeps asking his user (docs/core.md, Sync).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest_twisted
from twisted.internet.task import Clock

from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.types import ETH, Address
from perund.session.notices import UpdateNotice
from perund.wire.messages import Message, Sync, UpdateReject

from .fakes import ETHER, Net, Side, open_channel, result, side
from .hostile import until
from .test_hostile_clients import World, hijack, patient, pays, world  # noqa: F401


def _bobs_sync(bob: Side, cid: bytes) -> Sync:
    current = bob.client.channels[cid].current
    assert current is not None
    return Sync(current.state, current.signatures)


def _answers_to(sender: Side, kind: type) -> list[object]:
    return [msg for _, msg in sender.links.sent if isinstance(msg, kind)]


def test_a_close_crossed_by_an_answering_sync_stays_cooperative() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob)
    closing = alice.client.close(cid)
    clock.advance(0)
    [question] = bob.told(UpdateNotice)
    assert isinstance(question, UpdateNotice) and question.kind is ev.UpdateKind.FINAL

    before = len(_answers_to(alice, Sync))
    alice.links.arrive(bob.address, _bobs_sync(bob, cid))
    clock.advance(0)
    answer = _answers_to(alice, Sync)[before]
    assert isinstance(answer, Sync) and answer.awaiting == question.proposed.state.version

    assert bob.client.channels[cid].staged is not None  # still asked
    assert not _answers_to(bob, UpdateReject)
    result(bob.client.respond_update(cid, question.update_id, True))
    clock.advance(0)

    assert [type(e) for e in alice.chain.asked] == [ev.ConcludeFinal]
    [conclude] = alice.chain.asked
    assert isinstance(conclude, ev.ConcludeFinal) and conclude.primary
    assert conclude.state.is_final and conclude.state.version == 1
    assert not closing.called  # until the chain says it is concluded


def test_a_payment_request_crossed_by_an_answering_sync_is_still_asked() -> None:
    clock = Clock()
    net = Net(clock)
    alice, bob = side(net), side(net)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    requesting = alice.client.send(cid, ((ETH, -7),))
    clock.advance(0)
    [question] = bob.told(UpdateNotice)
    assert isinstance(question, UpdateNotice)

    alice.links.arrive(bob.address, _bobs_sync(bob, cid))
    clock.advance(0)
    result(bob.client.respond_update(cid, question.update_id, True))
    clock.advance(0)

    assert result(requesting).latest.balances == ((ETHER + 7, ETHER - 7),)
    assert bob.client.channels[cid].latest.balances == ((ETHER + 7, ETHER - 7),)


def test_a_sync_sent_after_the_update_timed_out_still_withdraws_it() -> None:
    """The proposer's Sync after its timeout says nothing awaits: the peer drops the question
    (a late yes is too late) and rejects the update."""
    clock = Clock()
    net = Net(clock)
    alice = side(net, request_timeout=1.0, response_timeout=1.0)
    bob = side(net, response_timeout=30.0)
    cid = open_channel(net, alice, bob, ours=ETHER, theirs=ETHER)
    requesting = alice.client.send(cid, ((ETH, -7),))
    clock.advance(0)
    [question] = bob.told(UpdateNotice)
    assert isinstance(question, UpdateNotice)

    clock.advance(2.0)
    clock.advance(0)
    withdrawal = _answers_to(alice, Sync)[-1]
    assert isinstance(withdrawal, Sync) and withdrawal.awaiting == 0
    assert bob.client.channels[cid].staged is None
    assert requesting.called
    assert bob.client.channels[cid].latest.balances == ((ETHER, ETHER),)


@pytest_twisted.ensureDeferred
async def test_replayed_syncs_while_a_close_awaits_the_peer_do_not_make_it_a_dispute(
        world: World) -> None:  # noqa: F811
    """Over real connections and the dev chain: bob closes; while alice's user decides, her
    node replays an old fully signed state to bob, and bob answers with his own. His
    answer reaches alice after his final update and must not withdraw it: her user's yes
    closes the channel cooperatively, with the money of the last state."""
    w, alice, bob = world, world.alice, world.bob
    patient(alice, bob)
    old = alice.client.channels[w.ab].current
    assert old is not None
    last = (await pays(alice, bob, w.ab, ETHER // 10)).balances
    answers: list[Sync] = []

    def seeing_syncs(original: Callable[[Address, Message], object], peer: Address,
                     msg: Message) -> None:
        if isinstance(msg, Sync):
            answers.append(msg)
        original(peer, msg)

    restore = hijack(alice, seeing_syncs)
    closing = bob.client.close(w.ab)
    question = await alice.update_question()
    assert isinstance(question, UpdateNotice) and question.kind is ev.UpdateKind.FINAL
    await alice.peers.send(bob.client.address, Sync(old.state, old.signatures))
    await until(lambda: len(answers) >= 1, "bob answered")
    assert answers[0].awaiting == question.proposed.state.version
    restore()
    await alice.client.respond_update(w.ab, question.update_id, True)
    closed = await closing
    assert closed.phase is Phase.CLOSED
    assert closed.latest.is_final and closed.latest.balances == last
