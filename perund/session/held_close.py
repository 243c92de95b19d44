"""A forced close of a channel held because the chain lost the peer's deposit.

A channel whose holdings fall short of its state is held (`perund.session.missing_deposits`):
it takes no payment and does not close. When the missing share is ours, the node deposits it
again and the hold ends by itself. When it is the peer's, only the peer can end it, and a peer
that is gone, or malicious, would keep our deposit locked for good. So a forced close of such a
channel is possible, on the contract's terms for an underfunded channel (the Adjudicator's
`_outcome`, docs/contract.md "Payout rule"): per asset the chain holds less of than the state
gives out, each participant gets back exactly what it deposited, whatever the balances say.
The peer's payments to us are then forfeited; ours to the peer come back to us. That is the
user's decision, never the node's: the close is refused until the caller accepts those terms
(the API's `acceptDepositsBack`), and the refusal says what the user would get back.

It stays refused, whatever the caller accepts, while:

- some of **our** share is missing too (or this node cannot tell its share): the node deposits
  ours again first (a close before that would pay the peer back its deposit only, not what
  we paid it, and its deposits' rule would go against an honest peer);
- the channel's state locks funds for virtual channels: its conclusion would need their states
  as well, and this path does not go there;
- the chain holds nothing of our deposit: the close would pay us nothing.

Once under way, the close is a dispute like any other (the latest state is registered, and
concluded after the challenge period). Should the peer deposit again meanwhile, the channel is
funded again and the outcome follows the state; the payout reported is what the contract paid
(its `PaidOut` events), either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from perund.channel.records import Channel
from perund.channel.types import Address, ChannelID, Params
from perund.errors import FailedPrecondition, PerundError
from perund.session.chain_check import AssetLabel
from perund.session.missing_deposits import REDEPOSIT_PHASES, Hold, MissingDeposits
from perund.words import asset_text

ACCEPT_PARAM = "acceptDepositsBack"
"""The API's parameter by which the caller of a forced close accepts these terms."""

Amounts = tuple[tuple[Address, int], ...]
"""Per asset, an amount in its base units."""


def deposits_back(channel: Channel, hold: Hold) -> Amounts | None:
    """What a forced close of the held `channel` would pay our account now, per asset of its
    latest state (what the chain holds of our deposit for each asset it lacks, our balance for
    the others); None when such a close is not possible (module doc: our share missing or
    unknown, virtual channels locked, nothing of the peer's missing)."""
    state = channel.latest
    if type(channel.params) is not Params or state.locked:
        return None
    lacks = {lack.shortfall.asset: lack for lack in hold.lacks}
    if any(lack.ours is None or lack.ours > 0 or lack.ours_held is None
           for lack in lacks.values()):
        return None
    if not any((lack.peers or 0) > 0 for lack in lacks.values()):
        return None  # pragma: no cover - a hold lacks someone's share
    back = []
    for asset, row in zip(state.assets, state.balances, strict=True):
        lack = lacks.get(asset)
        held = lack.ours_held if lack is not None else None
        back.append((asset, row[channel.index] if held is None else held))
    return tuple(back)


def forced_close_refusal(channel: Channel, hold: Hold, accepted: bool,
                         label: AssetLabel, refusal: PerundError) -> PerundError | None:
    """Why a forced close of `channel`, held for `hold`, may not go ahead (None: it may);
    `accepted`: the caller accepts the deposits-back terms; `refusal` is the hold's refusal of
    updates, said again when the close cannot be made at all."""
    channel_id = "0x" + channel.channel_id.hex()
    state = channel.latest
    if type(channel.params) is Params and state.locked:
        return FailedPrecondition(
            f"{refusal.message} A forced close of a held channel that locks funds for "
            "virtual channels is not supported: wait for the deposits to be back",
            channel_id=channel_id)
    back = deposits_back(channel, hold)
    if back is None:
        ours_missing = hold.ours_missing()
        why = ("our share is being deposited again first: a forced close is possible once the "
               "chain holds it" if ours_missing else
               "this node cannot tell whose share is missing, so it does not close the channel "
               "on the terms of an underfunded one")
        return FailedPrecondition(f"{refusal.message} Not even by force: {why}",
                                  channel_id=channel_id)
    if not any(amount for _, amount in back):
        return FailedPrecondition(
            f"{refusal.message} A forced close now would pay you nothing: the chain holds "
            "none of your deposit in this channel", channel_id=channel_id)
    if accepted:
        return None
    return FailedPrecondition(terms_text(channel, hold, back, label),
                              channel_id=channel_id, depositsBack=amounts_json(back, label))


def terms_text(channel: Channel, hold: Hold, back: Amounts, label: AssetLabel) -> str:
    """The refusal of a forced close not yet accepted: what it would do, plainly."""
    return (f"the chain no longer holds the peer's deposit in this channel ({hold.text()}). "
            "A forced close now pays each side back exactly what it deposited, not its "
            "balance (the Adjudicator's rule for a channel that holds less than its state): "
            f"you would get back {outcome_text(channel, back, label)}. Nothing was done: to "
            f"close on these terms give {ACCEPT_PARAM}: true with force, or wait for the "
            "peer to deposit again (the close then pays the balances)")


def outcome_text(channel: Channel, back: Amounts, label: AssetLabel) -> str:
    """`5 ETH (your balance is 6 ETH: the 1 ETH the peer paid you is forfeited)`, per asset."""
    state = channel.latest
    balances = {asset: row[channel.index]
                for asset, row in zip(state.assets, state.balances, strict=True)}
    parts = []
    for asset, amount in back:
        balance = balances.get(asset, 0)

        def text(units: int, asset: Address = asset) -> str:
            return asset_text(units, *label(asset))
        if amount < balance:
            detail = (f"your balance is {text(balance)}: the {text(balance - amount)} the peer "
                      "paid you is forfeited")
        elif amount > balance:
            detail = (f"your balance is {text(balance)}: the {text(amount - balance)} you paid "
                      "the peer comes back to you")
        else:
            detail = "your balance"
        parts.append(f"{text(amount)} ({detail})")
    return "; ".join(parts)


def amounts_json(amounts: Sequence[tuple[Address, int]], label: AssetLabel) -> dict[str, str]:
    """`{"ETH": "2.5 ETH"}`: the error data of what a forced close would pay back."""
    return {label(asset)[0]: asset_text(amount, *label(asset)) for asset, amount in amounts}


class HeldCloses:
    """The session's channels held for missing deposits, as the client meets them: they take
    no update, and close by force only on the terms of an underfunded channel (module doc)."""

    def __init__(self, missing: MissingDeposits, label: AssetLabel,
                 channel: Callable[[ChannelID], Channel | None]) -> None:
        """`channel` finds the session's channel by ID."""
        self._missing = missing
        self._label = label
        self._channel = channel

    def refusal(self, channel_id: ChannelID) -> PerundError | None:
        """Why the channel takes no update, nor a cooperative close, now (None: not held)."""
        return self._missing.refusal(channel_id)

    def deposits_back(self, channel: Channel) -> Amounts | None:
        """What a forced close of the held `channel` would pay us now (`deposits_back`); None
        when it is not held, or such a close is not possible."""
        hold = self._missing.held.get(channel.channel_id)
        if hold is None or channel.phase not in REDEPOSIT_PHASES:
            return None  # not held, or settling already
        return deposits_back(channel, hold)

    def forced_close_refusal(self, channel_id: ChannelID, accepted: bool) -> PerundError | None:
        """Why a forced close of the channel may not go ahead (None: not held, or on the
        accepted terms): `forced_close_refusal`."""
        channel = self._channel(channel_id)
        hold = self._missing.held.get(channel_id)
        refusal = self._missing.refusal(channel_id)
        if channel is None or hold is None or refusal is None:
            return None
        return forced_close_refusal(channel, hold, accepted, self._label, refusal)
