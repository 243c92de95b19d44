"""One session's history queries take a bounded share of the reactor (`allowed_page`): a batch
of a hundred rare-filter queries, from a read-only credential, cannot freeze the node."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from perund.channel.types import ETH, Address, ChannelID
from perund.errors import FailedPrecondition
from perund.node_api import allowed_page
from perund.ratelimit import WorkAllowance
from perund.session.session import HISTORY_SCAN_RATE
from perund.storage.archive import PaymentArchive
from perund.storage.history import SCAN_BUDGET, PaymentHistory, PaymentQuery
from perund.storage.payments import PaymentRecord


def _history(sent: int) -> PaymentHistory:
    history = PaymentHistory(PaymentArchive("/nonexistent/perund-test-history"))
    peer, channel = Address(b"\x01" * 20), ChannelID(b"\x02" * 32)
    history.add([PaymentRecord(i, channel, peer, "sent", ETH, 1, i, float(i))
                 for i in range(sent)])
    return history


def test_rare_filter_queries_beyond_the_allowance_are_refused_until_it_refills() -> None:
    clock = Clock()
    allowance = WorkAllowance(clock, HISTORY_SCAN_RATE, SCAN_BUDGET)
    history = _history(3 * SCAN_BUDGET)
    nothing = PaymentQuery(direction="received")
    page = allowed_page(history, allowance, nothing, 1000, None)
    assert page.payments == [] and page.scanned == SCAN_BUDGET and page.next_cursor is not None
    # The rest of a batch is refused at once, at no cost, saying when to come back.
    with pytest.raises(FailedPrecondition, match="over their rate: try again in") as caught:
        allowed_page(history, allowance, nothing, 1000, page.next_cursor)
    assert caught.value.data["retryAfter"] == pytest.approx(1000 / HISTORY_SCAN_RATE, abs=0.1)
    clock.advance(0.2)  # 4,000 records' worth: a page of 1,000 may start, and ends early
    later = allowed_page(history, allowance, nothing, 1000, page.next_cursor)
    assert later.scanned == 4000 and later.next_cursor is not None
    clock.advance(SCAN_BUDGET / HISTORY_SCAN_RATE)
    assert allowed_page(history, allowance, nothing, 10, later.next_cursor).scanned == SCAN_BUDGET


def test_common_queries_cost_what_they_read() -> None:
    clock = Clock()
    allowance = WorkAllowance(clock, HISTORY_SCAN_RATE, SCAN_BUDGET)
    history = _history(SCAN_BUDGET)
    for _ in range(SCAN_BUDGET // 100):
        assert len(allowed_page(history, allowance, PaymentQuery(), 100, None).payments) == 100
    with pytest.raises(FailedPrecondition):
        allowed_page(history, allowance, PaymentQuery(), 100, None)
