"""What each conclusion paid our receiver, kept across restarts: per channel and asset, what the
contract paid out to us, the part of it the contract credited instead of sending (owed to our
receiver until a `withdraw` gets it, perund.session.withdrawals), and when the session saw that
credit withdrawn. The channel views show it (`paidOut`, `credited`, `withdrawn`).

Rules, stated once:

- a conclusion's payout is recorded once the channel's closed record is durable, and rides the
  next group commit: a crash in between loses it, and the channel then shows no payout, as one
  whose conclusion the node did not see (the contract keeps any credit all the same, and the
  session's withdraw at each open takes it);
- a withdraw of an asset settles the credits of that asset that were owed when it began: the
  contract's credit is one sum per receiver and asset, and a withdraw takes all of it;
- the records stay while the store keeps the channel, retired ones too (a few dozen bytes
  each, as the fee records); one that cannot be read is dropped, named in the log, not fatal:
  it only describes what the chain did (the contract keeps the credit itself).
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger

from perund.channel.types import Address, ChannelID
from perund.errors import StoreCorrupt
from perund.storage import ChannelStore
from perund.storage.payout_records import (
    PAYOUT_PREFIX,
    AssetPayout,
    decode_payout,
    encode_payout,
    payout_name,
)

log = Logger(namespace="perund.session")


class Payouts:
    """The payouts of one session's concluded channels (module doc), in its store."""

    def __init__(self, store: ChannelStore) -> None:
        self._store = store
        self._rows: dict[ChannelID, dict[Address, AssetPayout]] = {}
        for name, value in store.metas(PAYOUT_PREFIX).items():
            try:
                channel_id = ChannelID(bytes.fromhex(name[len(PAYOUT_PREFIX):]))
                self._rows[channel_id] = decode_payout(value)
            except (ValueError, StoreCorrupt) as exc:
                log.warn("dropping the unreadable payout record {name} ({why})", name=name,
                         why=exc)
                store.delete_meta(name)

    def concluded(self, channel_id: ChannelID, paid: Iterable[tuple[Address, int]],
                  credited: Iterable[tuple[Address, int]]) -> None:
        """The conclusion of `channel_id` paid us `paid` per asset, of which the contract
        `credited` the part it could not send."""
        held = dict(credited)
        rows = {asset: AssetPayout(amount, held.get(asset, 0)) for asset, amount in paid}
        self._rows[channel_id] = rows
        self._store.set_meta(payout_name(channel_id), encode_payout(rows))

    def of(self, channel_id: ChannelID) -> dict[Address, AssetPayout] | None:
        """The payout of `channel_id` per asset, or None when the session never saw it."""
        rows = self._rows.get(channel_id)
        return None if rows is None else dict(rows)

    def owed(self, asset: Address) -> set[ChannelID]:
        """The channels whose credit in `asset` is still owed."""
        return {channel_id for channel_id, rows in self._rows.items()
                if asset in rows and rows[asset].owed}

    def withdrawn(self, asset: Address, channels: Iterable[ChannelID], at: int) -> None:
        """A withdraw that began while `channels` were owed `asset` got it (or found nothing
        owed any more): their credits are settled, at unix second `at`."""
        for channel_id in channels:
            rows = self._rows.get(channel_id)
            if rows is None or asset not in rows or not rows[asset].owed:
                continue
            row = rows[asset]
            rows[asset] = AssetPayout(row.paid, row.credited, at)
            self._store.set_meta(payout_name(channel_id), encode_payout(rows))
