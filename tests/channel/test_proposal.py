"""The open flow: proposal rules, accept, version-0 signatures, funding."""

from __future__ import annotations

from dataclasses import replace

import pytest

from perund.channel.changes import (
    Funded,
    FundingExpired,
    StartSync,
    SyncReceived,
    UpdateAcceptReceived,
    UpdateTimedOut,
)
from perund.channel.encoding import channel_id, nonce_from_shares, verify_state
from perund.channel.events import (
    Closed,
    Fund,
    FundingFailed,
    Opened,
    Persist,
    ProposalReceived,
    ProposalRefused,
    Reason,
    Refused,
    Register,
    SendAccept,
    SendChannelClosed,
    SendReject,
    SendSync,
    SendUpdateAccept,
    UpdateFailed,
    UpdateFailure,
)
from perund.channel.lifecycle import FUNDING_LAPSED
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.proposal import (
    Deployment,
    Proposal,
    accept_proposal,
    complete_proposal,
    receive_proposal,
)
from perund.channel.types import ETH, Address, Params, State
from perund.errors import InvalidArgument
from tests.channel.factories import (
    ALICE,
    ALICE_RECEIVER,
    BOB,
    BOB_RECEIVER,
    DEPLOYMENT,
    ETHER,
    MALLORY,
    TOKEN,
    make_pair,
    make_proposal_from,
    make_request,
)

BOB_SHARE = b"\x03" * 32


def receive(proposal: Proposal, *, sender: Address = ALICE.address, known: bool = True) -> tuple:
    return receive_proposal(
        proposal, sender=sender, me=BOB.address, peer_known=known, deployment=DEPLOYMENT
    )


def refused(proposal: Proposal, reason: Reason, detail: str) -> tuple:
    pid = proposal.proposal_id
    return (
        ProposalRefused(ALICE.address, pid, reason, detail),
        SendReject(ALICE.address, pid, reason.value),
    )


def test_make_proposal_carries_the_request_and_our_deployment() -> None:
    proposal = make_proposal_from(
        make_request(assets=(ETH, TOKEN), balances=((5, 7), (0, 9)), challenge_duration=600)
    )
    assert proposal == Proposal(
        proposal_id=b"\x01" * 32,
        chain_id=1337,
        adjudicator=DEPLOYMENT.adjudicator,
        challenge_duration=600,
        nonce_share=b"\x02" * 32,
        assets=(ETH, TOKEN),
        balances=((5, 7), (0, 9)),
        participant=ALICE.address,
        receiver=ALICE_RECEIVER,
    )


def test_a_deposit_of_the_adjudicators_most_is_proposed_and_one_unit_more_is_refused() -> None:
    proposal = make_proposal_from(make_request(balances=((2**128 - 2, 2**128 - 2),)))
    assert proposal.balances == ((2**128 - 2, 2**128 - 2),)
    with pytest.raises(InvalidArgument) as caught:
        make_proposal_from(make_request(balances=((1, 2**128 - 1),)))
    assert caught.value.data["name"] == "balances"
    assert "MAX_HOLDING" in caught.value.data["value"]


@pytest.mark.parametrize(
    ("request_fields", "name"),
    [
        ({"challenge_duration": 0}, "challengeDuration"),
        ({"challenge_duration": 59}, "challengeDuration"),
        ({"challenge_duration": 2**64}, "challengeDuration"),
        ({"balances": ((0, 0),)}, "balances"),
        ({"balances": ((-1, 5),)}, "balances"),
        ({"balances": ((2**256, 0),)}, "balances"),
        ({"balances": ((2**128 - 1, 0),)}, "balances"),
        ({"assets": (TOKEN, ETH), "balances": ((1, 1), (1, 1))}, "balances"),
        ({"assets": (TOKEN, TOKEN), "balances": ((1, 1), (1, 1))}, "balances"),
        ({"assets": (), "balances": ()}, "balances"),
        ({"peer": ALICE.address}, "peer"),
    ],
)
def test_make_proposal_refuses_a_bad_request(request_fields: dict, name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        make_proposal_from(make_request(**request_fields))
    assert caught.value.data["name"] == name


@pytest.mark.parametrize(
    ("duration", "message"),
    [
        (31 * 86400, "challenge duration too long: 31 d is above this node's maximum of 30 d, "
                     "as a dispute would keep the funds that long (allowed: 1 min to 30 d)"),
        (2**64, "challenge duration too long: 213503982334601 d 7 h 16 s is above "
                "this node's maximum of 30 d, as a dispute would keep the funds that long "
                "(allowed: 1 min to 30 d)"),
        (59, "challenge duration too short: 59 s is below this node's minimum of 1 min, the "
             "time it needs to answer a dispute (allowed: 1 min to 30 d)"),
    ],
)
def test_a_refused_challenge_duration_says_which_way_and_the_range(duration: int,
                                                                    message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        make_proposal_from(make_request(challenge_duration=duration))
    assert caught.value.message == message
    assert caught.value.data == {"name": "challengeDuration", "value": str(duration),
                                 "requirement": "60..2592000 seconds", "minimum": 60,
                                 "maximum": 2592000}


def test_a_valid_proposal_goes_to_the_user() -> None:
    proposal = make_proposal_from()
    assert receive(proposal) == (ProposalReceived(ALICE.address, proposal.proposal_id),)


def test_tokens_after_eth_are_fine() -> None:
    proposal = make_proposal_from(make_request(assets=(ETH, TOKEN), balances=((1, 0), (0, 0))))
    assert receive(proposal) == (ProposalReceived(ALICE.address, proposal.proposal_id),)


@pytest.mark.parametrize(
    ("fields", "reason", "detail"),
    [
        (
            {"challenge_duration": 0},
            Reason.CHALLENGE_DURATION,
            "too short: 0 s is below this node's minimum of 1 min, the time it needs to answer "
            "a dispute (allowed: 1 min to 30 d)",
        ),
        (
            {"challenge_duration": 30},
            Reason.CHALLENGE_DURATION,
            "too short: 30 s is below this node's minimum of 1 min, the time it needs to answer "
            "a dispute (allowed: 1 min to 30 d)",
        ),
        (
            {"challenge_duration": 30 * 86400 + 1},
            Reason.CHALLENGE_DURATION,
            "too long: 30 d 1 s is above this node's maximum of 30 d, as a dispute would keep "
            "the funds that long (allowed: 1 min to 30 d)",
        ),
        (
            {"assets": (TOKEN, ETH), "balances": ((1, 1), (1, 1))},
            Reason.ASSET_LIST,
            "ETH must come first",
        ),
        (
            {"assets": (ETH, ETH), "balances": ((1, 1), (1, 1))},
            Reason.ASSET_LIST,
            "an asset appears twice",
        ),
        (
            {"assets": (ETH, *(Address(bytes([i]) * 20) for i in range(1, 17))),
             "balances": ((1, 1),) * 17},
            Reason.ASSET_LIST,
            "at most 16 assets",
        ),
        ({"balances": ((0, 0),)}, Reason.BALANCES, "all balances are zero"),
        ({"balances": ((-5, 10),)}, Reason.BALANCES, "each balance is a uint256, two per asset"),
        ({"balances": ((1, 1), (1, 1))}, Reason.BALANCES, "one pair of balances per asset"),
        (
            {"balances": ((2**256 - 1, 1),)},
            Reason.BALANCES,
            "an asset's total exceeds uint256",
        ),
        (
            {"balances": ((2**128 - 1, 0),)},
            Reason.BALANCES,
            "a deposit is at most 340282366920938463463374607431768211454 units per "
            "participant and asset (the Adjudicator's MAX_HOLDING, 2^128-2)",
        ),
        ({"balances": ((1, 2**128 - 1),)}, Reason.BALANCES,
         "a deposit is at most 340282366920938463463374607431768211454 units per participant "
         "and asset (the Adjudicator's MAX_HOLDING, 2^128-2)"),
        ({"chain_id": 1}, Reason.CHAIN, "chain 1, ours is 1337"),
        ({"adjudicator": Address(b"\xee" * 20)}, Reason.ADJUDICATOR, "0x" + "ee" * 20),
        ({"nonce_share": b"\x02" * 31}, Reason.MALFORMED, "nonce_share must have 32 bytes"),
    ],
)
def test_each_proposal_rule_refuses(fields: dict, reason: Reason, detail: str) -> None:
    proposal = make_proposal_from(**fields)
    assert receive(proposal) == refused(proposal, reason, detail)


def test_a_proposal_from_a_stranger_is_refused() -> None:
    proposal = make_proposal_from()
    assert receive(proposal, known=False) == refused(proposal, Reason.UNKNOWN_PEER, "")


def test_a_proposal_naming_another_proposer_is_refused() -> None:
    proposal = make_proposal_from()
    pid = proposal.proposal_id
    assert receive(proposal, sender=MALLORY.address) == (
        ProposalRefused(
            MALLORY.address, pid, Reason.SENDER, "the proposer's address is not the connection's"
        ),
        SendReject(MALLORY.address, pid, Reason.SENDER.value),
    )


def test_a_proposal_from_ourselves_is_refused() -> None:
    proposal = make_proposal_from(participant=BOB.address)
    events = receive_proposal(
        proposal, sender=BOB.address, me=BOB.address, peer_known=True, deployment=DEPLOYMENT
    )
    assert events == (
        ProposalRefused(BOB.address, proposal.proposal_id, Reason.SELF, ""),
        SendReject(BOB.address, proposal.proposal_id, Reason.SELF.value),
    )


def expected_params() -> Params:
    return Params(
        challenge_duration=3600,
        nonce=nonce_from_shares(b"\x02" * 32, BOB_SHARE),
        participants=(ALICE.address, BOB.address),
        receivers=(ALICE_RECEIVER, BOB_RECEIVER),
    )


def test_full_open_flow_signs_version_zero_on_both_sides_then_funds() -> None:
    proposal = make_proposal_from()
    bob, bob_events = accept_proposal(
        proposal, signer=BOB, receiver=BOB_RECEIVER, nonce_share=BOB_SHARE, deployment=DEPLOYMENT
    )
    params = expected_params()
    cid = channel_id(1337, DEPLOYMENT.adjudicator, params)
    v0 = State(cid, 0, (ETH,), ((10 * ETHER, 10 * ETHER),))
    assert bob.params == params and bob.channel_id == cid and bob.index == 1
    assert bob.phase is Phase.PROPOSING and bob.current is None
    assert bob.staged is not None and bob.staged.state == v0
    bob_sig = bob.staged.signature
    assert verify_state(v0, bob_sig, BOB.address)
    assert bob_events == (
        Persist(bob),
        SendAccept(
            ALICE.address, proposal.proposal_id, BOB_SHARE, BOB.address, BOB_RECEIVER, bob_sig
        ),
    )

    alice, alice_events = complete_proposal(
        proposal,
        bob_events[1],  # type: ignore[arg-type]
        sender=BOB.address,
        peer=BOB.address,
        signer=ALICE,
        deployment=DEPLOYMENT,
    )
    assert alice is not None
    assert alice.channel_id == cid and alice.index == 0 and alice.phase is Phase.FUNDING
    assert alice.current is not None and alice.current.state == v0
    alice_sig = alice.current.signatures[0]
    assert alice.current.signatures == (alice_sig, bob_sig)
    assert verify_state(v0, alice_sig, ALICE.address)
    fund = Fund(cid, params, 0, (ETH,), ((10 * ETHER, 10 * ETHER),))
    assert alice_events == (Persist(alice), SendUpdateAccept(BOB.address, cid, 0, alice_sig), fund)

    bob2, events = transition(bob, UpdateAcceptReceived(ALICE.address, cid, 0, alice_sig))
    assert bob2.phase is Phase.FUNDING and bob2.current == alice.current and bob2.staged is None
    assert events == (Persist(bob2), replace(fund, index=1))

    bob3, events = transition(bob2, Funded())
    assert bob3.phase is Phase.OPEN and events == (Persist(bob3), Opened(cid))
    # Funding news for a channel that is already open changes nothing.
    assert transition(bob3, Funded()) == (bob3, ())


def test_acceptance_with_a_bad_signature_is_refused() -> None:
    proposal = make_proposal_from()
    _, bob_events = accept_proposal(
        proposal, signer=BOB, receiver=BOB_RECEIVER, nonce_share=BOB_SHARE, deployment=DEPLOYMENT
    )
    accept = bob_events[1]
    assert isinstance(accept, SendAccept)
    forged = replace(accept, signature=MALLORY.sign_digest(b"\x00" * 32))
    alice, events = complete_proposal(
        proposal, forged, sender=BOB.address, peer=BOB.address, signer=ALICE, deployment=DEPLOYMENT
    )
    assert alice is None
    assert events == (
        ProposalRefused(BOB.address, proposal.proposal_id, Reason.SIGNATURE, "version 0"),
    )


def test_acceptance_from_someone_else_is_refused() -> None:
    proposal = make_proposal_from()
    _, bob_events = accept_proposal(
        proposal,
        signer=MALLORY,
        receiver=BOB_RECEIVER,
        nonce_share=BOB_SHARE,
        deployment=DEPLOYMENT,
    )
    alice, events = complete_proposal(
        proposal,
        bob_events[1],  # type: ignore[arg-type]
        sender=MALLORY.address,
        peer=BOB.address,
        signer=ALICE,
        deployment=DEPLOYMENT,
    )
    assert alice is None
    assert events == (
        ProposalRefused(
            MALLORY.address,
            proposal.proposal_id,
            Reason.SENDER,
            "the acceptance is not from the peer we proposed to",
        ),
    )


def test_acceptance_of_another_proposal_is_refused() -> None:
    proposal = make_proposal_from()
    _, bob_events = accept_proposal(
        replace(proposal, proposal_id=b"\x09" * 32),
        signer=BOB,
        receiver=BOB_RECEIVER,
        nonce_share=BOB_SHARE,
        deployment=DEPLOYMENT,
    )
    alice, events = complete_proposal(
        proposal,
        bob_events[1],  # type: ignore[arg-type]
        sender=BOB.address,
        peer=BOB.address,
        signer=ALICE,
        deployment=DEPLOYMENT,
    )
    assert alice is None
    assert events == (
        ProposalRefused(BOB.address, proposal.proposal_id, Reason.NO_SUCH_PROPOSAL, ""),
    )


def test_version_zero_signature_by_the_wrong_key_is_refused() -> None:
    proposal = make_proposal_from()
    bob0, _ = accept_proposal(
        proposal, signer=BOB, receiver=BOB_RECEIVER, nonce_share=BOB_SHARE, deployment=DEPLOYMENT
    )
    assert bob0.staged is not None
    forged = MALLORY.sign_digest(bob0.staged.digest)
    same, events = transition(bob0, UpdateAcceptReceived(ALICE.address, bob0.channel_id, 0, forged))
    assert same is bob0
    assert events == (Refused(bob0.channel_id, ALICE.address, Reason.SIGNATURE, "version 0"),)


def test_version_zero_can_arrive_by_sync_instead() -> None:
    alice, _ = make_pair(funded=False)
    proposal = make_proposal_from()
    bob0, _ = accept_proposal(
        proposal, signer=BOB, receiver=BOB_RECEIVER, nonce_share=BOB_SHARE, deployment=DEPLOYMENT
    )
    # Bob has nothing fully signed to offer on reconnect yet.
    assert transition(bob0, StartSync()) == (bob0, ())
    assert alice.current is not None
    bob1, events = transition(
        bob0, SyncReceived(ALICE.address, alice.current.state, alice.current.signatures)
    )
    assert bob1.phase is Phase.FUNDING and bob1.current == alice.current and bob1.sync_sent
    assert events == (
        Persist(bob1),
        Fund(bob1.channel_id, bob1.params, 1, (ETH,), alice.current.state.balances),
        SendSync(ALICE.address, alice.current.state, alice.current.signatures),
    )


def test_version_zero_never_countersigned_abandons_the_channel() -> None:
    proposal = make_proposal_from()
    bob0, _ = accept_proposal(
        proposal, signer=BOB, receiver=BOB_RECEIVER, nonce_share=BOB_SHARE, deployment=DEPLOYMENT
    )
    bob1, events = transition(bob0, UpdateTimedOut(0))
    assert bob1.phase is Phase.CLOSED and bob1.latest == bob0.latest
    assert events == (
        Persist(bob1),
        UpdateFailed(bob0.channel_id, 0, UpdateFailure.TIMED_OUT, "no answer from the peer"),
        Closed(bob0.channel_id, 0),
    )


def test_funding_deadline_registers_version_zero() -> None:
    alice, _ = make_pair(funded=False)
    assert alice.current is not None
    closing, events = transition(alice, FundingExpired())
    assert closing.phase is Phase.CLOSING and closing.unfunded
    assert events == (
        Persist(closing),
        FundingFailed(alice.channel_id),
        Register(alice.channel_id, alice.params, alice.current.state, alice.current.signatures),
    )
    # A late Funded changes nothing: the refund is under way.
    assert transition(closing, Funded()) == (closing, ())
    assert transition(closing, FundingExpired()) == (closing, ())


def test_funding_deadline_with_nothing_of_ours_to_deposit_closes_without_a_transaction() -> None:
    """bob was to deposit nothing (alice funds the channel alone) and alice never deposited:
    nothing of bob's is on-chain, so he registers nothing (a registration and a conclusion
    would cost his gas, as often as a proposer that never deposits likes). alice, who was
    to deposit, still registers version 0 to get back whatever she put in."""
    alice, bob = make_pair(make_request(balances=((10 * ETHER, 0),)), funded=False)
    closed, events = transition(bob, FundingExpired())
    assert closed.phase is Phase.CLOSED and closed.unfunded
    assert events == (Persist(closed), FundingFailed(bob.channel_id),
                      SendChannelClosed(ALICE.address, bob.channel_id, FUNDING_LAPSED),
                      Closed(bob.channel_id, 0, (), off_chain=FUNDING_LAPSED))
    closing, events = transition(alice, FundingExpired())
    assert closing.phase is Phase.CLOSING and isinstance(events[-1], Register)


def test_deployment_minimum_is_respected_exactly() -> None:
    strict = Deployment(
        chain_id=1337, adjudicator=DEPLOYMENT.adjudicator, min_challenge_duration=3600
    )
    proposal = make_proposal_from()
    events = receive_proposal(
        proposal, sender=ALICE.address, me=BOB.address, peer_known=True, deployment=strict
    )
    assert events == (ProposalReceived(ALICE.address, proposal.proposal_id),)
