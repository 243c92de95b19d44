"""A session's intermediary fees (docs/protocol.md "Intermediary fees"): the fee each virtual
channel we opened pays in its lock, until the lock is signed, and the fees earned and paid per
ledger channel once they moved. Kept in the store's meta records
(`perund.storage.fee_records`), written in the same reactor turn as the states they go with, so
one group commit holds both.
"""

from __future__ import annotations

from perund.channel.types import Address, ChannelID
from perund.storage import ChannelStore
from perund.storage.fee_records import (
    LEDGER_FEES_PREFIX,
    LOCK_FEE_PREFIX,
    decode_ledger_fees,
    decode_lock_fee,
    encode_ledger_fees,
    encode_lock_fee,
    ledger_fees_name,
    lock_fee_name,
)


class FeeBook:
    """Fees of one session: `offer`/`offered`/`settled` for the fee of our own locks,
    `record` and `totals` for what moved in each ledger."""

    def __init__(self, store: ChannelStore) -> None:
        self._store = store
        self._offers: dict[ChannelID, tuple[int, ...]] = {
            ChannelID(bytes.fromhex(name[len(LOCK_FEE_PREFIX):])): decode_lock_fee(value)
            for name, value in store.metas(LOCK_FEE_PREFIX).items()}
        self._ledgers: dict[ChannelID, dict[Address, tuple[int, int]]] = {
            ChannelID(bytes.fromhex(name[len(LEDGER_FEES_PREFIX):])): decode_ledger_fees(value)
            for name, value in store.metas(LEDGER_FEES_PREFIX).items()}

    def offer(self, virtual_id: ChannelID, fee: tuple[int, ...]) -> None:
        """Remember that our lock of `virtual_id` pays `fee` (nothing kept for no fee)."""
        if any(fee):
            self._offers[virtual_id] = fee
            self._store.set_meta(lock_fee_name(virtual_id), encode_lock_fee(fee))

    def offered(self, virtual_id: ChannelID) -> tuple[int, ...]:
        """The fee our lock of `virtual_id` pays (empty: none)."""
        return self._offers.get(virtual_id, ())

    def settled(self, virtual_id: ChannelID) -> tuple[int, ...]:
        """Our lock of `virtual_id` is signed or failed: forget its fee, and return it."""
        fee = self._offers.pop(virtual_id, ())
        if fee:
            self._store.delete_meta(lock_fee_name(virtual_id))
        return fee

    def record(self, ledger_id: ChannelID, assets: tuple[Address, ...], fee: tuple[int, ...],
               *, earned: bool) -> None:
        """A fee moved in ledger `ledger_id` (`fee[a]` of `assets[a]`): we `earned` it as
        intermediary, or paid it as opener."""
        if not any(fee):
            return
        totals = self._ledgers.setdefault(ledger_id, {})
        for asset, amount in zip(assets, fee, strict=True):
            if amount:
                got, gave = totals.get(asset, (0, 0))
                totals[asset] = (got + amount, gave) if earned else (got, gave + amount)
        self._store.set_meta(ledger_fees_name(ledger_id), encode_ledger_fees(totals))

    def totals(self, ledger_id: ChannelID) -> dict[Address, tuple[int, int]]:
        """The fees earned and paid in ledger `ledger_id`, per asset: (earned, paid)."""
        return dict(self._ledgers.get(ledger_id, {}))

    def sums(self) -> dict[Address, tuple[int, int]]:
        """The fees earned and paid over all our ledgers, per asset: (earned, paid)."""
        sums: dict[Address, tuple[int, int]] = {}
        for totals in self._ledgers.values():
            for asset, (earned, paid) in totals.items():
                got, gave = sums.get(asset, (0, 0))
                sums[asset] = (got + earned, gave + paid)
        return sums
