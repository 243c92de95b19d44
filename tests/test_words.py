"""Counts, durations, amounts and times as log lines and messages show them."""

from __future__ import annotations

from perund.words import duration_text, eth_text, plural, seconds_text, units_text, utc_text


def test_a_count_has_its_noun_in_the_right_number() -> None:
    assert [plural(n, "channel") for n in (0, 1, 2)] == ["0 channels", "1 channel",
                                                          "2 channels"]
    assert plural(1, "entry", "entries") == "1 entry"
    assert plural(3, "entry", "entries") == "3 entries"


def test_durations_are_exact_in_the_largest_units() -> None:
    assert [duration_text(s) for s in (0, 45, 90, 3600, 86400 * 30, 86400 * 30 + 1)] == [
        "0 s", "45 s", "1 min 30 s", "1 h", "30 d", "30 d 1 s"]
    assert duration_text(-90) == "-1 min 30 s"


def test_a_configured_time_is_in_words_when_whole() -> None:
    """Timeouts (floats from the config): whole ones as durations, others as given."""
    assert [seconds_text(s) for s in (70.0, 600, 10.0, 0.5, 2.25)] == [
        "1 min 10 s", "10 min", "10 s", "0.5 s", "2.25 s"]


def test_amounts_have_their_unit_and_every_digit() -> None:
    assert eth_text(15 * 10**17) == "1.5 ETH"
    assert eth_text(21_000 * 10**9) == "0.000021 ETH"
    assert eth_text(0) == "0 ETH"
    assert eth_text(1) == "0.000000000000000001 ETH"
    assert units_text(-2_500_000, 6) == "-2.5"


def test_times_are_utc_iso_8601() -> None:
    assert utc_text(0) == "1970-01-01T00:00:00Z"
    assert utc_text(1_796_000_000.7) == "2026-11-30T00:53:20Z"
    assert utc_text(2**64) == f"unix time {2**64}"  # a timeout past any date
