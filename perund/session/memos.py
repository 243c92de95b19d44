"""The payments of updates in flight, for the session's history (docs/api.md "Payment history").

An update's memo (its merged payments and their references, `perund.channel.memo`) travels
beside the signed state: the send queue notes ours, the inbox the peer's, and the store splits
the update into them when it records the state (`SessionStore.annotate`). A request that ends
without a state (our user declined it or let it expire, or the peer declined ours) is recorded
here too, since no state will ever carry it.

The memo of an update of ours that says more than its net (merged payments, a reference) is
also written to the store (`perund.storage.memo_records`, riding the group commit: no fsync):
a node killed while the update is in flight learns at its restart, from the peer's Sync, that
the peer countersigned it, and the history then still has its parts and references
(`restore`). The record of a channel goes when its next update of ours is noted, or at the
restart after its state is recorded. The peer's memo needs no record: its state is recorded
in the same commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from twisted.logger import Logger

from perund.channel.memo import Memo, NotedMemos
from perund.channel.records import Channel
from perund.channel.types import ChannelID, State
from perund.errors import StoreCorrupt
from perund.storage import memo_records
from perund.storage.payments import PaymentRecord, Status

log = Logger(namespace="perund.client")


class Memos:
    """Memos of recent updates by channel and version, handed on to the store (module doc).
    A store without a history (`MemoryStore`) is given nothing."""

    def __init__(self, store: object, clock: Any) -> None:
        self._annotate = getattr(store, "annotate", None)
        self._add = getattr(store, "add_payments", None)
        self._store = store if self._annotate is not None else None
        self._clock = clock
        self._noted = NotedMemos()
        self._kept: dict[ChannelID, int] = {}
        """The version of each channel's memo record (module doc)."""

    def note(self, channel_id: ChannelID, version: int, memo: Memo, ours: bool = False) -> None:
        """The update to `version` carries `memo` (empty: none, and nothing noted for that
        version before, by a refused update, stays); `ours`: we send it, and a memo that
        says more than its net is kept in the store until the channel's next update."""
        self._noted.put((channel_id, version), memo)
        if self._annotate is not None:
            self._annotate(channel_id, version, memo)  # the store's own copy too
        # The payment path's common case (one payment, no reference) costs two tests here.
        if ours and self._store is not None and (channel_id in self._kept
                                                 or memo_records.worth_keeping(memo)):
            self._keep(channel_id, version, memo)

    def _keep(self, channel_id: ChannelID, version: int, memo: Memo) -> None:
        store = cast(Any, self._store)
        # Our update to `version` means every earlier one of the channel is settled.
        kept = self._kept.pop(channel_id, None)
        if kept is not None:
            store.delete_meta(memo_records.memo_name(channel_id, kept))
        if memo_records.worth_keeping(memo):
            store.set_meta(memo_records.memo_name(channel_id, version),
                           memo_records.encode_memo(memo))
            self._kept[channel_id] = version

    def restore(self, channels: Mapping[ChannelID, Channel]) -> None:
        """After a restart: take back the memos of our updates that may have been
        countersigned (newer than the channel's recorded state), drop the others' records."""
        if self._store is None:
            return
        store = cast(Any, self._store)
        for name, raw in store.metas(memo_records.PREFIX).items():
            named = memo_records.parse_name(name)
            channel = channels.get(named[0]) if named is not None else None
            if named is None or channel is None or channel.current is None \
                    or channel.current.state.version >= named[1]:
                store.delete_meta(name)
                continue
            try:
                memo = memo_records.decode_memo(raw)
            except StoreCorrupt:
                log.warn("dropped an unreadable memo record {name}", name=name[:80])
                store.delete_meta(name)
                continue
            channel_id, version = named
            self.note(channel_id, version, memo)
            self._kept[channel_id] = version

    def of(self, channel_id: ChannelID, version: int) -> Memo:
        """The memo noted for the update to `version`, if any."""
        return self._noted.get((channel_id, version))

    def declined(self, channel: Channel, update_id: bytes, status: Status) -> None:
        """Our user declined (or let expire) the peer's update `update_id`, staged on
        `channel`: if it was a request, record it so."""
        staged = channel.staged
        if staged is not None and staged.update_id == update_id \
                and staged.proposer != channel.index:
            self.unpaid(channel, staged.state, False, status)

    def unpaid(self, channel: Channel, proposed: State, we_proposed: bool,
               status: Status) -> None:
        """The request of `proposed` (an update of `channel` that was not applied) ended
        without payment: record it, per asset, as `status` (rejected or expired). Updates that
        would not have lowered the balance of their party not proposing it are no requests."""
        if self._add is None or channel.current is None:
            return
        payer = 1 - channel.index if we_proposed else channel.index
        before = channel.current.state.balances
        amounts = [was[payer] - row[payer] for was, row in zip(before, proposed.balances,
                                                               strict=True)]
        if not any(amount > 0 for amount in amounts) or any(amount < 0 for amount in amounts):
            return
        memo = self.of(channel.channel_id, proposed.version)
        reference = memo[0].reference if len(memo) == 1 else None
        now = cast(float, self._clock.seconds())
        self._add([PaymentRecord(0, channel.channel_id, channel.peer,
                                 "received" if we_proposed else "sent", asset, amount, None,
                                 now, True, status, reference)
                   for asset, amount in zip(proposed.assets, amounts, strict=True) if amount])
