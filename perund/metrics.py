"""Counters the node keeps, and their exposition in the Prometheus text format (0.0.4).

Counters count events as they happen (`inc`); gauges are read from the node's state when it is
scraped, so they cost nothing in between. `GET /metrics` on the API listener serves `render`,
behind the same bearer token as the API (Prometheus' `authorization` setting sends it).
Label values come only from fixed sets (method names the API knows, phases, failure kinds), so
no caller can grow the number of series.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Sample:
    """One value of one series at scrape time."""

    name: str
    labels: Mapping[str, str]
    value: float


COUNTERS: dict[str, str] = {
    "perund_api_calls_total": "JSON-RPC calls answered, by method and outcome (ok or the code)",
    "perund_api_call_seconds_total": "time spent answering JSON-RPC calls, by method",
    "perund_channel_states_total": "new fully signed states, by who proposed them "
                                   "(own, peer, sync)",
    "perund_updates_failed_total": "our updates that did not complete, by why",
    "perund_disputes_total": "registrations seen on-chain for our channels",
    "perund_channels_closed_total": "channels concluded on-chain",
    "perund_conflicts_total": "peers holding a different fully signed state of one version",
    "perund_payments_total": "payments recorded in the sessions' histories, by direction, "
                             "currency and status",
    "perund_payment_amount_total": "the amounts of the paid ones, in the currency's unit, by "
                                   "direction and currency",
}

GAUGES: dict[str, str] = {
    "perund_sessions": "open sessions",
    "perund_sessions_store_failed": "open sessions whose store cannot make writes durable "
                                    "(they sign nothing until the node restarts)",
    "perund_sessions_reopen_waiting": "sessions the node could not open again at its start "
                                      "for a chain error, waiting for their next try (their "
                                      "channels are not watched meanwhile)",
    "perund_sessions_disk_low": "open sessions whose store's disk has less free space than "
                                "limits.min_free_disk (they take no payments meanwhile)",
    "perund_channels": "channels of the open sessions, by phase",
    "perund_peers_connected": "authenticated peer connections",
    "perund_channels_resyncing": "channels that wait, since the node started, for their peer's "
                                 "Sync before they sign anything (docs/protocol.md, Restart)",
    "perund_channels_challenge_at_risk": "open channels whose challenge duration is less than "
                                         "twice the time answering a dispute would take at "
                                         "the chain's current answering time "
                                         "(perund.challenge_watch)",
    "perund_watcher_polls": "completed polls of the chain watchers (since their sessions opened)",
    "perund_watcher_reorgs": "reorganisations deeper than chain.confirmations the watchers saw",
    "perund_chain_reads": "reads the watchers made of the chain (shared across sessions)",
    "perund_transactions": "transactions the open sessions sent",
    "perund_gas_fees_wei": "wei the open sessions paid for gas",
    "perund_intermediary_fees": "intermediary fees of the open sessions' ledger channels, in "
                                "the currency's unit, by direction (earned, paid) and currency",
    "perund_token_disabled": "1 for a configured token that failed its check at the node's "
                             "start (no channel is opened, accepted or funded in it), by "
                             "currency",
}

HISTOGRAMS: dict[str, str] = {
    "perund_store_fsync_seconds": "how long the sessions' store commits took to fsync (on the "
                                  "payment path: the payee's fsync is part of every "
                                  "payment's round trip)",
    "perund_chain_call_seconds": "how long the chain node took to answer each JSON-RPC "
                                 "exchange (answered or failed)",
}

FSYNC_BOUNDS: tuple[float, ...] = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
                                   0.05, 0.1, 0.25, 1.0)
"""Bucket bounds of perund_store_fsync_seconds: an SSD's 50 µs to a failing disk's second."""

CALL_BOUNDS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                                  5.0, 10.0, 30.0)
"""Bucket bounds of perund_chain_call_seconds: a local node's millisecond to a cut-off call."""

HISTOGRAM_BOUNDS: dict[str, tuple[float, ...]] = {
    "perund_store_fsync_seconds": FSYNC_BOUNDS,
    "perund_chain_call_seconds": CALL_BOUNDS,
}


class Histogram:
    """Observed durations in buckets with fixed upper bounds (Prometheus' histogram: the
    exposition's buckets are cumulative), with their count and sum. Adding is a bisect and
    three additions, cheap enough for every fsync."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        """Observations per bucket (not cumulative); the last is above every bound."""
        self.count = 0
        self.total = 0.0
        """The sum of every observation."""

    def add(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def merge(self, other: Histogram) -> None:
        """Add `other`'s observations (same bounds) to these."""
        if other.bounds != self.bounds:
            raise ValueError("histograms with different bounds")
        for index, count in enumerate(other.counts):
            self.counts[index] += count
        self.count += other.count
        self.total += other.total

    @property
    def mean(self) -> float:
        """The mean observation (0 if none)."""
        return self.total / self.count if self.count else 0.0


class Metrics:
    """The node's counters; `render(gauges)` writes them and the gauges out."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, Labels], float] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to counter `name` with `labels` (a name from COUNTERS)."""
        if name not in COUNTERS:
            raise KeyError(f"unknown counter {name}")
        key = (name, tuple(sorted(labels.items())))
        self._counters[key] = self._counters.get(key, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        """A counter's value (0 if never incremented)."""
        return self._counters.get((name, tuple(sorted(labels.items()))), 0.0)

    def render(self, gauges: Iterable[Sample] = (),
               histograms: Mapping[str, Histogram] | None = None) -> str:
        """Every counter, the given gauge samples and histograms (names from HISTOGRAMS), in
        the Prometheus text format."""
        by_name: dict[str, list[tuple[Labels, float]]] = {}
        for (name, labels), value in self._counters.items():
            by_name.setdefault(name, []).append((labels, value))
        gauge_samples: dict[str, list[tuple[Labels, float]]] = {}
        for sample in gauges:
            gauge_samples.setdefault(sample.name, []).append(
                (tuple(sorted(sample.labels.items())), sample.value))
        lines: list[str] = []
        for kind, described, samples in (("counter", COUNTERS, by_name),
                                         ("gauge", GAUGES, gauge_samples)):
            for name, text in described.items():
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                for labels, value in sorted(samples.get(name, [])):
                    lines.append(f"{name}{_labels(labels)} {_number(value)}")
        for name, text in HISTOGRAMS.items():
            lines.append(f"# HELP {name} {text}")
            lines.append(f"# TYPE {name} histogram")
            histogram = (histograms or {}).get(name) or Histogram(HISTOGRAM_BOUNDS[name])
            cumulative = 0
            for bound, count in zip((*histogram.bounds, None), histogram.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound is None else repr(bound)
                lines.append(f'{name}_bucket{{le="{le}"}} {cumulative}')
            lines.append(f"{name}_sum {_number(histogram.total)}")
            lines.append(f"{name}_count {histogram.count}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(value)}"' for key, value in labels)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
