"""The payments of updates in flight, for the session's history (docs/api.md "Payment history").

An update's memo (its merged payments and their references, `perund.channel.memo`) travels
beside the signed state: the send queue notes ours, the inbox the peer's, and the store splits
the update into them when it records the state (`SessionStore.annotate`). A request that ends
without a state (our user declined it or let it expire, or the peer declined ours) is recorded
here too, since no state will ever carry it.
"""

from __future__ import annotations

from typing import Any, cast

from perund.channel.memo import Memo, NotedMemos
from perund.channel.records import Channel
from perund.channel.types import ChannelID, State
from perund.storage.payments import PaymentRecord, Status


class Memos:
    """Memos of recent updates by channel and version, handed on to the store (module doc).
    A store without a history (`MemoryStore`) is given nothing."""

    def __init__(self, store: object, clock: Any) -> None:
        self._annotate = getattr(store, "annotate", None)
        self._add = getattr(store, "add_payments", None)
        self._clock = clock
        self._noted = NotedMemos()

    def note(self, channel_id: ChannelID, version: int, memo: Memo) -> None:
        """The update to `version` carries `memo` (empty: none, and nothing noted for that
        version before, by a refused update, stays)."""
        self._noted.put((channel_id, version), memo)
        if self._annotate is not None:
            self._annotate(channel_id, version, memo)  # the store's own copy too

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
