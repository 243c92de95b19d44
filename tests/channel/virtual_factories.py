"""Factories for the virtual-channel core tests: alice and carol each with a ledger channel to
ingrid, and a virtual channel alice-carol opened through the real proposal flow."""

from __future__ import annotations

from dataclasses import dataclass

from eth_hash.auto import keccak

from perund.channel.changes import Funded
from perund.channel.encoding import Signer
from perund.channel.events import SendUpdateAccept, SendVirtualAccept
from perund.channel.machine import transition
from perund.channel.proposal import (
    OpenRequest,
    accept_proposal,
    complete_proposal,
    make_proposal,
)
from perund.channel.records import Channel
from perund.channel.types import ETH, Address
from perund.channel.virtual_opening import (
    VirtualOpenRequest,
    VirtualProposal,
    accept_virtual_proposal,
    complete_virtual_proposal,
    make_virtual_proposal,
)

from .factories import DEPLOYMENT, ETHER, TOKEN, deliver

ALICE = Signer(keccak(b"perund-test-v-alice"))
INGRID = Signer(keccak(b"perund-test-v-ingrid"))
CAROL = Signer(keccak(b"perund-test-v-carol"))


def open_ledger(proposer: Signer, responder: Signer,
                balances: tuple[tuple[int, int], ...] = ((10 * ETHER, 10 * ETHER),),
                assets: tuple[Address, ...] = (ETH,), share: bytes = b"\x11" * 32
                ) -> tuple[Channel, Channel]:
    """Both views of a funded, open ledger channel (proposer index 0)."""
    request = OpenRequest(responder.address, assets, balances, 3600)
    proposal = make_proposal(request, participant=proposer.address,
                             receiver=Address(proposer.address[::-1]), proposal_id=share,
                             nonce_share=share, deployment=DEPLOYMENT)
    theirs, accept_events = accept_proposal(
        proposal, signer=responder, receiver=Address(responder.address[::-1]),
        nonce_share=b"\x22" * 32, deployment=DEPLOYMENT)
    ours, events = complete_proposal(
        proposal, accept_events[1],  # type: ignore[arg-type]
        sender=responder.address, peer=responder.address, signer=proposer,
        deployment=DEPLOYMENT)
    assert ours is not None
    theirs, _ = deliver(theirs, events[1], proposer, responder)
    ours, _ = transition(ours, Funded())
    theirs, _ = transition(theirs, Funded())
    return ours, theirs


@dataclass
class Hub:
    """alice-ingrid (L_A, alice index 0), carol-ingrid (L_C, carol index 0), and V in
    FUNDING on both sides (version 0 fully signed, nothing locked yet)."""

    la_alice: Channel
    la_ingrid: Channel
    lc_carol: Channel
    lc_ingrid: Channel
    v_alice: Channel
    v_carol: Channel
    proposal: VirtualProposal


def make_hub(balances: tuple[tuple[int, int], ...] = ((3 * ETHER, 2 * ETHER),),
             assets: tuple[Address, ...] = (ETH,),
             ledger_assets: tuple[Address, ...] = (ETH,),
             ledger_balances: tuple[tuple[int, int], ...] = ((10 * ETHER, 10 * ETHER),)) -> Hub:
    la_alice, la_ingrid = open_ledger(ALICE, INGRID, ledger_balances, ledger_assets)
    lc_carol, lc_ingrid = open_ledger(CAROL, INGRID, ledger_balances, ledger_assets,
                                      share=b"\x33" * 32)
    request = VirtualOpenRequest(CAROL.address, INGRID.address, assets, balances, 3600)
    proposal = make_virtual_proposal(request, participant=ALICE.address, ledger=la_alice,
                                     proposal_id=b"\x44" * 32, nonce_share=b"\x55" * 32,
                                     deployment=DEPLOYMENT)
    v_carol, carol_events = accept_virtual_proposal(
        proposal, signer=CAROL, ledger=lc_carol, nonce_share=b"\x66" * 32,
        deployment=DEPLOYMENT)
    accept = carol_events[1]
    assert isinstance(accept, SendVirtualAccept)
    v_alice, alice_events = complete_virtual_proposal(
        proposal, accept, sender=CAROL.address, peer=CAROL.address, signer=ALICE,  # type: ignore[arg-type]
        deployment=DEPLOYMENT)
    assert v_alice is not None
    sent = alice_events[1]
    assert isinstance(sent, SendUpdateAccept)
    v_carol, _ = deliver(v_carol, sent, ALICE, CAROL)
    return Hub(la_alice, la_ingrid, lc_carol, lc_ingrid, v_alice, v_carol, proposal)


__all__ = ["ALICE", "CAROL", "DEPLOYMENT", "ETHER", "INGRID", "TOKEN", "Hub", "make_hub",
           "open_ledger"]
