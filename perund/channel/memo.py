"""What an update says about the payments it carries, beside its signed state.

An update may merge several payments (callers waiting on the channel share one update), and a
payment may carry a reference (an invoice number). Neither is part of the signed state: the
memo travels with the `Update` message and each side's history records it. The memo is a
claim of the proposer, trusted only as far as it adds up: `parts_match` checks that the parts
move exactly what the state moves; a memo that does not is ignored (the history then records
the update as one payment without references).
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Final

MAX_PARTS: Final = 256
"""Parts one memo may list (the most payments one update merges)."""

MAX_REFERENCE: Final = 128
"""Longest reference of a payment, in characters."""

MAX_NOTED: Final = 4096
"""Memos a `NotedMemos` holds (one per update in flight per channel suffices)."""

MAX_NOTED_PARTS: Final = 32_768
"""Parts a `NotedMemos` holds over all its memos: a peer's memos of 256 parts with long
references are some 50 KB each, and 4,096 of them would be 200 MB of memory."""

UNSHOWABLE_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})
"""Unicode categories of characters that are not text to show: controls, surrogates, line and
paragraph separators."""
DIRECTION_MARKS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                                   "\u2066\u2067\u2068\u2069")
"""Characters that change the direction of the text around them (so can disguise it)."""


def unshowable(char: str) -> bool:
    """Whether `char` could redraw a terminal or disguise a line: a control character (an
    escape sequence's start), a line break, a direction mark. Text another party chose is
    refused with one (`reference_problem`) or printed escaped (the CLI)."""
    return unicodedata.category(char) in UNSHOWABLE_CATEGORIES or char in DIRECTION_MARKS


UNSHOWABLE_CHARACTER: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029" + "".join(sorted(DIRECTION_MARKS)) + "]")
"""Any `unshowable` character, matched at C speed: the categories are fixed sets (Cc is
U+0000-001F and U+007F-009F, Cs the surrogates, Zl and Zp one character each; a test checks
every code point)."""


def reference_problem(reference: str) -> str | None:
    """Why `reference` cannot be a payment's reference, or None. It reaches the payee's
    screen and spreadsheet, so no `unshowable` character. A peer's memo may carry 256 of
    them: checked at C speed (char by char it took 6 ms a frame, found by an audit)."""
    if len(reference) > MAX_REFERENCE:
        return f"at most {MAX_REFERENCE} characters"
    if not reference.isprintable() and UNSHOWABLE_CHARACTER.search(reference) is not None:
        return "printable text: no control characters, line breaks or direction marks"
    return None


@dataclass(frozen=True, slots=True)
class PaymentPart:
    """One payment of an update: `amounts[a]` base units of the state's asset `a` move from
    the proposer to the responder, or, for a `request`, from the responder to the proposer."""

    amounts: tuple[int, ...]
    request: bool = False
    reference: str | None = None


Memo = tuple[PaymentPart, ...]


def parts_match(memo: Memo, moved: tuple[int, ...]) -> bool:
    """Whether the parts of `memo` add up to `moved`: per asset, what the proposer's balance
    went down by (negative: up by) from the previous state to the new one."""
    if not memo or any(len(part.amounts) != len(moved) for part in memo):
        return False
    for asset, total in enumerate(moved):
        if sum(-p.amounts[asset] if p.request else p.amounts[asset] for p in memo) != total:
            return False
    return all(all(amount >= 0 for amount in part.amounts) and any(part.amounts)
               for part in memo)


def one_way(memo: Memo) -> bool:
    """Whether every part of `memo` moves money the same way (all payments, or all requests).
    A peer's memo that mixes them is not taken for our history: the parts going against the
    update's direction would be payments our user never made nor was asked for (the update is
    accepted on its net), and a net of 1 wei could list 255 of them."""
    return len({part.request for part in memo}) <= 1


class NotedMemos:
    """Memos by key (channel and version), the oldest dropped past `MAX_NOTED` memos or
    `MAX_NOTED_PARTS` parts: a dropped memo costs only its detail (the history then records
    the update's net payment)."""

    def __init__(self) -> None:
        self._memos: OrderedDict[Hashable, Memo] = OrderedDict()
        self._parts = 0

    def put(self, key: Hashable, memo: Memo) -> None:
        """Hold `memo` under `key` (empty: forget what `key` held)."""
        self.pop(key)
        if not memo:
            return
        self._memos[key] = memo
        self._parts += len(memo)
        while len(self._memos) > MAX_NOTED or self._parts > MAX_NOTED_PARTS:
            self._parts -= len(self._memos.popitem(last=False)[1])

    def get(self, key: Hashable) -> Memo:
        """The memo held under `key`, or none."""
        return self._memos.get(key, ())

    def pop(self, key: Hashable) -> Memo:
        """The memo held under `key` (or none), forgotten."""
        memo = self._memos.pop(key, ())
        self._parts -= len(memo)
        return memo

    def __len__(self) -> int:
        return len(self._memos)
