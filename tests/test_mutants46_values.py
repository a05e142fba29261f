"""Tests that kill hand-made mutants of last session's record message rendering (``kwta_robust.record_values``'s
``shown_text``, ``shown`` and ``_digits``) which its tests let survive: a text of exactly :data:`TEXT_WIDTH`
characters is quoted whole and one more is cut, with its length written with thousands separators; the digits of an
int counted without converting it are right at every power of ten; an int of 14,285 bits or more is named by its
digits and one of 4,300 digits is still shown; every character below U+10000 that ``visible`` escapes, against the
sets its docstring names (the ends of the C1 range, form feed and shift-out survived). Every expected value is
derived in the test (``len(str(...))``, the code point's own escape)."""

from __future__ import annotations

import pytest

from kwta_robust.record_values import TEXT_WIDTH, _digits, shown, shown_text
from kwta_robust.visible_text import visible


def test_a_text_of_exactly_the_width_is_shown_whole_and_one_more_is_cut() -> None:
    whole = "é" * TEXT_WIDTH
    assert shown_text(whole) == whole and shown_text(whole, quoted=True) == repr(whole)
    longer = whole + "x"
    assert shown_text(longer) == f"{whole}... ({TEXT_WIDTH + 1} characters)"
    assert shown_text(longer, quoted=True) == f"{whole!r}... ({TEXT_WIDTH + 1} characters)"
    assert shown_text("y" * 123_456).endswith("... (123,456 characters)")
    assert shown_text(0.5, quoted=True) == repr("0.5")  # a number as written: its text


@pytest.mark.parametrize("k", [1, 2, 9, 10, 99, 100, 1000, 4299])
def test_the_digits_of_an_int_are_counted_right_at_each_power_of_ten(k: int) -> None:
    for x in (10 ** k - 1, 10 ** k, 10 ** k + 1, 2 * 10 ** k):
        assert _digits(x) == len(str(x))


def test_the_digits_past_the_conversion_limit_are_counted_right() -> None:
    for k in (4300, 4301, 12_345):
        assert (_digits(10 ** k - 1), _digits(10 ** k), _digits(5 * 10 ** k)) == (k, k + 1, k + 1)


def test_ints_at_the_bit_limit_are_named_by_digits_and_under_it_shown() -> None:
    assert shown(2 ** 14_285) == f"<an integer of {len(str(2 ** 14_285 // 10)) + 1:,} digits>"
    assert shown(-(2 ** 14_285)) == f"<a negative integer of {len(str(2 ** 14_285 // 10)) + 1:,} digits>"
    under = 2 ** 14_284  # 14,285 bits, 4,300 digits: Python still converts it, so it is shown (cut), not counted
    assert under.bit_length() == 14_285 and len(str(under)) == 4300
    assert shown(under).startswith(str(under)[:10]) and "..." in shown(under) and len(shown(under)) <= 40


#: The characters :func:`visible` writes as escapes, as its module docstring lists them: C0 controls but tab, line
#: feed and carriage return; DEL and the C1 controls; the bidirectional controls.
HIDDEN_CODES = ({*range(0x20)} - {0x09, 0x0A, 0x0D}) | {*range(0x7F, 0xA0)} | {0x061C, 0x200E, 0x200F} \
    | {*range(0x202A, 0x202F)} | {*range(0x2066, 0x206A)}


def test_every_character_below_u10000_is_escaped_exactly_when_hidden() -> None:
    for code in range(0x10000):
        ch = chr(code)
        expected = (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") if code in HIDDEN_CODES else ch
        assert visible(f"a{ch}b") == f"a{expected}b", hex(code)
