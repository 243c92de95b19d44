"""On-chain duties of a channel client: funding new channels, sending settlement transactions.

Rules, stated once:

- a channel in funding has one funding under way (our deposits, then the wait for the peer's);
  it ends in `Funded` or `FundingExpired`, fed to the core, and is cancelled when the channel
  leaves funding otherwise (the peer registered, the user closed) or the client stops;
- a settlement transaction (register, concludeFinal, conclude) is sent for a channel that is
  not settled yet; the conclusion it shows is fed to the core (`Concluded`), and so is the
  registration a chain holds already (`Registered`: a core whose conclusion went with a
  reorganisation learns its dispute again);
- one that the contract refused (TxReverted) is not sent again: what the chain did instead
  reaches the core through the watcher;
- one that failed otherwise is sent again for as long as the channel settles: the money
  depends on it, and a chain node's errors are mostly passing ones (unreachable, not mined in
  time, "header not found" from a load balancer, a reply cut short, no funds for gas). The n-th
  retry waits n times `Timing.settle_retry_delay`, at most `SETTLE_RETRY_CAP` seconds. What
  the transaction reads first (the channel's status) keeps a retry from sending it twice.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, Final

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from perund.channel import events as ev
from perund.channel.changes import Change, Concluded, Funded, FundingExpired, Registered
from perund.channel.phases import TERMINAL
from perund.channel.records import Channel
from perund.channel.types import ChannelID
from perund.errors import (
    FailedPrecondition,
    InsufficientFunds,
    PeerNotFunded,
    PerundError,
    ProtocolError,
    TxReverted,
)
from perund.session.ports import Funder, Settler
from perund.session.timing import Timing
from perund.session.virtual_onchain import ConcludeParent, RegisterVirtual

log = Logger(namespace="perund.client")

SETTLE_RETRY_CAP: Final = 60.0
"""The longest wait, in seconds, before a settlement transaction is sent again."""

OnChain = ev.Register | ev.ConcludeFinal | ev.Conclude | RegisterVirtual | ConcludeParent
"""The settlement transactions: the core's events, and the virtual-channel calls the client's
virtual parts make of them (`perund.session.virtual_onchain`)."""


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _our_deposit_failed(exc: Exception, channel_id: ChannelID) -> PerundError:
    """Why our own deposit failed, told as such rather than blamed on the peer. A chain error
    (no funds for it, the chain down or refusing it) keeps its code and data, so the user sees
    a chain outage as one, not as a mistake of theirs."""
    message = f"our deposit failed: {exc}"
    if isinstance(exc, ProtocolError) and exc.code != PerundError.code:
        told = copy.copy(exc)
        told.args, told.message = (message,), message
        told.data = {**exc.data, "channel_id": _hex(channel_id)}
        return told
    data = exc.data if isinstance(exc, PerundError) else {}
    return FailedPrecondition(message, **{**data, "channel_id": _hex(channel_id)})


def _log_failure(failure: Failure, what: str) -> None:
    log.failure("executing {event} failed", failure, event=what)


class ChainDuties:
    """Funding and settlement for the client's channels (module doc); what comes of them is fed
    to the core with `apply(channel_id, change)`."""

    def __init__(self, reactor: Any, *, funder: Funder, settler: Settler, timing: Timing,
                 channels: Mapping[ChannelID, Channel],
                 apply: Callable[[ChannelID, Change], None]) -> None:
        self._reactor = reactor
        self._funder = funder
        self._settler = settler
        self._timing = timing
        self._channels = channels
        self._apply = apply
        self._funding: dict[ChannelID, Deferred[None]] = {}
        """Funding under way (deposits, then waiting for the peer's), per channel."""
        self._funding_errors: dict[ChannelID, PerundError] = {}
        """Why our own deposit failed, until the user who waits for the channel is told."""
        self.stopped = False

    # -- funding --------------------------------------------------------------------------------

    def fund(self, e: ev.Fund) -> None:
        """Fund the channel (`ev.Fund`); `Funded` or `FundingExpired` follows."""
        Deferred.fromCoroutine(self._fund(e)).addErrback(_log_failure, "fund")

    async def _fund(self, e: ev.Fund) -> None:
        funding = self._funder.fund(e)
        self._funding[e.channel_id] = funding
        try:
            await funding
        except Exception as exc:
            self._funding.pop(e.channel_id, None)
            if self.stopped or isinstance(exc, CancelledError):
                return
            log.warn("channel {channel_id} was not funded: {why}",
                     channel_id=_hex(e.channel_id), why=str(exc))
            if not isinstance(exc, PeerNotFunded):
                self._funding_errors[e.channel_id] = _our_deposit_failed(exc, e.channel_id)
            self._apply(e.channel_id, FundingExpired())
        else:
            self._funding.pop(e.channel_id, None)
            self._apply(e.channel_id, Funded())

    def funding_over(self, channel_id: ChannelID) -> None:
        """The channel left funding otherwise (the peer registered, the user closed): stop
        waiting for deposits that no longer matter."""
        funding = self._funding.pop(channel_id, None)
        if funding is not None:
            funding.cancel()

    def funding_error(self, channel_id: ChannelID) -> PerundError | None:
        """Why our own deposit failed, if it did (told once)."""
        return self._funding_errors.pop(channel_id, None)

    # -- settlement -----------------------------------------------------------------------------

    def settle(self, e: OnChain) -> None:
        """Send the transaction `e` asks for (again, while it fails for a passing reason)."""
        Deferred.fromCoroutine(self._settle(e, 0)).addErrback(_log_failure, type(e).__name__)

    async def _settle(self, e: OnChain, attempt: int) -> None:
        channel = self._channels.get(e.channel_id)
        if self.stopped or channel is None or channel.phase in TERMINAL:
            return
        sent: Deferred[Concluded | None] | Deferred[Concluded | Registered | None]
        if isinstance(e, ev.Register):
            what, sent = "register", self._settler.register(e)
        elif isinstance(e, ev.ConcludeFinal):
            what, sent = "concludeFinal", self._settler.conclude_final(e)
        elif isinstance(e, RegisterVirtual):
            what, sent = "registerVirtualState", self._settler.register_virtual(e)
        elif isinstance(e, ConcludeParent):
            what, sent = "concludeParentState", self._settler.conclude_parent(e)
        else:
            what, sent = "conclude", self._settler.conclude(e)
        try:
            concluded = await sent
        except TxReverted as exc:
            if not self.stopped:
                # The contract refused it (a higher version is registered, the challenge
                # period is over, ...); what the chain did instead reaches the core through
                # the watcher.
                log.warn("{what} for channel {channel_id} reverted: {error}", what=what,
                         channel_id=_hex(e.channel_id), error=str(exc))
        except CancelledError:
            return
        except Exception as exc:
            if self.stopped:
                return
            delay = min(self._timing.settle_retry_delay * (attempt + 1), SETTLE_RETRY_CAP)
            if isinstance(exc, PerundError):
                # Out of funds needs the operator: an error, not a warning.
                level = log.error if isinstance(exc, InsufficientFunds) else log.warn
                level("{what} for channel {channel_id} failed ({error}); retrying in {delay} s",
                      what=what, channel_id=_hex(e.channel_id), delay=delay, error=str(exc))
            else:  # a bug of ours: its traceback, and still the retry the money needs
                log.failure("{what} for channel {channel_id} failed; retrying in {delay} s",
                            what=what, channel_id=_hex(e.channel_id), delay=delay)
            self._reactor.callLater(delay, self._retry_settle, e, attempt + 1)
        else:
            if concluded is not None and e.channel_id in self._channels:
                self._apply(e.channel_id, concluded)

    def _retry_settle(self, e: OnChain, attempt: int) -> None:
        Deferred.fromCoroutine(self._settle(e, attempt)).addErrback(_log_failure,
                                                                    type(e).__name__)

    def stop(self) -> None:
        """Act no more: fundings under way are cancelled (`Restored` funds again at the next
        start), failed transactions are not sent again."""
        self.stopped = True
        for funding in list(self._funding.values()):
            funding.cancel()
        self._funding.clear()
