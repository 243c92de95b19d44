"""Decimal amounts ⇄ base units, and the currency table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from perund.api.amounts import (
    ETHER,
    AmountError,
    Currencies,
    Currency,
    format_amount,
    parse_amount,
)
from perund.channel.types import ETH, UINT256_MAX, to_address


@pytest.mark.parametrize(("text", "decimals", "units"), [
    ("0", 18, 0),
    ("1", 18, 10**18),
    ("0.25", 18, 25 * 10**16),
    ("0.000000000000000001", 18, 1),
    ("1.5", 6, 1_500_000),
    ("42", 0, 42),
    ("10.10", 2, 1010),
])
def test_parse(text: str, decimals: int, units: int) -> None:
    assert parse_amount(text, decimals) == units


@pytest.mark.parametrize("text", [
    "-1", "+1", "1e18", "0x10", " 1", "1 ", "1.", ".5", "01", "00.1", "1,5", "", "\u0661",
    "NaN", "Infinity", "1.2.3", "1\n",
])
def test_malformed_amounts_are_refused(text: str) -> None:
    with pytest.raises(AmountError, match="decimal string"):
        parse_amount(text, 18)


def test_over_precise_amounts_are_refused_even_with_trailing_zeros() -> None:
    with pytest.raises(AmountError, match="at most 18 decimal places"):
        parse_amount("0.0000000000000000001", 18)
    with pytest.raises(AmountError, match="at most 6 decimal places"):
        parse_amount("1.0000000", 6)
    with pytest.raises(AmountError, match="at most 0 decimal places"):
        parse_amount("1.0", 0)


def test_huge_amounts_are_refused() -> None:
    assert parse_amount(str(UINT256_MAX), 0) == UINT256_MAX
    with pytest.raises(AmountError, match="uint256"):
        parse_amount(str(UINT256_MAX + 1), 0)
    with pytest.raises(AmountError, match="uint256"):
        parse_amount("1" * 61, 18)
    with pytest.raises(AmountError, match="at most 100 characters"):
        parse_amount("1" * 5000, 18)


def test_zero_only_where_allowed() -> None:
    assert parse_amount("0.000", 18) == 0
    with pytest.raises(AmountError, match="above zero"):
        parse_amount("0.000", 18, allow_zero=False)


@pytest.mark.parametrize(("units", "decimals", "text"), [
    (0, 18, "0"), (10**18, 18, "1"), (25 * 10**16, 18, "0.25"), (1, 18, "0.000000000000000001"),
    (1010, 2, "10.1"), (7, 0, "7"),
])
def test_format(units: int, decimals: int, text: str) -> None:
    assert format_amount(units, decimals) == text


@given(st.integers(min_value=0, max_value=UINT256_MAX), st.integers(min_value=0, max_value=77))
def test_format_then_parse_is_identity(units: int, decimals: int) -> None:
    text = format_amount(units, decimals)
    assert parse_amount(text, decimals) == units
    # The shortest form: no trailing zeros in a fraction, no dangling dot.
    assert not text.endswith(".")
    assert "." not in text or not text.endswith("0")


def test_the_table_has_ether_first_and_knows_tokens_both_ways() -> None:
    usdc = Currency("USDC", to_address("0x" + "11" * 20), 6)
    table = Currencies([usdc])
    assert table.symbols() == ["ETH", "USDC"]
    assert table.by_symbol("ETH") is ETHER
    assert table.by_asset(usdc.asset) is usdc
    assert table.by_asset(ETH) is ETHER
    unknown = to_address("0x" + "22" * 20)
    assert table.by_asset(unknown) is None
    label, amount = table.render(unknown, 12345)
    assert label.lower() == "0x" + "22" * 20 and amount == "12345"
    assert table.render(usdc.asset, 1_250_000) == ("USDC", "1.25")


def test_the_table_refuses_duplicates_and_bad_decimals() -> None:
    table = Currencies()
    with pytest.raises(ValueError, match="already defined"):
        table.add(Currency("eth", to_address("0x" + "33" * 20), 18))
    table.add(Currency("DAI", to_address("0x" + "33" * 20), 18))
    with pytest.raises(ValueError, match="already has a symbol"):
        table.add(Currency("DAI2", to_address("0x" + "33" * 20), 18))
    with pytest.raises(ValueError, match="decimals"):
        Currency("BIG", to_address("0x" + "44" * 20), 78)
