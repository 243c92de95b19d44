"""Channels for the storage tests: real ones from a run of two cores, and hypothesis strategies
that vary every durable field of a channel built by tests/channel/factories.py."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import cache

from eth_hash.auto import keccak
from hypothesis import strategies as st

from perund.channel.changes import OwnUpdate
from perund.channel.encoding import signing_digest
from perund.channel.events import Persist, SendUpdate, SendUpdateAccept
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.proposal import accept_proposal
from perund.channel.records import Channel, Dispute, SignedState, Staged
from perund.channel.types import (
    ETH,
    MAX_SUB_ALLOCS,
    UINT64_MAX,
    UINT256_MAX,
    Address,
    ChannelID,
    State,
    SubAlloc,
)
from tests.channel.factories import (
    ALICE,
    BOB,
    BOB_RECEIVER,
    DEPLOYMENT,
    TOKEN,
    deliver,
    fully_signed_by_both,
    make_pair,
    make_proposal_from,
    make_request,
    sign,
)

ASSETS = (ETH, TOKEN, Address(b"\x71" * 20))


def persisted_payments(count: int) -> Iterator[Channel]:
    """Every channel value the two cores ask to persist over `count` payments alternating
    between Alice and Bob (proposer's staged, responder's countersigned, proposer's current)."""
    proposing, _ = accept_proposal(
        make_proposal_from(), signer=BOB, receiver=BOB_RECEIVER, nonce_share=b"\x03" * 32,
        deployment=DEPLOYMENT,
    )
    yield proposing
    yield from make_pair(funded=False)
    alice, bob = make_pair()
    yield alice
    yield bob
    for i in range(count):
        payer, payee = (alice, bob) if i % 2 == 0 else (bob, alice)
        signers = (ALICE, BOB) if i % 2 == 0 else (BOB, ALICE)
        payer, events = transition(payer, OwnUpdate(signers[0], ((ETH, 1 + i),)))
        yield from (e.channel for e in events if isinstance(e, Persist))
        update = next(e for e in events if isinstance(e, SendUpdate))
        payee, answers = deliver(payee, update, *signers)
        yield from (e.channel for e in answers if isinstance(e, Persist))
        accept = next(e for e in answers if isinstance(e, SendUpdateAccept))
        payer, finals = deliver(payer, accept, signers[1], signers[0])
        yield from (e.channel for e in finals if isinstance(e, Persist))
        alice, bob = (payer, payee) if i % 2 == 0 else (payee, payer)


@cache
def _base(assets: int, funded: bool) -> tuple[Channel, Channel]:
    request = make_request(
        assets=ASSETS[:assets], balances=tuple((10**18 * (a + 1), 7 * a) for a in range(assets))
    )
    return make_pair(request, funded=funded)


amounts = st.one_of(st.integers(0, 2**64), st.integers(0, UINT256_MAX // 4))


@st.composite
def locks(draw: st.DrawFn, n_assets: int) -> tuple[SubAlloc, ...]:
    """Funds locked for 1..MAX_SUB_ALLOCS distinct virtual channels, one amount per asset."""
    ids = draw(
        st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=MAX_SUB_ALLOCS,
                 unique=True)
    )
    return tuple(
        SubAlloc(
            ChannelID(lock_id),
            tuple(draw(amounts) for _ in range(n_assets)),
            draw(st.sampled_from([(0, 1), (1, 0)])),
        )
        for lock_id in ids
    )


@st.composite
def states(draw: st.DrawFn, base: State) -> State:
    """A state of `base`'s channel and assets with arbitrary version and balances, and locks
    (sub-allocations for virtual channels) or none."""
    return replace(
        base,
        version=draw(st.integers(0, UINT64_MAX)),
        balances=tuple((draw(amounts), draw(amounts)) for _ in base.assets),
        is_final=draw(st.booleans()),
        locked=draw(st.just(()) | locks(len(base.assets))),
    )


@st.composite
def staged(draw: st.DrawFn, base: State) -> Staged:
    """An update in flight, signed by whichever side proposed it."""
    state = draw(states(base))
    proposer = draw(st.integers(0, 1))
    digest = signing_digest(state)
    update_id = draw(st.sampled_from([b"", digest, b"\x05" * 64]))
    return Staged(proposer, state, sign((ALICE, BOB)[proposer], state), digest, update_id)


@st.composite
def channels(draw: st.DrawFn) -> Channel:
    """Any channel value the core can hold, every durable field varied, transient ones too."""
    alice, bob = _base(draw(st.integers(1, 3)), draw(st.booleans()))
    channel = draw(st.sampled_from((alice, bob)))
    base = channel.latest
    current = checked = None
    if draw(st.booleans()):
        state = draw(states(base))
        current = SignedState(state, fully_signed_by_both(state))
        if state.version > 0 and draw(st.booleans()):
            older = replace(draw(states(base)),
                            version=draw(st.integers(0, state.version - 1)))
            checked = SignedState(older, fully_signed_by_both(older))
    return replace(
        channel,
        phase=draw(st.sampled_from(list(Phase))),
        current=current,
        staged=draw(st.none() | staged(base)),
        abandoned=draw(st.none() | staged(base)),
        sync_sent=draw(st.booleans()),
        fresh_link=draw(st.booleans()),
        signed_up_to=draw(st.integers(0, UINT64_MAX)),
        reserved=draw(st.integers(0, UINT64_MAX)),
        resyncing=draw(st.booleans()),
        unfunded=draw(st.booleans()),
        confirm_updates=draw(st.booleans()),
        dispute=draw(
            st.none()
            | st.builds(Dispute, st.integers(0, UINT64_MAX), st.integers(0, UINT64_MAX),
                        states(base))
        ),
        checked=checked,
    )


def durable(channel: Channel) -> Channel:
    """`channel` as a store gives it back: the transient fields at their defaults."""
    return replace(channel, sync_sent=False, fresh_link=False, resyncing=False)


def renamed(channel: Channel, n: int) -> Channel:
    """`channel` under another channel ID (states too), so many channels can be stored."""
    cid = ChannelID(keccak(n.to_bytes(8, "big")))
    assert channel.current is not None
    state = replace(channel.current.state, channel_id=cid)
    return replace(channel, channel_id=cid, current=replace(channel.current, state=state))
