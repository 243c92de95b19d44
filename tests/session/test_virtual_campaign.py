"""A virtual channel's life among racing payments on it and on both ledger channels that fund
it, on a fake clock.

alice and bob hold a virtual channel through ingrid, funded by a lock in each of their ledger
channels with her. While they pay each other on it (payments and requests, answered at random),
each of them and ingrid pay and ask on the ledgers too, so the locks' folds meet ledger updates
in flight both ways; at a random moment alice or bob closes the virtual channel. Everything is
honest, so it must all stay off-chain: the virtual channel closes on both sides, each ledger
ends with its two sides agreeing on one state with no lock left and all its money, and what
moved is what the users were told: the virtual channel's net payment, folded into both ledgers
(ingrid neither gains nor loses by it), and each ledger's own payments (paid for certain, or
some of those that may or may not have been made, each at most once).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import ETH, ChannelID
from perund.channel.virtual_opening import VirtualOpenRequest
from perund.errors import PeerRejected, PeerRequestTimedOut
from perund.session.config import IntermediaryConfig
from perund.wire.messages import UpdateAccept, VirtualFold

from .fakes import ETHER, Net, Side, open_channel, restart, result, side
from .test_closing_campaign import answering
from .test_hostile_campaign import explained

STEPS = 80


@dataclass
class Flows:
    """What the users of one channel were told, in wei moved from its participant 0 to 1."""

    first: Side
    sure: int = 0
    unsure: list[int] = field(default_factory=list)
    waiting: list[tuple[int, Deferred[Channel]]] = field(default_factory=list)

    def send(self, user: Side, channel_id: ChannelID, amount: int, ask: bool) -> None:
        """`user` pays `amount` on the channel, or asks for it."""
        towards_second = (user is self.first) != ask
        sending = user.client.send(channel_id, ((ETH, -amount if ask else amount),))
        self.waiting.append((amount if towards_second else -amount, sending))

    def settle(self, crashed: bool = False) -> None:
        """Sort what was sent into sure and unsure; after a crash, a send the crashed node
        never answered (its update was in flight) is unsure."""
        for moved, sending in self.waiting:
            box: list[Channel | Failure] = []
            sending.addBoth(box.append)
            if not box and crashed:
                self.unsure.append(moved)
                continue
            assert box, "every send has ended"
            if not isinstance(box[0], Failure):
                self.sure += moved
            elif box[0].check(PeerRequestTimedOut, PeerRejected):
                self.unsure.append(moved)

    def explains(self, moved: int) -> bool:
        return explained(moved - self.sure, self.unsure)


def _run(clock: Clock, until: Deferred[Channel]) -> Channel:
    for _ in range(5_000):
        if until.called:
            break
        clock.advance(0.001)
    return result(until)


def _hub(seed: int, latency: float, bobs: int, window: float = 3.0) -> tuple[
        Clock, Net, tuple[Side, Side, Side], tuple[ChannelID, ChannelID, ChannelID]]:
    """alice and bob with a ledger channel each with ingrid (5 ETH a side, her lock window
    `window` s) and a virtual channel through her (alice 2 ETH, bob `bobs`), every user
    answering (and waiting 3 s for a peer's answer)."""
    clock = Clock()
    net = Net(clock, latency=latency)
    timing = {"response_timeout": 2.0, "request_timeout": 1.0}
    alice, bob = side(net, **timing), side(net, **timing)  # type: ignore[arg-type]
    ingrid = side(net, intermediary=IntermediaryConfig(True, window), **timing)  # type: ignore[arg-type]
    la = open_channel(net, alice, ingrid, 5 * ETHER, 5 * ETHER)
    lb = open_channel(net, bob, ingrid, 5 * ETHER, 5 * ETHER)
    for n, user in enumerate((alice, bob, ingrid)):
        answering(user, clock, random.Random(seed * 10 + n))
    vid = _run(clock, alice.client.open_channel(VirtualOpenRequest(
        bob.address, ingrid.address, (ETH,), ((2 * ETHER, bobs),), 60))).channel_id
    return clock, net, (alice, bob, ingrid), (la, lb, vid)


def _restarted(net: Net, clock: Clock, user: Side, rng: random.Random,
               intermediary: IntermediaryConfig | None) -> None:
    """`user`'s node crashes and comes back at once (`fakes.restart`), its user answering as
    before, back on the net within 50 ms."""
    restart(net, user, intermediary=intermediary, response_timeout=2.0, request_timeout=1.0)
    answering(user, clock, rng)
    clock.callLater(rng.random() * 0.05, net.mend, user.address)


def _campaign(seed: int, away: str, crashes: bool = False) -> None:
    """The module's run; now and then one of `away` ("a": alice, "b": bob, "i": ingrid) drops
    off the net for up to 50 ms (under folds, the virtual channel's final update, ledger
    payments, answers), or with `crashes` restarts, and it must stay off-chain too (a close
    under way when its node crashed goes on after the restart)."""
    rng = random.Random(seed)
    clock, net, (alice, bob, ingrid), (la, lb, vid) = _hub(seed, 0.0005, ETHER)
    droppable = [user for user, key in ((alice, "a"), (bob, "b"), (ingrid, "i")) if key in away]
    for _ in range(100):  # bob's lock too
        clock.advance(0.001)
    start = {cid: user.client.channels[cid].latest for user, cid in ((alice, la), (bob, lb))}
    assert all(len(state.locked) == 1 for state in start.values())
    flows = {vid: Flows(alice), la: Flows(alice), lb: Flows(bob)}
    closer = rng.choice((alice, bob))
    close_at = rng.randrange(STEPS // 4, STEPS)
    for step in range(STEPS):
        if step == close_at:
            closer.client.close(vid).addErrback(lambda _: None)
        roll = rng.random()
        if roll < 0.6:
            cid, payer = rng.choice(((vid, alice), (vid, bob), (la, alice), (la, ingrid),
                                     (lb, bob), (lb, ingrid)))
            flows[cid].send(payer, cid, rng.randrange(1, 10**15), rng.random() < 0.2)
        elif roll < 0.9 or not droppable or net.down:
            clock.advance(rng.random() * 0.004)
        elif crashes:
            gone = rng.choice(droppable)
            _restarted(net, clock, gone, rng,
                       IntermediaryConfig(True, 3.0) if gone is ingrid else None)
        else:
            gone_address = rng.choice(droppable).address
            net.cut(gone_address)
            clock.callLater(rng.random() * 0.05, net.mend, gone_address)
    for _ in range(40_000):
        clock.advance(0.001)

    for flow in flows.values():
        flow.settle(crashes)
    assert [user.chain.asked for user in (alice, bob, ingrid)] == [[], [], []]
    final = alice.client.channels[vid]
    assert final.phase is Phase.CLOSED and bob.client.channels[vid].phase is Phase.CLOSED
    assert final.latest.is_final and bob.client.channels[vid].latest == final.latest
    (va, vb), = final.latest.balances
    assert va + vb == 3 * ETHER
    moved_virtually = 2 * ETHER - va
    assert flows[vid].explains(moved_virtually), (moved_virtually, flows[vid])
    for owner, cid, folded in ((alice, la, va), (bob, lb, vb)):
        mine, hers = owner.client.channels[cid], ingrid.client.channels[cid]
        assert mine.phase is Phase.OPEN and mine.current == hers.current
        state = mine.latest
        assert state.locked == () and sum(state.balances[0]) == 10 * ETHER
        # The owner's free balance after the lock, plus its share of the virtual channel's
        # final state folded back, less what the ledger's own payments gave ingrid.
        paid = start[cid].balances[0][0] + folded - state.balances[0][0]
        assert flows[cid].explains(paid), (cid == la, paid, flows[cid].sure, flows[cid].unsure)


@pytest.mark.parametrize("seed", range(1, 31))
def test_a_virtual_channel_among_ledger_payments_stays_off_chain_and_adds_up(seed: int) -> None:
    _campaign(seed, away="")


@pytest.mark.parametrize("seed", range(1, 31))
def test_an_intermediary_away_now_and_then_costs_no_on_chain_close(seed: int) -> None:
    """Her absence under a fold (unreachable, or her answer to the other party's fold held
    in vain for the match) makes the fold go again later, not the ledgers go on-chain."""
    _campaign(seed, away="i")


@pytest.mark.parametrize("seed", [*range(1, 31), 81, 1317])
def test_anyone_away_now_and_then_costs_no_on_chain_close(seed: int) -> None:
    """Also a party away when the virtual channel's final update is proposed (it goes again
    once the peer is back: closing.py), or whose Sync brings a newer state in place of the
    final update, on either side (seeds 81 and 1317: proposed again on top of it)."""
    _campaign(seed, away="abi")


@pytest.mark.parametrize("seed", range(1, 31))
def test_anyone_restarting_now_and_then_costs_no_on_chain_close(seed: int) -> None:
    """A crash of any of the three at any moment (a fold or lock of unknown fate, an update
    in flight, the close itself, which goes on after the restart) and the restart from its
    store: still everything off-chain and adding up."""
    _campaign(seed, away="abi", crashes=True)


@pytest.mark.parametrize("close_ledger", [False, True])
@pytest.mark.parametrize("lost", ["the fold", "ingrid's answer"])
def test_a_fold_whose_connection_drops_goes_again_instead_of_on_chain(
        lost: str, close_ledger: bool) -> None:
    """The link to ingrid drops under alice's fold (before it reaches her, or with her
    countersignature on the way back) and comes back: the fold goes again once ingrid's Sync
    is in (or that Sync shows it signed), and alice's ledger stays open, unlocked, with the
    virtual channel's outcome in it (it used to go on-chain at once). A close of that ledger
    asked for meanwhile waits for the fold, then closes cooperatively (it was refused: "funds
    open virtual channels")."""
    clock, net, (alice, bob, ingrid), (la, _, vid) = _hub(0, 0.001, 0)
    _run(clock, alice.client.send(vid, ((ETH, 7),)))
    watched, cut = (alice, ingrid) if lost == "the fold" else (ingrid, alice)
    before = len(watched.links.sent)
    alice.client.close(vid).addErrback(lambda _: None)
    for _ in range(20_000):
        clock.advance(0.0005)
        if any(isinstance(msg, VirtualFold) if lost == "the fold" else
               isinstance(msg, UpdateAccept) and msg.channel_id == la
               for peer, msg in watched.links.sent[before:] if peer == cut.address):
            break
    assert alice.client.channels[vid].latest.is_final
    net.cut(cut.address)
    clock.callLater(0.2, net.mend, cut.address)
    if close_ledger:
        clock.advance(0.001)
        alice.client.close(la).addErrback(lambda _: None)
    for _ in range(10_000):
        clock.advance(0.001)

    assert alice.client.channels[vid].phase is Phase.CLOSED
    if close_ledger:
        [conclude] = alice.chain.asked
        assert isinstance(conclude, ev.ConcludeFinal) and conclude.state.locked == ()
        assert conclude.state.balances == ((5 * ETHER - 7, 5 * ETHER + 7),)
        return
    assert [user.chain.asked for user in (alice, bob, ingrid)] == [[], [], []]
    ledger = alice.client.channels[la]
    assert ledger.phase is Phase.OPEN and ledger.current == ingrid.client.channels[la].current
    assert ledger.latest.locked == () and ledger.latest.balances == ((5 * ETHER - 7,
                                                                      5 * ETHER + 7),)
