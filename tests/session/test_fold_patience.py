"""A fold that meets a passing failure goes again later instead of taking its ledger on-chain
(perund/session/fold_retries.py; docs/protocol.md, "When someone vanishes
or cheats"): the intermediary away (no connection), or holding it in vain for the other
party's fold; for `FOLD_PATIENCE` seconds, or until a close of the ledger cuts it short.

alice and bob hold a virtual channel through ingrid (`test_virtual_campaign._hub`: her lock
window is 2 s, shorter than the 3 s a party waits for an answer, as the defaults are); alice
has paid bob 7 wei in it.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.types import ETH, ChannelID
from perund.session import fold_retries
from perund.session.virtual_onchain import RegisterVirtual
from perund.wire.messages import UpdateReject, VirtualFold

from .fakes import ETHER, Net, Side, restart
from .test_virtual_campaign import _hub, _run


def _paid_hub() -> tuple[Clock, Net, tuple[Side, Side, Side], tuple[ChannelID, ChannelID,
                                                                     ChannelID]]:
    clock, net, users, ids = _hub(0, 0.001, 0, window=2.0)
    alice, _, _ = users
    _run(clock, alice.client.send(ids[2], ((ETH, 7),)))
    return clock, net, users, ids


def _advance(clock: Clock, seconds: float, step: float = 0.001) -> None:
    for _ in range(round(seconds / step)):
        clock.advance(step)


def _folded_off_chain(users: tuple[Side, Side, Side], ids: tuple[ChannelID, ...]) -> None:
    """Nothing went on-chain; the virtual channel is closed at both parties and each ledger
    agrees with ingrid on a state without the lock and with the virtual channel's outcome."""
    alice, bob, ingrid = users
    la, lb, vid = ids
    assert [user.chain.asked for user in users] == [[], [], []]
    assert alice.client.channels[vid].phase is Phase.CLOSED
    assert bob.client.channels[vid].phase is Phase.CLOSED
    for owner, ledger, balances in ((alice, la, (5 * ETHER - 7, 5 * ETHER + 7)),
                                    (bob, lb, (5 * ETHER + 7, 5 * ETHER - 7))):
        mine = owner.client.channels[ledger]
        assert mine.phase is Phase.OPEN and mine.current == ingrid.client.channels[ledger].current
        assert mine.latest.locked == () and mine.latest.balances == (balances,)


def _folds(user: Side, ingrid: Side) -> int:
    return sum(1 for peer, msg in user.links.sent
               if peer == ingrid.address and isinstance(msg, VirtualFold))


def _close_until_folded(clock: Clock, users: tuple[Side, Side, Side], vid: ChannelID,
                        folder: Side) -> None:
    """alice closes the virtual channel; the clock runs until `folder` has sent its fold."""
    alice, _, ingrid = users
    alice.client.close(vid).addErrback(lambda _: None)
    for _ in range(10_000):
        clock.advance(0.0002)
        if _folds(folder, ingrid):
            return
    raise AssertionError("no fold went out")


def test_a_fold_that_finds_the_intermediary_away_goes_again_once_she_is_back() -> None:
    clock, net, users, ids = _paid_hub()
    alice, _, ingrid = users
    net.cut(ingrid.address)
    closing = alice.client.close(ids[2])
    _advance(clock, 2.0)  # both folds failed (she is not on the net), and wait to go again
    assert not closing.called and [user.chain.asked for user in users] == [[], [], []]
    assert alice.client.channels[ids[2]].latest.is_final

    net.mend(ingrid.address)
    _advance(clock, 10.0)

    assert closing.called
    _folded_off_chain(users, ids)


def test_a_fold_held_in_vain_for_its_match_goes_again() -> None:
    """alice's link to ingrid drops just as bob folds: her fold comes only once it is back,
    after ingrid's window for bob's ran out and refused it (for want of a match). Both folds
    go again, and meet."""
    clock, net, users, ids = _paid_hub()
    alice, bob, ingrid = users
    _close_until_folded(clock, users, ids[2], bob)
    assert _folds(bob, ingrid) == 1 and _folds(alice, ingrid) == 0
    net.sever(alice.address, ingrid.address)
    clock.callLater(4.0, net.heal, alice.address, ingrid.address)  # past ingrid's window
    _advance(clock, 20.0)

    refusals = [msg for peer, msg in ingrid.links.sent
                if peer == bob.address and isinstance(msg, UpdateReject)]
    assert refusals and {msg.reason for msg in refusals} == {ev.Reason.NO_MATCH.value}
    assert _folds(bob, ingrid) == len(refusals) + 1
    _folded_off_chain(users, ids)


def test_a_fold_takes_its_ledger_on_chain_once_its_patience_is_over() -> None:
    clock, net, users, ids = _paid_hub()
    alice, bob, ingrid = users
    net.cut(ingrid.address)
    alice.client.close(ids[2]).addErrback(lambda _: None)
    _advance(clock, fold_retries.PATIENCE - 5, step=0.05)
    assert [user.chain.asked for user in users] == [[], [], []]
    assert _folds(alice, ingrid) == 0  # never reached her: the net had no link to her

    _advance(clock, 10, step=0.05)

    for user, ledger in ((alice, ids[0]), (bob, ids[1])):
        [registration] = user.chain.asked
        assert isinstance(registration, RegisterVirtual)
        assert user.client.channels[ledger].phase is not Phase.OPEN


def test_a_close_of_the_ledger_cuts_a_paused_fold_short() -> None:
    """alice's user closes her ledger while her fold waits to go again: it goes at once, for
    the last time; ingrid is still away, so the ledger settles on-chain now, with the
    virtual channel's final state (not after the fold's patience)."""
    clock, net, users, ids = _paid_hub()
    alice, _, ingrid = users
    net.cut(ingrid.address)
    alice.client.close(ids[2]).addErrback(lambda _: None)
    _advance(clock, 2.0)
    assert alice.chain.asked == []

    closing: Deferred[object] = alice.client.close(ids[0])
    _advance(clock, 1.0)

    [registration] = alice.chain.asked
    assert isinstance(registration, RegisterVirtual)
    assert registration.proof.state.is_final  # the virtual channel's final state
    assert alice.client.channels[ids[0]].phase is not Phase.OPEN
    assert not closing.called  # it ends with the conclusion on-chain


def test_a_fold_lost_with_a_crash_goes_again_after_the_restart() -> None:
    """alice's node dies with her fold on the way to ingrid (never delivered). Restarted, she
    holds a fold of unknown fate; ingrid's Sync shows she never got it, and the fold goes
    again (it used to wait for good, until bob's refused fold took everything on-chain)."""
    clock, net, users, ids = _paid_hub()
    alice, bob, ingrid = users
    _close_until_folded(clock, users, ids[2], alice)
    assert _folds(alice, ingrid) == 1
    restart(net, alice, response_timeout=2.0, request_timeout=1.0)
    net.mend(alice.address)
    _advance(clock, 20.0)

    assert _folds(alice, ingrid) == 1  # the one sent after the restart
    _folded_off_chain((alice, bob, ingrid), ids)


def test_a_close_of_the_ledger_during_the_first_fold_ends_the_patience() -> None:
    """alice's user closes her ledger while her first fold waits in ingrid's window for bob's,
    which cannot reach her: when ingrid refuses it for want of a match, it does not go again,
    and the ledger settles on-chain (the close is what the user asked for)."""
    clock, net, users, ids = _paid_hub()
    alice, bob, ingrid = users
    net.sever(bob.address, ingrid.address)
    _close_until_folded(clock, users, ids[2], alice)
    assert _folds(alice, ingrid) == 1 and alice.chain.asked == []
    alice.client.close(ids[0]).addErrback(lambda _: None)
    _advance(clock, 5.0)  # past ingrid's window

    assert _folds(alice, ingrid) == 1
    [registration] = alice.chain.asked
    assert isinstance(registration, RegisterVirtual) and registration.proof.state.is_final
