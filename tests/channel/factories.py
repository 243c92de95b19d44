"""make_* factories for the channel core tests: keys, proposals, open channel pairs, and the
plumbing that turns one core's Send* events into the other core's inputs."""

from __future__ import annotations

from dataclasses import replace

from eth_hash.auto import keccak

from perund.channel.changes import (
    Change,
    ChannelClosedReceived,
    Funded,
    SyncReceived,
    UpdateAcceptReceived,
    UpdateReceived,
    UpdateRejectReceived,
)
from perund.channel.encoding import Signer, signing_digest
from perund.channel.events import (
    Event,
    SendChannelClosed,
    SendSync,
    SendUpdate,
    SendUpdateAccept,
    SendUpdateReject,
)
from perund.channel.machine import transition
from perund.channel.proposal import (
    Deployment,
    OpenRequest,
    Proposal,
    accept_proposal,
    complete_proposal,
    make_proposal,
)
from perund.channel.records import Channel
from perund.channel.types import ETH, Address, Signature, State

ALICE = Signer(keccak(b"perund-test-alice"))
BOB = Signer(keccak(b"perund-test-bob"))
MALLORY = Signer(keccak(b"perund-test-mallory"))
ALICE_RECEIVER = Address(b"\xa1" * 20)
BOB_RECEIVER = Address(b"\xb0" * 20)
TOKEN = Address(b"\x70" * 20)
DEPLOYMENT = Deployment(chain_id=1337, adjudicator=Address(b"\xad" * 20), min_challenge_duration=60)
ETHER = 10**18


def make_request(
    *,
    peer: Address = BOB.address,
    assets: tuple[Address, ...] = (ETH,),
    balances: tuple[tuple[int, int], ...] = ((10 * ETHER, 10 * ETHER),),
    challenge_duration: int = 3600,
) -> OpenRequest:
    """Alice's request to open a channel with Bob (10 ETH each by default)."""
    return OpenRequest(peer, assets, balances, challenge_duration)


def make_proposal_from(request: OpenRequest | None = None, **fields: object) -> Proposal:
    """Alice's proposal for `request`, with any field overridden afterwards (for hostile ones)."""
    proposal = make_proposal(
        request or make_request(),
        participant=ALICE.address,
        receiver=ALICE_RECEIVER,
        proposal_id=b"\x01" * 32,
        nonce_share=b"\x02" * 32,
        deployment=DEPLOYMENT,
    )
    return replace(proposal, **fields)  # type: ignore[arg-type]


def make_pair(
    request: OpenRequest | None = None,
    *,
    confirm_updates: tuple[bool, bool] = (False, False),
    funded: bool = True,
) -> tuple[Channel, Channel]:
    """Alice's and Bob's views of one channel, opened through the real proposal flow."""
    proposal = make_proposal_from(request)
    bob, bob_events = accept_proposal(
        proposal,
        signer=BOB,
        receiver=BOB_RECEIVER,
        nonce_share=b"\x03" * 32,
        deployment=DEPLOYMENT,
        confirm_updates=confirm_updates[1],
    )
    accept = bob_events[1]
    alice, alice_events = complete_proposal(
        proposal,
        accept,  # type: ignore[arg-type]  # SendAccept has the Accept fields
        sender=BOB.address,
        peer=BOB.address,
        signer=ALICE,
        deployment=DEPLOYMENT,
        confirm_updates=confirm_updates[0],
    )
    assert alice is not None
    bob, _ = deliver(bob, alice_events[1], ALICE, BOB)
    if funded:
        alice, _ = transition(alice, Funded())
        bob, _ = transition(bob, Funded())
    return alice, bob


def as_input(event: Event, sender: Signer, receiver: Signer) -> Change:
    """The input the receiving core gets for a Send* event of the sending core."""
    if isinstance(event, SendUpdate):
        return UpdateReceived(sender.address, event.state, event.signature, receiver, event.proof)
    if isinstance(event, SendUpdateAccept):
        return UpdateAcceptReceived(
            sender.address, event.channel_id, event.version, event.signature
        )
    if isinstance(event, SendUpdateReject):
        return UpdateRejectReceived(sender.address, event.channel_id, event.version, event.reason)
    if isinstance(event, SendSync):
        return SyncReceived(sender.address, event.state, event.signatures)
    if isinstance(event, SendChannelClosed):
        return ChannelClosedReceived(sender.address, event.channel_id, event.reason)
    raise TypeError(f"not a message to a channel: {event!r}")


def deliver(
    channel: Channel, event: Event, sender: Signer, receiver: Signer
) -> tuple[Channel, tuple[Event, ...]]:
    """Feed one message event of the other side into `channel`."""
    return transition(channel, as_input(event, sender, receiver))


def next_state(channel: Channel, **changes: object) -> State:
    """The state after `channel`'s current one: version + 1, with `changes` applied."""
    assert channel.current is not None
    base = channel.current.state
    fields: dict[str, object] = {"version": base.version + 1, **changes}
    return replace(base, **fields)  # type: ignore[arg-type]


def sign(signer: Signer, state: State) -> Signature:
    """`signer`'s signature on `state`."""
    return signer.sign_digest(signing_digest(state))


def fully_signed_by_both(state: State) -> tuple[Signature, Signature]:
    """Alice's and Bob's signatures on `state` (Alice is participant 0 in every test channel)."""
    return sign(ALICE, state), sign(BOB, state)
