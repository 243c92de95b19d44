"""The Prometheus text exposition of the node's counters and gauges."""

from __future__ import annotations

import pytest

from perund.metrics import COUNTERS, GAUGES, Metrics, Sample


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
