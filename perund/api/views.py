"""What the node hands the API: plain values with wei as `int` and IDs as `bytes`.

The facade (`perund.api.facade.NodeFacade`) returns these; `to_json` renders them with the
currency table (amounts become decimal strings, addresses EIP-55, IDs 0x-hex). The converters at
the bottom build them from the channel client's records and notices, so the node never has to
know how the API spells anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from perund.api.amounts import Currencies
from perund.channel import events as ev
from perund.channel.phases import Phase
from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID, State, VirtualParams, hex_address
from perund.session.notices import GoneNotice, Notice, ProposalNotice, UpdateNotice
from perund.storage.payments import PaymentRecord
from perund.wire.messages import VirtualPropose

JSON = dict[str, Any]

AliasOf = Callable[[Address], str | None]
"""A session's contact lookup: the alias of an off-chain address, if it is a contact."""


def hex_id(data: bytes) -> str:
    """An ID as the API shows it: 0x-hex."""
    return "0x" + data.hex()


@dataclass(frozen=True, slots=True)
class AssetBalance:
    """One asset of a channel: our balance and the peer's, in base units."""

    asset: Address
    ours: int
    peer: int


def render_balances(balances: tuple[AssetBalance, ...],
                    currencies: Currencies) -> dict[str, dict[str, str]]:
    """`{currency: {"self": amount, "peer": amount}}` as decimal strings."""
    shown: dict[str, dict[str, str]] = {}
    for row in balances:
        label, ours = currencies.render(row.asset, row.ours)
        _, peer = currencies.render(row.asset, row.peer)
        shown[label] = {"self": ours, "peer": peer}
    return shown


@dataclass(frozen=True, slots=True)
class OnChainView:
    """A registered state: its version and when its challenge period ends (unix seconds,
    chain time)."""

    version: int
    timeout: int


@dataclass(frozen=True, slots=True)
class ChannelView:
    """Channel info: what `channel_*` methods return and updates carry."""

    channel_id: ChannelID
    peer: str
    """The peer's alias, or its checksummed address when it is no contact (any more)."""
    peer_address: Address
    phase: str
    version: int
    balances: tuple[AssetBalance, ...]
    challenge_duration: int
    is_final: bool = False
    on_chain: OnChainView | None = None
    paid_out: tuple[tuple[Address, int], ...] | None = None
    """What the chain says it paid our account at the conclusion, per asset, sent or credited
    (known when this node saw the conclusion)."""
    credited: tuple[tuple[Address, int], ...] = ()
    """The part of `paid_out` the contract could not send and holds for a withdraw (the
    session withdraws it: perund.session.withdrawals): owed, not paid, until `withdrawn`."""
    withdrawn: tuple[tuple[Address, int], ...] = ()
    """The credited assets the session has seen withdrawn since, and when (unix seconds)."""
    funded_by: tuple[ChannelID, ...] = ()
    """A virtual channel's parents, ours first (empty for a ledger channel)."""
    via: str | None = None
    """A virtual channel's intermediary (alias, or address when it is no contact)."""
    funds: tuple[ChannelID, ...] = ()
    """The virtual channels this ledger channel locks funds for."""
    fees: Mapping[Address, tuple[int, int]] = field(default_factory=dict)
    """A ledger channel's intermediary fees per asset: (earned, paid)."""
    deposits_missing: tuple[tuple[Address, int, int], ...] = ()
    """While the channel is held because the chain lost its deposits (perund.session.
    missing_deposits): per asset, what the chain should hold and what it holds."""
    deposits_back: tuple[tuple[Address, int], ...] = ()
    """Held with only the peer's deposit missing: what a forced close pays us (held_close)."""

    def to_json(self, currencies: Currencies) -> JSON:
        """The API's channel info object."""
        shown: JSON = {
            "channelId": hex_id(self.channel_id),
            "peer": self.peer,
            "peerAddress": hex_address(self.peer_address),
            "phase": self.phase,
            "version": self.version,
            "isFinal": self.is_final,
            "balances": render_balances(self.balances, currencies),
            "challengeDuration": self.challenge_duration,
            "kind": "virtual" if self.funded_by else "ledger",
        }
        if self.funded_by:
            shown["fundedBy"] = [hex_id(parent) for parent in self.funded_by]
            shown["via"] = self.via
        if self.funds:
            shown["funds"] = [hex_id(vid) for vid in self.funds]
        if self.fees:
            shown["fees"] = {currencies.render(asset, earned)[0]: {
                "earned": currencies.render(asset, earned)[1],
                "paid": currencies.render(asset, paid)[1]}
                for asset, (earned, paid) in self.fees.items()}
        if self.on_chain is not None:
            shown["onChain"] = {"version": self.on_chain.version,
                                "timeout": self.on_chain.timeout}
        if self.paid_out is not None:
            # Sent: a credit is owed by the contract, not paid (it is under `credited`).
            held = dict(self.credited)
            shown["paidOut"] = dict(currencies.render(asset, amount - held.get(asset, 0))
                                    for asset, amount in self.paid_out)
        if self.credited:
            shown["credited"] = dict(currencies.render(asset, amount)
                                     for asset, amount in self.credited)
        if self.withdrawn:
            shown["withdrawn"] = {currencies.label(asset)[0]: at for asset, at in self.withdrawn}
        if self.deposits_missing:
            shown["depositsMissing"] = {currencies.render(asset, expected)[0]: {
                "expected": currencies.render(asset, expected)[1],
                "held": currencies.render(asset, held)[1]}
                for asset, expected, held in self.deposits_missing}
        if self.deposits_back:
            shown["depositsBack"] = dict(currencies.render(*row) for row in self.deposits_back)
        return shown

    def short_paid(self) -> bool:
        """Whether the chain paid our account less than the state gives us, for some asset."""
        if self.paid_out is None:
            return False
        paid = dict(self.paid_out)
        return any(paid.get(row.asset, 0) < row.ours for row in self.balances)


@dataclass(frozen=True, slots=True)
class Payment:
    """One payment of `channel_send`: `amount` base units of `asset` to `payee`.

    `payee` is `"self"` (a payment request: the peer pays us) or the channel's peer, named by
    alias or 0x off-chain address; the node checks that it is this channel's peer.
    """

    asset: Address
    currency: str
    payee: str
    amount: int


@dataclass(frozen=True, slots=True)
class ProposalView:
    """A peer proposes a channel; answer with `channel_respondProposal` before `expiry`."""

    proposal_id: bytes
    peer: str
    peer_address: Address
    balances: tuple[AssetBalance, ...]
    challenge_duration: int
    expiry: float
    via: str | None = None
    """For a virtual channel: the intermediary it would be funded through."""

    def to_json(self, currencies: Currencies) -> JSON:
        """The `proposal` push."""
        shown: JSON = {
            "type": "proposed",
            "proposalId": hex_id(self.proposal_id),
            "peer": self.peer,
            "peerAddress": hex_address(self.peer_address),
            "balances": render_balances(self.balances, currencies),
            "challengeDuration": self.challenge_duration,
            "expiry": self.expiry,
            "kind": "ledger" if self.via is None else "virtual",
        }
        if self.via is not None:
            shown["via"] = self.via
        return shown


@dataclass(frozen=True, slots=True)
class ProposalGoneView:
    """A proposal our user did not answer is gone: the node restarted first (`reason`)."""

    proposal_id: bytes
    peer: str
    peer_address: Address
    reason: str
    expiry: None = None
    """Like a `closed` update, it is cached for the hub's `closed_ttl`."""

    def to_json(self, currencies: Currencies) -> JSON:
        """The `proposal` push of type `gone`."""
        return {
            "type": "gone",
            "proposalId": hex_id(self.proposal_id),
            "peer": self.peer,
            "peerAddress": hex_address(self.peer_address),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class SessionClosedView:
    """The session was closed (`session_close`, by whichever client): the last push of each of
    its subscriptions, which end with it. Not from a facade: the hub says it when it is
    detached."""

    session_id: bytes
    expiry: None = None

    def to_json(self, currencies: Currencies) -> JSON:
        """The push of type `sessionClosed`, on every topic."""
        return {"type": "sessionClosed", "sessionId": hex_id(self.session_id)}


UPDATE_TYPES = ("open", "final", "updated", "disputed", "closed", "chainLost", "gone")


@dataclass(frozen=True, slots=True)
class UpdateView:
    """An update of a channel: `open` and `final` await `channel_respondUpdate` before
    `expiry`. The others need no answer: `updated` (a new state the peer proposed is signed by
    both, e.g. an incoming payment; pushed only to current subscribers, never cached),
    `disputed` (a state is registered on-chain; `channel.onChain` has its version and the end
    of the challenge period), `closed` (the channel is settled on-chain), `chainLost` (the
    chain lacks the channel's deposits) and `gone` (an `open` or `final` update was not
    answered before the node restarted: it was not applied; `error` says so).

    `channel` is the channel as the update proposes it; `kind` says what an `open` update
    does to us (`payment` or `request`); `error` says why a channel closed abnormally.
    """

    update_id: bytes | None
    channel_id: ChannelID
    type: str
    channel: ChannelView
    expiry: float | None
    kind: str | None = None
    error: str | None = None

    def to_json(self, currencies: Currencies) -> JSON:
        """The `update` push."""
        return {
            "updateId": None if self.update_id is None else hex_id(self.update_id),
            "channelId": hex_id(self.channel_id),
            "type": self.type,
            "kind": self.kind,
            "channel": self.channel.to_json(currencies),
            "expiry": self.expiry,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class Withdrawn:
    """A question is gone before our user answered it (the peer synced, or the channel
    settles): the hub drops it from its cache; it is not pushed."""

    update_id: bytes
    channel_id: ChannelID
    reason: str


@dataclass(frozen=True, slots=True)
class KeptPush:
    """A push the hub cached before the node restarted, as it was rendered then (the hub keeps
    the pushes nobody took in the session's store: `closed`, `disputed`, `chainLost`)."""

    topic: str
    channel_id: ChannelID | None
    update_id: bytes | None
    push: JSON

    def to_json(self, currencies: Currencies) -> JSON:
        """The push, as rendered when it was cached."""
        return self.push


@dataclass(frozen=True, slots=True)
class PaymentView:
    """One entry of a session's payment history (`payment_list`, the `payments` push)."""

    payment_id: int
    channel_id: ChannelID
    peer: str
    peer_address: Address
    direction: str
    asset: Address
    amount: int
    version: int | None
    time: float
    request: bool
    status: str
    reference: str | None
    expiry: None = None
    """Never cached by the hub: the history lists what a subscriber missed."""

    def to_json(self, currencies: Currencies) -> JSON:
        """The payment as the API shows it: the amount in the currency's unit."""
        currency, amount = currencies.render(self.asset, self.amount)
        return {
            "paymentId": self.payment_id,
            "channelId": hex_id(self.channel_id),
            "peer": self.peer,
            "peerAddress": hex_address(self.peer_address),
            "direction": self.direction,
            "currency": currency,
            "amount": amount,
            "version": self.version,
            "time": self.time,
            "request": self.request,
            "status": self.status,
            "reference": self.reference,
        }


@dataclass(frozen=True, slots=True)
class PaymentPage:
    """A page of `payment_list`: payments newest first, and the cursor of the next page."""

    payments: tuple[PaymentView, ...]
    next_cursor: str | None

    def to_json(self, currencies: Currencies) -> JSON:
        """`{payments, nextCursor}`."""
        return {"payments": [p.to_json(currencies) for p in self.payments],
                "nextCursor": self.next_cursor}


Notification = ProposalView | ProposalGoneView | UpdateView | PaymentView | Withdrawn
"""What a facade tells the notification hub of a session."""

Delivered = Notification | KeptPush | SessionClosedView
"""What a hub hands its subscribers: a facade's notifications, pushes kept across a restart,
and the end of the session."""


# -- from the channel client's values -------------------------------------------------------------

def _peer_name(address: Address, alias_of: AliasOf) -> str:
    return alias_of(address) or hex_address(address)


def channel_view(channel: Channel, alias_of: AliasOf, state: State | None = None,
                 paid_out: tuple[tuple[Address, int], ...] | None = None,
                 via: Address | None = None,
                 credited: tuple[tuple[Address, int], ...] = (),
                 withdrawn: tuple[tuple[Address, int], ...] = (),
                 fees: Mapping[Address, tuple[int, int]] | None = None,
                 deposits_missing: tuple[tuple[Address, int, int], ...] = (),
                 deposits_back: tuple[tuple[Address, int], ...] = ()) -> ChannelView:
    """Channel info of `channel` (at `state`, e.g. a proposed one, or at its latest state),
    with what the chain paid our account if it is concluded and that is known (`credited`: the
    part the contract holds for a withdraw; `withdrawn`: when such a credit was withdrawn, per
    asset); `via` is a
    virtual channel's intermediary, `fees` a ledger's fees earned and paid per asset,
    `deposits_missing` what the chain lacks of a held channel (asset, expected, held), and
    `deposits_back` what a forced close of it would pay us."""
    shown = state if state is not None else channel.latest
    me, peer = channel.index, channel.peer_index
    dispute = channel.dispute
    params = channel.params
    parents = params.parents if type(params) is VirtualParams else ()
    return ChannelView(
        channel_id=channel.channel_id,
        peer=_peer_name(channel.peer, alias_of),
        peer_address=channel.peer,
        phase=channel.phase.value,
        version=shown.version,
        balances=tuple(AssetBalance(asset, row[me], row[peer])
                       for asset, row in zip(shown.assets, shown.balances, strict=True)),
        challenge_duration=channel.params.challenge_duration,
        is_final=shown.is_final,
        on_chain=None if dispute is None else OnChainView(dispute.version, dispute.timeout),
        # Only a closed channel shows a payout: one settling again after the chain lost its
        # conclusion (ConclusionLost) has none any more, whatever the client remembers.
        paid_out=paid_out if channel.phase is Phase.CLOSED else None,
        credited=credited if channel.phase is Phase.CLOSED else (),
        withdrawn=withdrawn if channel.phase is Phase.CLOSED else (),
        funded_by=(parents[me], parents[peer]) if parents else (),
        via=None if via is None else _peer_name(via, alias_of),
        funds=tuple(lock.channel_id for lock in shown.locked),
        fees=dict(fees or {}),
        deposits_missing=deposits_missing,
        deposits_back=deposits_back,
    )


def proposal_view(notice: ProposalNotice, alias_of: AliasOf) -> ProposalView:
    """The `proposal` push of a peer's proposal (we are its responder, participant 1)."""
    proposal = notice.proposal
    return ProposalView(
        proposal_id=proposal.proposal_id,
        peer=_peer_name(notice.peer, alias_of),
        peer_address=notice.peer,
        balances=tuple(AssetBalance(asset, row[1], row[0])
                       for asset, row in zip(proposal.assets, proposal.balances, strict=True)),
        challenge_duration=proposal.challenge_duration,
        expiry=notice.expiry,
        via=None if not isinstance(proposal, VirtualPropose)
        else _peer_name(proposal.intermediary, alias_of),
    )


def update_view(notice: UpdateNotice, alias_of: AliasOf) -> UpdateView:
    """The `update` push of a peer's update awaiting our user."""
    final = notice.kind is ev.UpdateKind.FINAL
    return UpdateView(
        update_id=notice.update_id,
        channel_id=notice.channel.channel_id,
        type="final" if final else "open",
        kind=notice.kind.value,
        channel=channel_view(notice.channel, alias_of, notice.proposed.state),
        expiry=notice.expiry,
    )


def gone_view(notice: GoneNotice, alias_of: AliasOf) -> ProposalGoneView | UpdateView | None:
    """The push telling that a question went unanswered across a restart (None for an update
    whose channel is no longer known: nothing to show it against)."""
    if notice.kind == "proposal":
        return ProposalGoneView(notice.question_id, _peer_name(notice.peer, alias_of),
                                notice.peer, notice.reason)
    if notice.channel is None:
        return None
    return UpdateView(notice.question_id, notice.channel.channel_id, "gone",
                      channel_view(notice.channel, alias_of), None, error=notice.reason)


def notification_of(notice: Notice, alias_of: AliasOf) -> Notification | None:
    """What the hub gets for a client notice, or None for notices the API does not push
    (new states, funding news: their effects show in `channel_get`)."""
    if isinstance(notice, ProposalNotice):
        return proposal_view(notice, alias_of)
    if isinstance(notice, UpdateNotice):
        return update_view(notice, alias_of)
    if isinstance(notice, GoneNotice):
        return gone_view(notice, alias_of)
    event = notice.event
    if isinstance(event, ev.Closed):
        view = channel_view(notice.channel, alias_of, paid_out=event.paid,
                            credited=event.credited)
        problems = []
        if event.off_chain is not None:
            # Nothing was settled on-chain: no dispute to speak of, and nothing of ours paid.
            problems.append(f"closed without touching the chain: {event.off_chain}")
        elif not view.is_final:
            problems.append("closed on-chain by a dispute, not by a final state both signed")
        if view.short_paid() and event.off_chain is None:
            problems.append("the chain paid your account less than the state gives you "
                            "(paidOut against balances.self): the deposits were not all there")
        if view.credited:
            problems.append("the Adjudicator could not send part of your payout (credited): "
                            "your account or the token refused the transfer; the node "
                            "withdraws it, and tries again while it is refused")
        return UpdateView(None, notice.channel.channel_id, "closed", view, None,
                          error="; ".join(problems) or None)
    if isinstance(event, ev.UpdateWithdrawn):
        return Withdrawn(event.update_id, event.channel_id, event.reason)
    if isinstance(event, ev.Lost):
        return UpdateView(None, notice.channel.channel_id, "chainLost",
                          channel_view(notice.channel, alias_of), None, error=event.detail)
    if isinstance(event, ev.Disputed):
        view = channel_view(notice.channel, alias_of)
        return UpdateView(None, notice.channel.channel_id, "disputed", view, None,
                          error=f"version {event.version} is registered on-chain; the challenge "
                                f"period ends at {event.timeout}")
    if isinstance(event, ev.NewState) and event.source is not ev.Source.OWN:
        return UpdateView(None, notice.channel.channel_id, "updated",
                          channel_view(notice.channel, alias_of), None)
    return None


def payment_view(record: PaymentRecord, alias_of: AliasOf) -> PaymentView:
    """The API's view of a history record."""
    return PaymentView(record.payment_id, record.channel_id, _peer_name(record.peer, alias_of),
                       record.peer, record.direction, record.asset, record.amount,
                       record.version, record.time, record.request, record.status,
                       record.reference)


__all__ = [
    "AliasOf", "AssetBalance", "ChannelView", "Delivered", "KeptPush",
    "Notification", "OnChainView", "Payment", "PaymentPage", "PaymentView",
    "ProposalGoneView", "ProposalView",
    "SessionClosedView",
    "UpdateView", "Withdrawn", "channel_view", "gone_view", "hex_id",
    "notification_of", "payment_view",
    "proposal_view", "render_balances", "update_view",
]
