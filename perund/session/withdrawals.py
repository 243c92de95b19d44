"""Payouts the Adjudicator holds for us: a conclusion could not send them to our receiver (the
receiver, or the token, refused the transfer), so the contract credited them for a `withdraw`
(docs/contract.md, "Payout rule"). The session withdraws them itself.

Rules, stated once:

- when a conclusion credits our receiver, and when the session opens (for every asset the node
  knows: a credit made while the node was down, or whose withdraw never went through), the
  session reads what the contract owes us and withdraws it;
- a withdraw that fails (the transfer is refused again, the chain is away) is tried again after
  `RETRY_FIRST` seconds, then after twice as long each time, at most `RETRY_MOST` apart, for as
  long as the session is open; one withdraw per asset at a time;
- what the contract owes is read from the contract each time; the store keeps only which
  conclusions' credits are still owed (perund.session.payouts): a withdraw that got an asset,
  or found nothing owed in it any more, settles the credits of that asset owed when it began;
- a credit that comes while a withdraw of its asset runs is withdrawn by another one right after
  (the running one may have read what is owed before it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.channel import events as ev
from perund.channel.types import Address, ChannelID, hex_address
from perund.session.chain_check import AssetLabel, default_label
from perund.session.notices import ChannelNotice, Notice
from perund.session.payouts import Payouts
from perund.words import asset_text

log = Logger(namespace="perund.session")

RETRY_FIRST: Final = 60.0
RETRY_MOST: Final = 3600.0


class Withdrawer(Protocol):
    """The chain side: what the contract owes our receiver, and its withdraw."""

    def withdraw_owed(self, asset: Address) -> Deferred[int]:
        """Withdraw what the contract owes our receiver in `asset`; fires with the amount
        received (0 when nothing was owed), fails when the withdraw does."""


class Withdrawals:
    """Withdraws what the Adjudicator credited to our receiver (module docstring). Observe the
    client with `observe`; `check(assets)` once the session is open; `stop` at its close."""

    def __init__(self, reactor: Any, withdrawer: Withdrawer,
                 label: AssetLabel = default_label, payouts: Payouts | None = None) -> None:
        """`label` names assets in the log (the node's currency table); `payouts` learns which
        credits were withdrawn."""
        self._reactor = reactor
        self._withdrawer = withdrawer
        self._label = label
        self._payouts = payouts
        self._running: set[Address] = set()
        self._again: set[Address] = set()
        self._retries: dict[Address, Any] = {}
        self._stopped = False

    def observe(self, notice: Notice) -> None:
        """A client observer: a conclusion that credited our receiver starts a withdraw."""
        if not isinstance(notice, ChannelNotice) or not isinstance(notice.event, ev.Closed):
            return
        for asset, amount in notice.event.credited:
            log.warn("channel {channel_id}: the Adjudicator could not send us {shown} (the "
                     "transfer was refused) and holds it: withdrawing it",
                     channel_id="0x" + notice.event.channel_id.hex(), amount=amount,
                     asset=hex_address(asset), shown=asset_text(amount, *self._label(asset)))
            self._attempt(asset, 0)

    def check(self, assets: Iterable[Address]) -> None:
        """Withdraw whatever the contract owes us in any of `assets`."""
        for asset in assets:
            self._attempt(asset, 0)

    def stop(self) -> None:
        """Try nothing more (the session closes)."""
        self._stopped = True
        retries, self._retries = self._retries, {}
        for call in retries.values():
            if call.active():
                call.cancel()

    def _attempt(self, asset: Address, failures: int) -> None:
        if self._stopped:
            return
        if asset in self._running:
            self._again.add(asset)
            return
        retry = self._retries.pop(asset, None)
        if retry is not None and retry.active():
            retry.cancel()  # this attempt is the retry
        self._running.add(asset)
        owed = set() if self._payouts is None else self._payouts.owed(asset)
        self._withdrawer.withdraw_owed(asset).addCallbacks(
            self._withdrawn, self._failed, callbackArgs=(asset, owed),
            errbackArgs=(asset, failures))

    def _withdrawn(self, amount: int, asset: Address, owed: set[ChannelID]) -> None:
        self._running.discard(asset)
        if amount:
            log.info("withdrew {shown} the Adjudicator held for us", amount=amount,
                     asset=hex_address(asset), shown=asset_text(amount, *self._label(asset)))
        if amount and self._payouts is not None:
            # Nothing withdrawn proves nothing (a node behind the crediting block reads 0):
            # the credits stay owed until a withdraw takes them.
            self._payouts.withdrawn(asset, owed, int(self._reactor.seconds()))
        if asset in self._again:
            self._again.discard(asset)
            self._attempt(asset, 0)

    def _failed(self, failure: Failure, asset: Address, failures: int) -> None:
        self._running.discard(asset)
        self._again.discard(asset)  # the retry below reads what is owed then
        if self._stopped:
            return
        delay = min(RETRY_MOST, RETRY_FIRST * 2 ** failures)
        log.warn("withdrawing {shown} failed ({reason}); trying again in {delay:g} s",
                 asset=hex_address(asset), shown=self._label(asset)[0],
                 reason=failure.getErrorMessage(), delay=delay)
        self._retries[asset] = self._reactor.callLater(delay, self._attempt, asset, failures + 1)
