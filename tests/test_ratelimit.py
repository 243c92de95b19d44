"""The rate-limited warning: one line per interval, with how many events it stands for, and
with the caller's own fields (even one named `count`) formatted as given."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent

from perund.ratelimit import WARN_INTERVAL, RateLimitedWarning


def _warning() -> tuple[Clock, RateLimitedWarning, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    clock = Clock()
    return clock, RateLimitedWarning(clock, Logger(observer=events.append)), events


def test_a_flood_is_one_line_per_interval_counting_the_events() -> None:
    clock, warning, events = _warning()
    for _ in range(5):
        warning.warn("refused {counted}", "thing")
    clock.advance(WARN_INTERVAL / 2)
    warning.warn("refused {counted}", "thing")
    clock.advance(WARN_INTERVAL / 2)
    warning.warn("refused {counted}", "thing")
    assert [formatEvent(e) for e in events] == ["refused 1 thing", "refused 6 things"]
    assert [e["times"] for e in events] == [1, 6]  # the number, for machines


def test_a_counted_noun_may_have_a_plural_of_its_own() -> None:
    clock, warning, events = _warning()
    noun = ("connection of an unknown peer", "connections of unknown peers")
    warning.warn("refused {counted}", noun)
    clock.advance(WARN_INTERVAL)
    warning.warn("refused {counted}", noun)
    warning.warn("refused {counted}", noun)
    clock.advance(WARN_INTERVAL)
    warning.warn("refused {counted}", noun)
    assert [formatEvent(e) for e in events] == [
        "refused 1 connection of an unknown peer", "refused 1 connection of an unknown peer",
        "refused 2 connections of unknown peers"]


def test_the_callers_fields_are_formatted_even_one_named_count() -> None:
    _, warning, events = _warning()
    warning.warn("refused {times}: {count} connected, the last {peer}", count=7, peer="0xab")
    assert [formatEvent(e) for e in events] == ["refused 1: 7 connected, the last 0xab"]


def test_allowances_per_party_forget_the_idle_ones_first() -> None:
    from perund.ratelimit import Allowances

    clock = Clock()
    allowances = Allowances(clock, rate=1.0, burst=2, kept=2)
    allowances.of("a").spend(2)
    allowances.of("b")  # idle: full
    assert allowances.of("a").available() == 0  # the same allowance again
    allowances.of("c")  # past `kept`: b (idle) goes, a (spent) stays
    assert allowances.of("a").available() == 0
    allowances.of("b").spend(1)  # made afresh, full again before spending
    assert allowances.of("b").available() == 1


def test_a_line_budget_logs_the_first_lines_of_an_interval_and_counts_the_rest() -> None:
    from twisted.internet.task import Clock
    from twisted.logger import Logger, capturedLogs, formatEvent

    from perund.ratelimit import LineBudget

    clock = Clock()
    budget = LineBudget(clock, Logger(), "dropped peer connection", lines=3, interval=10.0)
    with capturedLogs() as events:
        assert [budget.take() for _ in range(1000)] == [True] * 3 + [False] * 997
        clock.advance(10.0)
        assert budget.take()
    assert [formatEvent(e) for e in events] == [
        "997 more dropped peer connections were not logged (at most 3 lines in 10.0 s)"]
    with capturedLogs() as events:
        assert [budget.take() for _ in range(3)] == [True, True, False]
        clock.advance(10.0)
        assert budget.take()
    assert [formatEvent(e) for e in events] == [
        "1 more dropped peer connection was not logged (at most 3 lines in 10.0 s)"]
