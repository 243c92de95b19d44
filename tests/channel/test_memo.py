"""The memo holder's bounds and the one-way rule (perund.channel.memo)."""

from __future__ import annotations

from perund.channel import memo as memo_module
from perund.channel.memo import NotedMemos, PaymentPart, one_way


def test_one_way_memos() -> None:
    pay, ask = PaymentPart((1,)), PaymentPart((1,), request=True)
    assert one_way(()) and one_way((pay, pay)) and one_way((ask, ask))
    assert not one_way((pay, ask))


def test_noted_memos_drop_the_oldest_past_their_parts_or_their_count() -> None:
    noted = NotedMemos()
    big = tuple(PaymentPart((1,), reference=str(i)) for i in range(256))
    for key in range(memo_module.MAX_NOTED_PARTS // 256 + 10):
        noted.put(key, big)
    assert len(noted) == memo_module.MAX_NOTED_PARTS // 256  # parts bound it, not the count
    assert noted.get(0) == () and noted.get(key) == big
    assert noted.pop(key) == big and noted.get(key) == ()
    small = NotedMemos()
    for key in range(memo_module.MAX_NOTED + 5):
        small.put(key, big[:1])
    assert len(small) == memo_module.MAX_NOTED
    small.put(7, ())  # forgets; putting nothing holds nothing
    assert small.get(7) == () and len(small) == memo_module.MAX_NOTED - 1


def test_the_fast_reference_check_matches_the_rule_on_every_code_point() -> None:
    import sys

    from perund.channel.memo import UNSHOWABLE_CHARACTER, unshowable

    for code in range(sys.maxunicode + 1):
        char = chr(code)
        assert (UNSHOWABLE_CHARACTER.search(char) is not None) == unshowable(char), hex(code)
        if char.isprintable():
            assert not unshowable(char), hex(code)
