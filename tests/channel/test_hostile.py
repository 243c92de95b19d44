"""A hostile peer: whatever it sends, the core raises nothing and no unsigned state becomes
current."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from perund.channel.changes import (
    Change,
    SyncReceived,
    UpdateAcceptReceived,
    UpdateReceived,
    UpdateRejectReceived,
)
from perund.channel.encoding import verify_state
from perund.channel.events import (
    Persist,
    Refused,
    SendSync,
    SendUpdateReject,
    UpdateNeedsUser,
    UpdateWithdrawn,
)
from perund.channel.machine import transition
from perund.channel.records import Channel
from perund.channel.types import ETH, Address, ChannelID, Signature, State
from tests.channel.factories import ALICE, BOB, MALLORY, TOKEN, make_pair, sign

ALICE_CH, BOB_CH = make_pair()
assert BOB_CH.current is not None
CURRENT = BOB_CH.current.state

senders = st.sampled_from((ALICE.address, MALLORY.address, BOB.address))
amounts = st.integers(0, 30 * 10**18) | st.sampled_from((0, 2**256 - 1))


@st.composite
def states(draw: st.DrawFn) -> State:
    """States near the current one: right or wrong channel, version, assets, balances."""
    channel_id = draw(st.sampled_from((CURRENT.channel_id, ChannelID(b"\x99" * 32))))
    version = draw(st.integers(0, 3) | st.integers(0, 2**64 - 1))
    assets = draw(st.sampled_from(((ETH,), (TOKEN,), (ETH, TOKEN))))
    balances = tuple((draw(amounts), draw(amounts)) for _ in assets)
    return State(channel_id, version, assets, balances, draw(st.booleans()))


@st.composite
def signatures(draw: st.DrawFn, state: State) -> Signature:
    kind = draw(st.sampled_from(("alice", "mallory", "bob", "garbage")))
    if kind == "garbage":
        return Signature(draw(st.binary(min_size=0, max_size=70)))
    if kind == "bob":
        # The peer holds bob's signatures only on states bob signed: it can replay his
        # signature on the current state, not make one on any other.
        return sign(BOB, CURRENT)
    signer = {"alice": ALICE, "mallory": MALLORY}[kind]
    return sign(signer, state)


@st.composite
def hostile_inputs(draw: st.DrawFn) -> Change:
    sender = Address(draw(senders))
    state = draw(states())
    kind = draw(st.sampled_from(("update", "accept", "reject", "sync")))
    if kind == "update":
        return UpdateReceived(sender, state, draw(signatures(state)), BOB)
    if kind == "accept":
        return UpdateAcceptReceived(
            sender, state.channel_id, state.version, draw(signatures(state))
        )
    if kind == "reject":
        return UpdateRejectReceived(sender, state.channel_id, state.version, draw(st.text()))
    return SyncReceived(sender, state, (draw(signatures(state)), draw(signatures(state))))


def fully_signed_by_the_two(channel: Channel) -> bool:
    assert channel.current is not None
    state, (s0, s1) = channel.current.state, channel.current.signatures
    return verify_state(state, s0, ALICE.address) and verify_state(state, s1, BOB.address)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_inputs(), min_size=1, max_size=6))
def test_hostile_messages_never_raise_nor_advance_the_channel(changes: list[Change]) -> None:
    bob = BOB_CH
    version = CURRENT.version
    for change in changes:
        bob, events = transition(bob, change)
        for event in events:
            # Only refusals, answers and user questions about a correctly signed request.
            assert isinstance(
                event, Refused | SendUpdateReject | SendSync | UpdateNeedsUser | UpdateWithdrawn
            ) or (isinstance(event, Persist) and event.channel is bob), event
        # A message that happens to be a valid signed update may advance the channel; nothing
        # else does, and whatever is current is fully signed with the totals unchanged.
        assert bob.current is not None
        assert bob.current.state.version >= version
        version = bob.current.state.version
        assert bob.current.state.totals() == CURRENT.totals()
        assert fully_signed_by_the_two(bob)
