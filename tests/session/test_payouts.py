"""What each conclusion paid us, in the session's store: read back after a reopen, a credit
settled by the withdraw that began while it was owed (not one that comes later), an unreadable
record dropped rather than fatal."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.task import Clock

from perund.channel.types import ETH, Address, ChannelID
from perund.session.payouts import Payouts
from perund.storage.payout_records import AssetPayout, decode_payout, encode_payout
from perund.storage.store import SessionStore

TOKEN = Address(b"\x70" * 20)
FIRST, SECOND = ChannelID(b"\x01" * 32), ChannelID(b"\x02" * 32)


def test_a_payout_record_reads_back_as_written() -> None:
    rows = {ETH: AssetPayout(5), TOKEN: AssetPayout(13 * 10**18, 13 * 10**18, 1_796_000_000)}
    assert decode_payout(encode_payout(rows)) == rows


def test_payouts_outlast_a_reopen_and_a_withdraw_settles_what_was_owed(tmp_path: Path) -> None:
    clock = Clock()
    store = SessionStore(tmp_path / "db", clock)
    payouts = Payouts(store)
    payouts.concluded(FIRST, ((ETH, 1), (TOKEN, 13)), ((TOKEN, 13),))
    store.close()

    store = SessionStore(tmp_path / "db", clock)
    payouts = Payouts(store)
    assert payouts.of(FIRST) == {ETH: AssetPayout(1), TOKEN: AssetPayout(13, 13)}
    assert payouts.of(SECOND) is None
    assert payouts.owed(TOKEN) == {FIRST} and payouts.owed(ETH) == set()
    # A withdraw that began while FIRST was owed settles FIRST only, though SECOND is owed by
    # the time it ends (perund.session.withdrawals takes the owed ones when it begins).
    began = payouts.owed(TOKEN)
    payouts.concluded(SECOND, ((TOKEN, 4),), ((TOKEN, 4),))
    payouts.withdrawn(TOKEN, began, 100)
    assert payouts.of(FIRST) == {ETH: AssetPayout(1), TOKEN: AssetPayout(13, 13, 100)}
    assert payouts.owed(TOKEN) == {SECOND}
    payouts.withdrawn(TOKEN, payouts.owed(TOKEN), 105)
    payouts.withdrawn(TOKEN, {FIRST}, 200)  # settled already: stays as it was
    assert payouts.owed(TOKEN) == set()
    assert payouts.of(FIRST) == {ETH: AssetPayout(1), TOKEN: AssetPayout(13, 13, 100)}
    assert payouts.of(SECOND) == {TOKEN: AssetPayout(4, 4, 105)}
    store.close()

    store = SessionStore(tmp_path / "db", clock)
    assert Payouts(store).of(SECOND) == {TOKEN: AssetPayout(4, 4, 105)}
    store.close()


def test_an_unreadable_payout_record_is_dropped(tmp_path: Path) -> None:
    clock = Clock()
    store = SessionStore(tmp_path / "db", clock)
    store.set_meta("payout:" + FIRST.hex(), b"\x01\xc1")
    store.set_meta("payout:" + SECOND.hex(), encode_payout({ETH: AssetPayout(2)}))
    payouts = Payouts(store)
    assert payouts.of(FIRST) is None and payouts.of(SECOND) == {ETH: AssetPayout(2)}
    assert store.meta("payout:" + FIRST.hex()) is None
    store.close()
