"""A cooperative close among racing payments, replayed and forged Syncs, on a fake clock.

test_hostile_campaign.py interleaves a hostile peer's messages with honest payments and ends
with the channel open. Here the channel is closed in the middle of it all: one side closes
while both users keep paying and asking (their users answering at random, a close always yes),
and alice's node keeps slipping Syncs to bob (old fully signed states replayed, states with a
forged second signature). None of that refuses bob's final update, so a close of bob's must stay
cooperative: both sides conclude the same final state (`ConcludeFinal`, never `Register`), which
holds all the money (a close of alice's too, unless one of her node's Syncs withdrew her own
final update: then she registers her latest state), and what bob gained is what was paid for
certain plus some of the payments that may or may not have been made, each at most once.

It found three ways a close became a dispute (none of them needs a hostile peer): a Sync that
only answered one of the peer's, crossing the closer's final update, withdrew it (docs/core.md,
"Sync": the Sync's `awaiting`); after a collision, participant 0 whose retry was declined went
on proposing at once and collided with the peer's retry again (`SendQueue._yield_turn`); and
the pauses of the two sides, growing with their own counts of attempts, could still cross often
enough to use up a final update's retries (`FINAL_RETRIES`). Seeds 145 and 153 fail without
the last two fixes, 36 with the second alone, and nearly every seed without the first.
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
from perund.channel.records import Channel, SignedState
from perund.channel.types import ETH, ChannelID
from perund.errors import PeerRejected, PeerRequestTimedOut
from perund.session.notices import Notice, ProposalNotice, UpdateNotice
from perund.wire.messages import Sync

from .fakes import Net, Side, open_channel, restart, side
from .hostile import bad_signature, next_state
from .test_hostile_campaign import explained

STEPS = 60


@dataclass
class Ledger:
    """What the users were told of their payments and requests, in wei moved to bob."""

    sure: int = 0
    unsure: list[int] = field(default_factory=list)
    waiting: list[tuple[int, bool, Deferred[Channel]]] = field(default_factory=list)
    outcomes: list[Channel | Failure] = field(default_factory=list)

    def send(self, user: Side, channel_id: ChannelID, amount: int, to_bob: bool,
             by_bob: bool) -> None:
        transfer = amount if to_bob != by_bob else -amount
        sending = user.client.send(channel_id, ((ETH, transfer),))
        self.waiting.append((amount if to_bob else -amount, by_bob, sending))

    def settle(self, crashed: bool = False) -> None:
        for moved, by_bob, sending in self.waiting:
            box: list[Channel | Failure] = []
            sending.addBoth(box.append)
            if not box and crashed:
                self.unsure.append(moved)  # its update was in flight when its node died
                continue
            assert box, "every send has ended"
            result = box[0]
            if not isinstance(result, Failure):
                self.sure += moved
            elif not by_bob or result.check(PeerRequestTimedOut, PeerRejected):
                # As in test_hostile_campaign.py: bob's answers to what alice's node forged
                # may answer alice's own client's updates, and an update of bob's that alice
                # refused holds his signature.
                self.unsure.append(moved)


def answering(user: Side, clock: Clock, rng: random.Random) -> None:
    """`user` answers every question soon: a proposal and a close yes, anything else yes or
    no at random."""
    def answer(notice: Notice) -> None:
        if isinstance(notice, ProposalNotice):
            clock.callLater(rng.random() * 0.005, user.client.respond_proposal,
                            notice.proposal.proposal_id, True)
        elif isinstance(notice, UpdateNotice):
            yes = notice.kind is ev.UpdateKind.FINAL or rng.random() < 0.7
            clock.callLater(rng.random() * 0.01, respond, notice, yes)

    def respond(notice: UpdateNotice, yes: bool) -> None:
        user.client.respond_update(notice.channel.channel_id, notice.update_id,
                                   yes).addErrback(lambda _: None)

    user.client.observers.append(answer)


def slipped_sync(rng: random.Random, seen: list[SignedState], alice: Side, bob: Side,
                 cid: ChannelID) -> Sync:
    """A replayed fully signed state, or a newer one whose second signature is forged."""
    if seen and rng.random() < 0.7:
        old = rng.choice(seen)
        return Sync(old.state, old.signatures)
    current = bob.client.channels[cid].current
    assert current is not None
    (a, b), = current.state.balances
    robbed = next_state(current.state, version=current.state.version + rng.choice((1, 2)),
                        balances=((a + b, 0),))
    key = alice.client.signer
    return Sync(robbed, (key.sign_state(robbed), bad_signature()))


def _pair(seed: int) -> tuple[Clock, Net, Side, Side, ChannelID]:
    """alice and bob on a fake clock, a channel open between them, both users answering."""
    clock = Clock()
    net = Net(clock, latency=0.0005)
    timing = {"response_timeout": 2.0, "request_timeout": 1.0}
    alice, bob = side(net, **timing), side(net, **timing)  # type: ignore[arg-type]
    cid = open_channel(net, alice, bob)
    for user in (alice, bob):
        answering(user, clock, random.Random(seed + 1000 * (user is bob)))
    return clock, net, alice, bob, cid


@pytest.mark.parametrize("seed", [*range(1, 201), 145, 153])  # 145, 153, 36: see above
def test_a_close_among_payments_and_slipped_syncs_stays_cooperative(seed: int) -> None:
    rng = random.Random(seed)
    clock, _, alice, bob, cid = _pair(seed)
    start = bob.client.channels[cid].latest
    closer = rng.choice((alice, bob))
    close_at = rng.randrange(STEPS // 4, STEPS)
    ledger, seen = Ledger(), []
    closing: Deferred[Channel] | None = None
    for step in range(STEPS):
        current = bob.client.channels[cid].current
        if current is not None and (not seen or seen[-1] != current):
            seen.append(current)
        if step == close_at:
            closing = closer.client.close(cid)
            closing.addErrback(lambda _: None)
        roll = rng.random()
        if roll < 0.5:
            by_bob = rng.random() < 0.5
            asks = rng.random() < 0.2
            ledger.send(bob if by_bob else alice, cid, rng.randrange(1, 10**15),
                        by_bob == asks, by_bob)
        elif roll < 0.75:
            clock.advance(rng.random() * 0.004)
        else:
            bob.links.arrive(alice.address, slipped_sync(rng, seen, alice, bob, cid))
    assert closing is not None
    # The clock moves as time does, a millisecond at a time: a coarser step would fire both
    # sides' retry timers at one instant, which no real clock does (the retries take turns).
    for _ in range(40_000):  # 40 s: every timeout and conclude grace runs out
        clock.advance(0.001)

    ledger.settle()
    asked = {user is bob: list(user.chain.asked) for user in (alice, bob)}
    if closer is alice and [type(e) for e in asked[False]] == [ev.Register]:
        # alice's node withdrew her own final update: one of its Syncs reached bob while the
        # update awaited his user. A dispute then is her node's doing; it registers her
        # latest state, which bob never replaced with the final one.
        [register] = asked[False]
        assert isinstance(register, ev.Register) and asked[True] == []
        settled = register.state
        assert not settled.is_final and settled == alice.client.channels[cid].latest
    else:
        for by_bob, settlement in asked.items():
            assert [type(e) for e in settlement] == [ev.ConcludeFinal], (by_bob, settlement)
        concluded = [asked[False][0], asked[True][0]]
        assert all(isinstance(e, ev.ConcludeFinal) for e in concluded)
        settled = concluded[0].state
        assert settled.is_final and concluded[1].state == settled
        assert [e.primary for e in concluded] == [closer is alice, closer is bob]  # type: ignore[union-attr]
    (a, b), = settled.balances
    assert a + b == sum(start.balances[0])
    gained = b - start.balances[0][1]
    assert explained(gained - ledger.sure, ledger.unsure), (gained, ledger.sure, ledger.unsure)


@pytest.mark.parametrize("seed", range(1, 61))
def test_a_close_through_lost_connections_ends_with_the_right_money(seed: int) -> None:
    """As above, and now and then one side drops off the net for a while, during the close
    too. A close then may end in a dispute (an unanswered final update is one: docs/
    specification.md §3), but it ends: the closer's channel settles, and what the chain
    ends with (the newest state either side registers, concludes or would refute with) holds
    all the money and what bob gained is explained by what the users were told."""
    _through_trouble(seed, crashes=False)


@pytest.mark.parametrize("seed", range(1, 41))
def test_a_close_through_crashes_ends_with_the_right_money(seed: int) -> None:
    """As above, with a node crashing and starting again from its store instead of dropping
    off the net (a close under way goes on after the restart: perund.session.closing)."""
    _through_trouble(seed, crashes=True)


def _through_trouble(seed: int, crashes: bool) -> None:
    rng = random.Random(seed)
    clock, net, alice, bob, cid = _pair(seed)
    start = bob.client.channels[cid].latest
    closer = rng.choice((alice, bob))
    close_at = rng.randrange(STEPS // 4, STEPS)
    ledger, seen = Ledger(), []
    for step in range(STEPS):
        current = bob.client.channels[cid].current
        if current is not None and (not seen or seen[-1] != current):
            seen.append(current)
        if step == close_at:
            closer.client.close(cid).addErrback(lambda _: None)
        roll = rng.random()
        if roll < 0.45:
            by_bob = rng.random() < 0.5
            ledger.send(bob if by_bob else alice, cid, rng.randrange(1, 10**15),
                        by_bob == (rng.random() < 0.2), by_bob)
        elif roll < 0.75:
            clock.advance(rng.random() * 0.004)
        elif roll < 0.9:
            bob.links.arrive(alice.address, slipped_sync(rng, seen, alice, bob, cid))
        elif net.down:
            continue
        elif crashes:
            gone = rng.choice((alice, bob))
            restart(net, gone, response_timeout=2.0, request_timeout=1.0)
            answering(gone, clock, random.Random(seed * 100 + step))
            clock.callLater(rng.random() * 0.05, net.mend, gone.address)
        else:
            away = rng.choice((alice, bob)).address
            net.cut(away)
            clock.callLater(rng.random() * 0.05, net.mend, away)
    for _ in range(40_000):
        clock.advance(0.001)

    ledger.settle(crashes)
    assert closer.client.channels[cid].phase in (Phase.CLOSING, Phase.DISPUTED, Phase.CLOSED) \
        or closer.client.channels[cid].latest.is_final
    states = [e.state for user in (alice, bob) for e in user.chain.asked
              if isinstance(e, ev.Register | ev.ConcludeFinal)]
    assert states, "someone settled on-chain"
    states += [user.client.channels[cid].latest for user in (alice, bob)]
    settled = max(states, key=lambda state: state.version)
    (a, b), = settled.balances
    assert a + b == sum(start.balances[0])
    gained = b - start.balances[0][1]
    assert explained(gained - ledger.sure, ledger.unsure), (gained, ledger.sure, ledger.unsure)
