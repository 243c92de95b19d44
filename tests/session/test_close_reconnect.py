"""A close whose connection drops under its final update, on a fake clock: once the peer is
back the close goes on cooperatively (the final update again, or the peer's Sync bringing it
countersigned); a peer that cannot be reached is waited for, and only one that stays away
longer than `closing.PEER_WAIT` makes it a dispute (perund.session.closing). A close under
way when its node restarts goes on after the restart, as patient as it was."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure

from perund.channel import events as ev
from perund.channel.changes import Concluded
from perund.channel.phases import Phase
from perund.session import closing, fold_retries
from perund.session.closing import INTENT
from perund.session.notices import UpdateNotice

from .fakes import Net, Side, open_channel, restart, side
from .test_virtual_campaign import _hub


def _questions(user: Side) -> list[UpdateNotice]:
    return [n for n in user.told(UpdateNotice) if isinstance(n, UpdateNotice)
            and n.kind is ev.UpdateKind.FINAL]


def _pair(clock: Clock) -> tuple[Net, Side, Side, bytes]:
    net = Net(clock, latency=0.001)
    alice = side(net, request_timeout=1.0, response_timeout=5.0)
    bob = side(net, request_timeout=1.0, response_timeout=5.0)
    return net, alice, bob, open_channel(net, alice, bob)


def _run(clock: Clock, seconds: float, step: float = 0.001) -> None:
    for _ in range(int(seconds / step)):
        clock.advance(step)


def test_the_final_update_goes_again_once_the_peer_is_back() -> None:
    clock = Clock()
    net, alice, bob, cid = _pair(clock)
    closing = alice.client.close(cid)
    _run(clock, 0.01)
    assert len(_questions(bob)) == 1
    net.cut(bob.address)
    clock.callLater(0.5, net.mend, bob.address)
    _run(clock, 0.6)
    [_, again] = _questions(bob)  # the first question was withdrawn with the connection
    bob.client.respond_update(cid, again.update_id, True)
    _run(clock, 1.0)

    [conclude] = alice.chain.asked
    assert isinstance(conclude, ev.ConcludeFinal) and conclude.primary
    assert conclude.state.is_final and conclude.state.balances == \
        alice.client.channels[cid].latest.balances
    assert not closing.called  # until the chain says it is concluded


def test_a_final_state_the_peer_countersigned_comes_back_with_its_sync() -> None:
    """bob said yes, his answer was lost with the connection: alice's next connection's Sync
    brings her the final state, and nobody registers anything."""
    clock = Clock()
    net, alice, bob, cid = _pair(clock)
    alice.client.close(cid)
    _run(clock, 0.01)
    [question] = _questions(bob)
    bob.client.respond_update(cid, question.update_id, True)
    net.cut(alice.address)  # before bob's answer arrives
    clock.callLater(0.5, net.mend, alice.address)
    _run(clock, 8.0)  # past bob's grace to conclude himself

    assert [type(e) for e in alice.chain.asked] == [ev.ConcludeFinal]
    assert [type(e) for e in bob.chain.asked] == [ev.ConcludeFinal]
    assert alice.chain.asked[0].state == bob.chain.asked[0].state  # type: ignore[union-attr]
    assert len(_questions(bob)) == 1


def test_a_peer_that_stays_away_gets_the_channel_disputed() -> None:
    clock = Clock()
    net, alice, bob, cid = _pair(clock)
    alice.client.close(cid)
    _run(clock, 0.01)
    net.cut(bob.address)
    _run(clock, 10.0)
    assert alice.chain.asked == []  # bob is waited for
    _run(clock, closing.PEER_WAIT, step=0.1)

    [register] = alice.chain.asked
    assert isinstance(register, ev.Register) and not register.state.is_final


def test_a_peer_away_for_a_while_gets_the_channel_closed_cooperatively() -> None:
    """bob's node is down for a minute when alice closes (a restart, a network blip): the
    final update goes again until he is back, and nothing goes on-chain but the final state
    (it used to be disputed at once: gas for both and a challenge period)."""
    clock = Clock()
    net, alice, bob, cid = _pair(clock)
    net.cut(bob.address)
    answer = alice.client.close(cid)
    _run(clock, 60.0, step=0.01)
    assert alice.chain.asked == [] and _questions(bob) == []
    net.mend(bob.address)
    _run(clock, fold_retries.PAUSE_MAX + 1.0)
    [question] = _questions(bob)
    bob.client.respond_update(cid, question.update_id, True)
    _run(clock, 1.0)

    [conclude] = alice.chain.asked
    assert isinstance(conclude, ev.ConcludeFinal) and conclude.state.is_final
    assert not answer.called  # until the chain says it is concluded


def test_a_close_asked_to_wait_less_disputes_once_its_wait_is_over() -> None:
    clock = Clock()
    net, alice, bob, cid = _pair(clock)
    net.cut(bob.address)
    alice.client.close(cid, peer_wait=20.0)
    _run(clock, 15.0, step=0.01)
    assert alice.chain.asked == []
    _run(clock, 10.0, step=0.01)

    [register] = alice.chain.asked
    assert isinstance(register, ev.Register) and not register.state.is_final


def test_a_resumed_close_waits_what_is_left_of_its_wait() -> None:
    """A close asked to wait 20 s for an unreachable peer is noted with the wait's end; after
    a restart 5 s in it waits the 15 s left (not the default 5 minutes, nor 20 s again: a node
    that kept crashing would never settle), then disputes."""
    clock = Clock()
    net, alice, bob, cid = _pair(clock)
    net.cut(bob.address)
    alice.client.close(cid, peer_wait=20.0).addErrback(lambda _: None)
    _run(clock, 5.0, step=0.01)
    assert alice.client.store.metas(INTENT) == {INTENT + cid.hex(): b"20.0"}
    restart(net, alice, request_timeout=1.0, response_timeout=5.0)
    net.mend(alice.address)
    _run(clock, 13.0, step=0.01)
    assert alice.chain.asked == []
    _run(clock, 3.0, step=0.01)

    [register] = alice.chain.asked
    assert isinstance(register, ev.Register) and not register.state.is_final


def test_a_close_cut_short_by_the_stop_neither_disputes_nor_warns() -> None:
    """The session stops while its close waits for an unreachable peer: the close ends
    without a dispute (it stays noted for the next start) and logs no "closing through a
    dispute" (an audit found one per waiting close)."""
    clock = Clock()
    net, alice, bob, cid = _pair(clock)
    net.cut(bob.address)
    closing = alice.client.close(cid, peer_wait=60.0)
    failures: list[Failure] = []
    closing.addErrback(failures.append)
    _run(clock, 5.0, step=0.01)
    with capturedLogs() as events:
        alice.client.stop()
        _run(clock, 10.0, step=0.01)
    assert alice.chain.asked == []
    assert [f.getErrorMessage() for f in failures] == ["the session is closing"]
    assert not any("dispute" in formatEvent(e) for e in events)
    assert list(alice.client.store.metas(INTENT)) == [INTENT + cid.hex()]


def test_a_close_under_way_when_the_node_restarts_goes_on_after_it() -> None:
    """alice's node dies while her close waits for bob's user: the restarted node finds the
    close noted in its store and proposes the final update again (it used to leave the
    channel open, nobody closing it); once the channel is closed, the note is gone."""
    clock = Clock()
    net, alice, bob, cid = _pair(clock)
    alice.client.close(cid).addErrback(lambda _: None)
    _run(clock, 0.01)
    assert len(_questions(bob)) == 1
    assert list(alice.client.store.metas(INTENT)) == [INTENT + cid.hex()]
    restart(net, alice, request_timeout=1.0, response_timeout=5.0)
    net.mend(alice.address)
    _run(clock, 0.1)
    [_, again] = _questions(bob)  # the first was withdrawn with the connection
    bob.client.respond_update(cid, again.update_id, True)
    _run(clock, 1.0)

    [conclude] = alice.chain.asked
    assert isinstance(conclude, ev.ConcludeFinal) and conclude.state.is_final
    alice.client.chain_input(cid, Concluded(conclude.state.version))
    _run(clock, 0.1)
    assert alice.client.channels[cid].phase is Phase.CLOSED
    assert alice.client.store.metas(INTENT) == {}


def test_a_close_that_ended_is_not_resumed() -> None:
    clock = Clock()
    net, alice, bob, cid = _pair(clock)
    closing = alice.client.close(cid)
    _run(clock, 0.01)
    [question] = _questions(bob)
    bob.client.respond_update(cid, question.update_id, True)
    _run(clock, 0.1)
    [conclude] = alice.chain.asked
    alice.client.chain_input(cid, Concluded(conclude.state.version))
    _run(clock, 0.1)
    assert closing.called and alice.client.store.metas(INTENT) == {}
    restart(net, alice, request_timeout=1.0, response_timeout=5.0)
    net.mend(alice.address)
    _run(clock, 0.5)
    assert alice.chain.asked == [conclude] and _questions(bob) == [question]


def test_a_noted_close_the_channel_now_refuses_is_dropped_at_the_restart() -> None:
    """The note of a close that may no longer go on (here: a ledger funding an open virtual
    channel) is dropped with a warning at the restart, not resumed at every start."""
    clock, net, (alice, _, _), (ledger, _, vid) = _hub(0, 0.001, 0)
    alice.client.store.set_meta(INTENT + ledger.hex(), b"")
    restart(net, alice, request_timeout=1.0, response_timeout=2.0)
    net.mend(alice.address)
    _run(clock, 1.0)
    assert alice.client.store.metas(INTENT) == {}
    assert alice.client.channels[ledger].phase is Phase.OPEN
    assert alice.client.channels[vid].phase is Phase.OPEN
