"""The Prometheus text exposition of the node's counters and gauges."""

from __future__ import annotations

import pytest

from perund.metrics import COUNTERS, FSYNC_BOUNDS, GAUGES, Histogram, Metrics, Sample


def test_counters_and_gauges_render_in_the_text_format() -> None:
    metrics = Metrics()
    metrics.inc("perund_channel_states_total", source="own")
    metrics.inc("perund_channel_states_total", 2, source="own")
    metrics.inc("perund_api_call_seconds_total", 0.25, method="node_time")
    metrics.inc("perund_updates_failed_total", failure='odd "name"\\')
    text = metrics.render([Sample("perund_channels", {"phase": "open"}, 3)])
    lines = text.splitlines()
    assert 'perund_channel_states_total{source="own"} 3' in lines
    assert 'perund_api_call_seconds_total{method="node_time"} 0.25' in lines
    assert 'perund_updates_failed_total{failure="odd \\"name\\"\\\\"} 1' in lines
    assert 'perund_channels{phase="open"} 3' in lines
    # Every metric is described, counters and gauges, each once.
    for name in (*COUNTERS, *GAUGES):
        assert lines.count(f"# HELP {name} {(COUNTERS | GAUGES)[name]}") == 1
        kind = "counter" if name in COUNTERS else "gauge"
        assert lines.count(f"# TYPE {name} {kind}") == 1
    assert text.endswith("\n")
    assert metrics.value("perund_channel_states_total", source="own") == 3


def test_unknown_counters_are_refused() -> None:
    with pytest.raises(KeyError):
        Metrics().inc("perund_typo_total")


def test_a_histogram_renders_cumulative_buckets_its_sum_and_count() -> None:
    fsyncs = Histogram((0.001, 0.01))
    for seconds in (0.0005, 0.001, 0.002, 0.5):  # a value on a bound counts in that bucket
        fsyncs.add(seconds)
    lines = Metrics().render([], {"perund_store_fsync_seconds": fsyncs}).splitlines()
    at = lines.index("# TYPE perund_store_fsync_seconds histogram")
    assert lines[at + 1:at + 6] == [
        'perund_store_fsync_seconds_bucket{le="0.001"} 2',
        'perund_store_fsync_seconds_bucket{le="0.01"} 3',
        'perund_store_fsync_seconds_bucket{le="+Inf"} 4',
        "perund_store_fsync_seconds_sum 0.5035",
        "perund_store_fsync_seconds_count 4",
    ]
    assert fsyncs.mean == pytest.approx(0.5035 / 4)


def test_a_histogram_nobody_observed_renders_empty_and_merges_add_up() -> None:
    lines = Metrics().render().splitlines()
    assert 'perund_store_fsync_seconds_bucket{le="+Inf"} 0' in lines
    assert "perund_store_fsync_seconds_count 0" in lines
    one, other = Histogram(FSYNC_BOUNDS), Histogram(FSYNC_BOUNDS)
    one.add(0.0002)
    other.add(0.003)
    other.add(2.0)
    one.merge(other)
    assert (one.count, one.total) == (3, pytest.approx(2.0032))
    assert sum(one.counts) == 3 and one.counts[-1] == 1
    with pytest.raises(ValueError):
        one.merge(Histogram((1.0,)))
