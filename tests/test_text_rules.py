"""The rules for stored text (webapp/core/text.py): printable ASCII is told apart without the
pattern, and must be judged as the pattern judges it."""

import pytest

from webapp.core import text

LINES = ["BTC above 65000", "Füllung 0,5 BTC", "注文が約定しました", "a 😀", "", " ~!{}",
         "שלום\u200f BTC", "👩\u200d💻",  # a right-to-left mark; a joined emoji
         "Order for \u2068محمد\u2069 filled", "\u202bשלום\u202c BTC"]  # isolated, embedded
MESSAGES = ["two\nlines", "a\ttab", "crlf\r\nends", "line\u2028separated"]
REFUSED = ["nul\x00", "del\x7f", "bell\x07", "esc\x1b[31m", "c1\x85", "lone\udc00",
           "é\x00", "😀\x1f", "\x9b",
           "txt.exe\u202egnp", "\u202doverridden"]  # text read otherwise


@pytest.mark.parametrize("value", LINES)
def test_plain_text_is_a_line_and_text(value):
    assert text.is_line(value) and text.is_text(value)


@pytest.mark.parametrize("value", MESSAGES)
def test_tabs_and_line_breaks_are_text_but_not_a_line(value):
    assert text.is_text(value) and not text.is_line(value)


@pytest.mark.parametrize("value", REFUSED)
def test_control_characters_and_lone_surrogates_are_neither(value):
    assert not text.is_line(value) and not text.is_text(value)
    assert text.is_text(text.cleaned(value))


def test_every_ascii_character_is_judged_as_the_rules_say():
    for code in range(128):
        char = chr(code)
        assert text.is_line(char) is (32 <= code < 127), code
        assert text.is_text(char) is (32 <= code < 127 or char in "\t\n\r"), code
