"""What the node counts from its sessions and shows on `GET /metrics`: counters fed by the
sessions' notices and payment records, gauges read from the open sessions at scrape time, and
the histogram of the stores' fsyncs (docs/api.md, "Metrics")."""

from __future__ import annotations

from collections.abc import Mapping

from perund.api.amounts import Currencies
from perund.chain.call_times import ChainCallTimes
from perund.chain.chain_view import SharedChainView
from perund.challenge_watch import ChallengeWatch
from perund.channel import events as ev
from perund.channel.phases import RECEIVES_UPDATES, Phase
from perund.disk_guard import DiskGuard
from perund.metrics import FSYNC_BOUNDS, Histogram, Metrics, Sample
from perund.reopening import Reopener
from perund.session.notices import ChannelNotice, Notice
from perund.session.session import Session
from perund.storage.payments import PaymentRecord


class NodeMetrics:
    """The node's metrics over its `sessions` (the node's own dict, read at each scrape).

    `count` and `count_payments` are the sessions' observers; `closed` keeps a closing
    session's fsync times, so that the histogram only grows, as Prometheus expects."""

    def __init__(self, metrics: Metrics, sessions: Mapping[str, Session], reopener: Reopener,
                 disk_guard: DiskGuard, chain_view: SharedChainView, currencies: Currencies,
                 challenge_watch: ChallengeWatch, call_times: ChainCallTimes) -> None:
        self.metrics = metrics
        self._sessions = sessions
        self._reopener = reopener
        self._disk_guard = disk_guard
        self._chain_view = chain_view
        self._currencies = currencies
        self._challenge_watch = challenge_watch
        self._call_times = call_times
        self._closed_fsyncs = Histogram(FSYNC_BOUNDS)

    def count(self, notice: Notice) -> None:
        """Count a session's channel events."""
        if not isinstance(notice, ChannelNotice):
            return
        event, metrics = notice.event, self.metrics
        if isinstance(event, ev.NewState):
            metrics.inc("perund_channel_states_total", source=event.source.value)
        elif isinstance(event, ev.UpdateFailed):
            metrics.inc("perund_updates_failed_total", failure=event.failure.value)
        elif isinstance(event, ev.Disputed):
            metrics.inc("perund_disputes_total")
        elif isinstance(event, ev.Closed):
            metrics.inc("perund_channels_closed_total")
        elif isinstance(event, ev.Conflict):
            metrics.inc("perund_conflicts_total")

    def count_payments(self, records: list[PaymentRecord]) -> None:
        """Count a session's payments once they are durable."""
        for record in records:
            currency, decimals = self._currencies.label(record.asset)
            self.metrics.inc("perund_payments_total", direction=record.direction,
                             currency=currency, status=record.status)
            if record.status == "paid":
                self.metrics.inc("perund_payment_amount_total", record.amount / 10**decimals,
                                 direction=record.direction, currency=currency)

    def closed(self, session: Session) -> None:
        """`session` has closed: keep what its store measured."""
        self._closed_fsyncs.merge(session.store.fsync_times)

    def samples(self) -> list[Sample]:
        """The gauges, read from the open sessions now."""
        sessions = list(self._sessions.values())
        phases = {phase.value: 0 for phase in Phase}
        for session in sessions:
            for channel in session.client.channels.values():
                phases[channel.phase.value] += 1
        samples = [
            Sample("perund_sessions", {}, len(sessions)),
            Sample("perund_sessions_store_failed", {},
                   sum(s.client.store_error is not None for s in sessions)),
            Sample("perund_sessions_reopen_waiting", {}, self._reopener.waiting),
            Sample("perund_sessions_disk_low", {}, len(self._disk_guard.low)),
        ]
        samples += [Sample("perund_channels", {"phase": phase}, count)
                    for phase, count in phases.items()]
        samples.append(Sample("perund_channels_retired", {},
                              sum(s.store.retired_count() for s in sessions)))
        samples += [
            Sample("perund_peers_connected", {},
                   sum(len(s.peers.connected_peers()) for s in sessions)),
            # A channel that went to settlement since (a dispute settled while the node was
            # down) waits for nothing any more: its flag stays, but it is not counted.
            Sample("perund_channels_resyncing", {},
                   sum(c.resyncing and c.phase in RECEIVES_UPDATES
                       for s in sessions for c in s.client.channels.values())),
            Sample("perund_watcher_polls", {}, sum(s.watcher.polls for s in sessions)),
            Sample("perund_watcher_reorgs", {}, sum(s.watcher.reorgs for s in sessions)),
            Sample("perund_chain_reads", {}, self._chain_view.requests),
            Sample("perund_transactions", {},
                   sum(len(s.settlement.receipts) for s in sessions)),
            Sample("perund_gas_fees_wei", {}, sum(s.settlement.fees_paid for s in sessions)),
            Sample("perund_channels_challenge_at_risk", {}, self._challenge_watch.at_risk()),
        ]
        # 1 for a token the node disabled at its start (perund.node_assets): an alert's hook.
        samples += [Sample("perund_token_disabled", {"currency": c.symbol},
                           int(self._currencies.disabled(c.asset) is not None))
                    for c in self._currencies if c.symbol != "ETH"]
        fees: dict[tuple[str, str], float] = {}
        for session in sessions:
            for asset, (earned, paid) in session.client.fees.sums().items():
                currency, decimals = self._currencies.label(asset)
                for direction, amount in (("earned", earned), ("paid", paid)):
                    key = (direction, currency)
                    fees[key] = fees.get(key, 0.0) + amount / 10**decimals
        samples += [Sample("perund_intermediary_fees", {"direction": d, "currency": c}, value)
                    for (d, c), value in sorted(fees.items())]
        return samples

    def render(self) -> str:
        """`GET /metrics`: counters, gauges and histograms in the Prometheus text format."""
        fsyncs = Histogram(FSYNC_BOUNDS)
        fsyncs.merge(self._closed_fsyncs)
        for session in self._sessions.values():
            fsyncs.merge(session.store.fsync_times)
        return self.metrics.render(self.samples(),
                                   {"perund_store_fsync_seconds": fsyncs,
                                    "perund_chain_call_seconds": self._call_times.histogram()})
