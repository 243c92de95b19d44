"""Withdrawing what the Adjudicator credited to us, on a fake clock: at once, then again with
growing pauses while the withdraw fails, one at a time per asset, never after the stop."""

from __future__ import annotations

import itertools

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from perund.channel import events as ev
from perund.channel.types import ETH, Address, ChannelID, hex_address
from perund.errors import TxReverted
from perund.session.notices import ChannelNotice
from perund.session.payouts import Payouts
from perund.session.withdrawals import RETRY_FIRST, RETRY_MOST, Withdrawals
from perund.storage import MemoryStore
from tests.channel.factories import make_pair

TOKEN = Address(b"\x70" * 20)


class Contract:
    """What the contract owes, and a withdraw that fails while `refusing` (or stays open when
    `hold` is set, for the test to end)."""

    def __init__(self, owed: dict[Address, int]) -> None:
        self.owed = owed
        self.refusing = True
        self.hold = False
        self.asked: list[tuple[float, Address]] = []
        self.held: list[Deferred[int]] = []
        self.clock: Clock | None = None

    def withdraw_owed(self, asset: Address) -> Deferred[int]:
        assert self.clock is not None
        self.asked.append((self.clock.seconds(), asset))
        if self.hold:
            self.held.append(Deferred())
            return self.held[-1]
        if self.refusing and self.owed.get(asset):
            return fail(TxReverted("the transaction would revert: TransferFailed()"))
        amount, self.owed[asset] = self.owed.get(asset, 0), 0
        return succeed(amount)


def _world(owed: dict[Address, int]) -> tuple[Clock, Contract, Withdrawals]:
    clock = Clock()
    contract = Contract(owed)
    contract.clock = clock
    return clock, contract, Withdrawals(clock, contract)


def _closed(credited: tuple[tuple[Address, int], ...]) -> ChannelNotice:
    channel, _ = make_pair()
    paid = ((ETH, 1), *credited)
    return ChannelNotice(channel, ev.Closed(channel.channel_id, 3, paid, credited))


def test_a_credit_is_withdrawn_at_once_then_again_with_growing_pauses() -> None:
    clock, contract, withdrawals = _world({TOKEN: 5})
    withdrawals.observe(_closed(((TOKEN, 5),)))
    clock.pump([10.0] * 2_000)  # 20,000 s
    times = [t for t, _ in contract.asked]
    pauses = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert times[0] == 0 and pauses[:4] == [RETRY_FIRST, 2 * RETRY_FIRST, 4 * RETRY_FIRST,
                                            8 * RETRY_FIRST]
    assert max(pauses) == RETRY_MOST
    contract.refusing = False
    clock.pump([10.0] * 400)
    assert contract.owed[TOKEN] == 0
    asked = len(contract.asked)
    clock.advance(10 * RETRY_MOST)
    assert len(contract.asked) == asked  # done: nothing more is tried


def test_a_session_that_opens_checks_every_asset_and_one_withdraw_per_asset_runs() -> None:
    _, contract, withdrawals = _world({ETH: 0, TOKEN: 7})
    contract.hold = True
    withdrawals.check([ETH, TOKEN])
    withdrawals.observe(_closed(((TOKEN, 7),)))  # TOKEN's withdraw is running already
    assert [asset for _, asset in contract.asked] == [ETH, TOKEN]
    for d in list(contract.held):
        d.callback(0)
    # The running withdraw may have read what was owed before that credit: another one runs
    # right after it, and a credit during that one starts no third at once.
    assert [asset for _, asset in contract.asked] == [ETH, TOKEN, TOKEN]
    withdrawals.observe(_closed(((TOKEN, 7),)))
    assert [asset for _, asset in contract.asked] == [ETH, TOKEN, TOKEN]


def test_notices_without_credits_start_nothing_and_the_stop_ends_the_retries() -> None:
    clock, contract, withdrawals = _world({TOKEN: 5})
    withdrawals.observe(_closed(()))
    assert contract.asked == []
    withdrawals.observe(_closed(((TOKEN, 5),)))
    withdrawals.stop()
    clock.advance(10 * RETRY_MOST)
    assert len(contract.asked) == 1 and clock.getDelayedCalls() == []


def test_the_log_shows_amounts_in_the_currency_and_keeps_the_base_units() -> None:
    clock = Clock()
    contract = Contract({TOKEN: 25 * 10**17})
    contract.clock = clock
    contract.refusing = False
    labels = {ETH: ("ETH", 18), TOKEN: ("PRN", 18)}
    withdrawals = Withdrawals(clock, contract, lambda asset: labels[asset])
    with capturedLogs() as events:
        withdrawals.observe(_closed(((TOKEN, 25 * 10**17),)))
    shown = [formatEvent(e) for e in events]
    assert shown[0].endswith("the Adjudicator could not send us 2.5 PRN (the transfer was "
                             "refused) and holds it: withdrawing it")
    assert shown[1] == "withdrew 2.5 PRN the Adjudicator held for us"
    assert [(e["amount"], e["asset"]) for e in events] == [(25 * 10**17, hex_address(TOKEN))] * 2


def test_an_asset_without_a_currency_is_shown_in_base_units() -> None:
    _, contract, withdrawals = _world({TOKEN: 7})
    contract.refusing = False
    with capturedLogs() as events:
        withdrawals.check([TOKEN])
    assert [formatEvent(e) for e in events] == [
        f"withdrew 7 units of {hex_address(TOKEN)} the Adjudicator held for us"]


def test_a_withdraw_settles_the_credits_owed_when_it_began() -> None:
    """The session's payouts learn which credits a withdraw got: those owed when it began; a
    credit that came meanwhile is left owed, and withdrawn by the next one, right after."""
    clock = Clock()
    contract = Contract({TOKEN: 7})
    contract.clock, contract.hold = clock, True
    payouts = Payouts(MemoryStore())
    withdrawals = Withdrawals(clock, contract, payouts=payouts)
    first, second = ChannelID(b"\x01" * 32), ChannelID(b"\x02" * 32)
    payouts.concluded(first, ((TOKEN, 7),), ((TOKEN, 7),))
    withdrawals.check([TOKEN])
    payouts.concluded(second, ((TOKEN, 3),), ((TOKEN, 3),))
    withdrawals.observe(_closed(((TOKEN, 3),)))
    clock.advance(50)
    contract.held[0].callback(7)
    assert payouts.owed(TOKEN) == {second} and len(contract.held) == 2
    contract.held[1].callback(3)
    assert payouts.owed(TOKEN) == set()
    assert {p.withdrawn_at for cid in (first, second)
            for p in (payouts.of(cid) or {}).values()} == {50}
