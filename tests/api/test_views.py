"""Views built from the channel core's real records and the client's notices."""

from __future__ import annotations

from dataclasses import replace

from perund.api.amounts import Currencies, Currency
from perund.api.views import (
    UpdateView,
    Withdrawn,
    channel_view,
    notification_of,
    proposal_view,
)
from perund.channel import events as ev
from perund.channel.changes import OwnUpdate
from perund.channel.machine import transition
from perund.channel.phases import Phase
from perund.channel.records import Dispute
from perund.channel.types import ETH, Address, hex_address
from perund.session.notices import ChannelNotice, GoneNotice, ProposalNotice, UpdateNotice
from perund.wire.messages import Propose
from tests.channel.factories import (
    ALICE,
    BOB,
    ETHER,
    TOKEN,
    deliver,
    make_pair,
    make_proposal_from,
    make_request,
)

CURRENCIES = Currencies([Currency("TKN", TOKEN, 6)])


def aliases(address: Address) -> str | None:
    return {ALICE.address: "alice", BOB.address: "bob"}.get(address)


def test_channel_info_from_each_side() -> None:
    alice, bob = make_pair(make_request(assets=(ETH, TOKEN),
                                        balances=((3 * ETHER, ETHER), (5_000_000, 0))))
    shown = channel_view(alice, aliases).to_json(CURRENCIES)
    assert shown["peer"] == "bob" and shown["peerAddress"] == hex_address(BOB.address)
    assert shown["phase"] == "open" and shown["version"] == 0 and shown["isFinal"] is False
    assert shown["balances"] == {"ETH": {"self": "3", "peer": "1"},
                                 "TKN": {"self": "5", "peer": "0"}}
    assert shown["challengeDuration"] == 3600 and "onChain" not in shown
    mirrored = channel_view(bob, lambda a: None).to_json(CURRENCIES)
    assert mirrored["peer"] == hex_address(ALICE.address)
    assert mirrored["balances"]["ETH"] == {"self": "1", "peer": "3"}
    assert mirrored["channelId"] == "0x" + alice.channel_id.hex()


def test_disputed_channels_show_the_registration() -> None:
    alice, _ = make_pair()
    disputed = replace(alice, phase=Phase.DISPUTED,
                       dispute=Dispute(0, 1_700_000_600, alice.latest))
    shown = channel_view(disputed, aliases).to_json(Currencies())
    assert shown["phase"] == "disputed"
    assert shown["onChain"] == {"version": 0, "timeout": 1_700_000_600}


def test_a_payout_is_shown_only_while_the_channel_is_closed() -> None:
    """A channel the chain took the conclusion back from settles again: the payout its
    client remembers from that conclusion is no longer shown."""
    alice, _ = make_pair()
    paid = ((ETH, 3 * ETHER),)
    closed = replace(alice, phase=Phase.CLOSED)
    shown = channel_view(closed, aliases, paid_out=paid, credited=paid).to_json(Currencies())
    # All of it credited: owed by the contract, none of it sent.
    assert shown["paidOut"] == {"ETH": "0"} and shown["credited"] == {"ETH": "3"}
    again = channel_view(replace(alice, phase=Phase.CLOSING), aliases, paid_out=paid,
                         credited=paid).to_json(Currencies())
    assert "paidOut" not in again and "credited" not in again


def test_a_held_channel_shows_what_the_chain_lacks_of_it() -> None:
    alice, _ = make_pair(make_request(assets=(ETH, TOKEN),
                                      balances=((3 * ETHER, ETHER), (5_000_000, 0))))
    assert "depositsMissing" not in channel_view(alice, aliases).to_json(CURRENCIES)
    held = channel_view(alice, aliases, deposits_missing=(
        (ETH, 4 * ETHER, ETHER), (TOKEN, 5_000_000, 0))).to_json(CURRENCIES)
    assert held["phase"] == "open"
    assert held["depositsMissing"] == {"ETH": {"expected": "4", "held": "1"},
                                       "TKN": {"expected": "5", "held": "0"}}


def test_a_proposal_is_shown_from_the_responders_side() -> None:
    proposal = make_proposal_from(make_request(balances=((2 * ETHER, ETHER // 2),)))
    message = Propose(proposal.proposal_id, proposal.chain_id, proposal.adjudicator,
                      proposal.challenge_duration, proposal.nonce_share, proposal.assets,
                      proposal.balances, proposal.participant, proposal.receiver)
    view = proposal_view(ProposalNotice(ALICE.address, message, 1234.5), aliases)
    shown = view.to_json(Currencies())
    assert shown == {"type": "proposed", "proposalId": "0x" + "01" * 32, "peer": "alice",
                     "peerAddress": hex_address(ALICE.address),
                     "balances": {"ETH": {"self": "0.5", "peer": "2"}},
                     "challengeDuration": 3600, "expiry": 1234.5, "kind": "ledger"}


def test_a_payment_request_awaiting_our_user_becomes_an_open_update() -> None:
    alice, bob = make_pair()
    alice, events = transition(alice, OwnUpdate(ALICE, ((ETH, -ETHER),)))
    send = next(e for e in events if isinstance(e, ev.SendUpdate))
    bob, events = deliver(bob, send, ALICE, BOB)
    needs = next(e for e in events if isinstance(e, ev.UpdateNeedsUser))
    note = notification_of(UpdateNotice(bob, needs.update_id, needs.kind, 99.0, needs), aliases)
    assert isinstance(note, UpdateView)
    shown = note.to_json(Currencies())
    assert shown["type"] == "open" and shown["kind"] == "request"
    assert shown["updateId"] == "0x" + needs.update_id.hex() and shown["expiry"] == 99.0
    # the proposed state, not the current one: bob pays 1 ETH
    assert shown["channel"]["version"] == 1
    assert shown["channel"]["balances"]["ETH"] == {"self": "9", "peer": "11"}
    assert shown["channel"]["peer"] == "alice" and shown["error"] is None


def test_closed_withdrawn_and_silent_notices() -> None:
    alice, _ = make_pair()
    closed = replace(alice, phase=Phase.CLOSED)
    note = notification_of(ChannelNotice(closed, ev.Closed(alice.channel_id, 0)), aliases)
    assert isinstance(note, UpdateView)
    assert note.type == "closed" and note.expiry is None and note.update_id is None
    assert note.error is not None  # version 0 was never final: settled by a dispute
    final = replace(closed, current=replace(closed.current, state=replace(
        closed.latest, is_final=True))) if closed.current else closed
    ours = tuple((asset, row[alice.index]) for asset, row in
                 zip(final.latest.assets, final.latest.balances, strict=True))
    note = notification_of(ChannelNotice(final, ev.Closed(alice.channel_id, 0, ours)), aliases)
    assert isinstance(note, UpdateView) and note.error is None
    assert note.channel.paid_out == ours
    # Closed without touching the chain (a funding or version-0 timeout): said so, not
    # taken for a dispute.
    lapsed = notification_of(ChannelNotice(closed, ev.Closed(
        alice.channel_id, 0, (), off_chain="the proposer never countersigned version 0")),
        aliases)
    assert isinstance(lapsed, UpdateView) and lapsed.error == (
        "closed without touching the chain: the proposer never countersigned version 0")
    # The chain paid less than the state gives us: said, not hidden.
    short = notification_of(ChannelNotice(final, ev.Closed(alice.channel_id, 0, ())), aliases)
    assert isinstance(short, UpdateView) and short.error is not None
    assert "paid your account less" in short.error
    gone = notification_of(ChannelNotice(alice, ev.UpdateWithdrawn(
        alice.channel_id, b"\x05" * 32, "synced")), aliases)
    assert gone == Withdrawn(b"\x05" * 32, alice.channel_id, "synced")
    assert notification_of(ChannelNotice(alice, ev.Opened(alice.channel_id)), aliases) is None


def test_questions_a_restart_ended_are_shown_as_gone() -> None:
    alice, _ = make_pair()
    proposal = notification_of(GoneNotice("proposal", b"\x05" * 32, BOB.address, None,
                                          "the node stopped"), aliases)
    assert proposal is not None and proposal.to_json(Currencies()) == {
        "type": "gone", "proposalId": "0x" + "05" * 32, "peer": "bob",
        "peerAddress": hex_address(BOB.address), "reason": "the node stopped"}
    update = notification_of(GoneNotice("update", b"\x06" * 32, BOB.address, alice,
                                        "the node stopped"), aliases)
    assert update is not None
    shown = update.to_json(Currencies())
    assert (shown["type"], shown["updateId"], shown["error"]) == (
        "gone", "0x" + "06" * 32, "the node stopped")
    assert shown["channel"]["version"] == alice.version
    # An update of a channel the session no longer knows has nothing to be shown against.
    assert notification_of(GoneNotice("update", b"\x07" * 32, BOB.address, None, "x"),
                           aliases) is None


def test_a_virtual_channel_says_so_and_which_channels_fund_it() -> None:
    from perund.channel.virtual import proof_of
    from perund.wire.messages import VirtualPropose
    from tests.channel.virtual_factories import ALICE as V_ALICE
    from tests.channel.virtual_factories import CAROL, INGRID, make_hub

    hub = make_hub()
    names = {INGRID.address: "ingrid", CAROL.address: "carol"}
    shown = channel_view(hub.v_alice, names.get, via=INGRID.address).to_json(Currencies())
    assert shown["kind"] == "virtual" and shown["via"] == "ingrid" and shown["peer"] == "carol"
    assert shown["fundedBy"] == ["0x" + hub.la_alice.channel_id.hex(),
                                 "0x" + hub.lc_carol.channel_id.hex()]
    assert channel_view(hub.v_carol, names.get).to_json(Currencies())["fundedBy"] == [
        "0x" + hub.lc_carol.channel_id.hex(), "0x" + hub.la_alice.channel_id.hex()]
    ledger = channel_view(hub.la_alice, names.get).to_json(Currencies())
    assert ledger["kind"] == "ledger" and "fundedBy" not in ledger and "funds" not in ledger
    locking, _ = transition(hub.la_alice, OwnUpdate(V_ALICE, (), False, proof_of(hub.v_alice)))
    assert locking.staged is not None
    locked = channel_view(locking, names.get, locking.staged.state).to_json(Currencies())
    assert locked["funds"] == ["0x" + hub.v_alice.channel_id.hex()] and "fees" not in locked
    paid = channel_view(locking, names.get, fees={ETH: (0, 4 * 10**15)}).to_json(Currencies())
    assert paid["fees"] == {"ETH": {"earned": "0", "paid": "0.004"}}
    p = hub.proposal
    msg = VirtualPropose(p.proposal_id, p.chain_id, p.adjudicator, p.challenge_duration,
                         p.nonce_share, p.assets, p.balances, p.participant, p.intermediary,
                         p.parent)
    pushed = proposal_view(ProposalNotice(p.participant, msg, 10.0), names.get)
    assert pushed.to_json(Currencies())["kind"] == "virtual"
    assert pushed.to_json(Currencies())["via"] == "ingrid"
