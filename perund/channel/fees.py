"""Intermediary fees for virtual channels (docs/protocol.md "Intermediary fees"). Pure.

The intermediary's schedule gives, per asset, a base amount and parts per million of what a
virtual channel locks; the opener pays `fee_a = base_a + floor(T_a * ppm_a / 1,000,000)` for
each asset `a` of the virtual channel the schedule lists (`T_a`: the channel's total of the
asset, what each ledger locks), 0 for the others. Everything is integer wei, rounded down, so
the opener, its node and the intermediary compute the same amounts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from perund.channel.types import UINT256_MAX, Address

PPM: int = 1_000_000
"""Parts per million: the unit of a fee's proportional term."""


@dataclass(frozen=True, slots=True)
class FeeTerms:
    """What the intermediary charges for one asset: `base` wei plus `ppm` parts per million of
    the amount locked."""

    base: int
    ppm: int

    def __post_init__(self) -> None:
        if type(self.base) is not int or not 0 <= self.base <= UINT256_MAX:
            raise ValueError("a fee's base is an amount in 0..2**256-1")
        if type(self.ppm) is not int or not 0 <= self.ppm <= PPM:
            raise ValueError(f"a fee's ppm is an integer in 0..{PPM}")

    def charge(self, locked: int) -> int:
        """The fee for locking `locked` of this asset."""
        return self.base + locked * self.ppm // PPM


FeeSchedule = Mapping[Address, FeeTerms]
"""An intermediary's fee terms by asset; an asset it does not list is carried free."""


def fee_for(schedule: FeeSchedule, assets: Sequence[Address],
            totals: Sequence[int]) -> tuple[int, ...]:
    """The fee for a virtual channel holding `totals[a]` of `assets[a]` (aligned with them)."""
    return tuple(0 if (terms := schedule.get(asset)) is None else terms.charge(total)
                 for asset, total in zip(assets, totals, strict=True))


def fee_field(amounts: Sequence[int]) -> tuple[int, ...]:
    """A fee as it travels in a lock: empty when nothing is paid (one form per fee)."""
    return tuple(amounts) if any(amounts) else ()


def fee_amounts(fee: Sequence[int], n_assets: int) -> tuple[int, ...]:
    """A lock's fee per asset of its virtual channel (an empty fee is 0 for every asset)."""
    return tuple(fee) if fee else (0,) * n_assets


def within(fee: Sequence[int], limit: Sequence[int]) -> bool:
    """Whether `fee` is at most `limit` in every asset (aligned with each other)."""
    return all(f <= m for f, m in zip(fee, limit, strict=True))
