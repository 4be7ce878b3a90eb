"""Card-number (PAN) detection and masking (DESIGN.md section 11).

A PAN here is 13-19 digits that pass the Luhn check and start like a card a network issues, written
either as one run or in groups split by single spaces or dashes ("4242 4242 4242 4242",
"3782-822463-10005"). This runs on every request body, so it is one precompiled regex plus
arithmetic, with no allocation when the text holds no long digit run.

Choices made against false positives, each a case the tests pin:
- a digit run glued to a letter or digit on either side is not a PAN (ids such as ``ch_01H7...``,
  hex digests, base32 tokens); punctuation and underscores are boundaries, so ``tok_4242...`` or
  ``card=4242...`` are still caught;
- a run of more than 19 digits with no separator is an id or a counter, not a card; a longer run
  that does have separators is searched for any 13-19 digit stretch of whole groups;
- the first digit must be one card networks use (2-6), or 1 at 15 digits (UATP), or 81/82 (RuPay),
  or 9792 (Troy): epoch timestamps in ms/us/ns (13, 16, 19 digits starting with 1) and snowflake
  ids are not cards.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_MIN_DIGITS = 13
_MAX_DIGITS = 19

# A run of digits, possibly split by single spaces or dashes, not touching a letter or digit.
_CANDIDATE = re.compile(r"(?<![0-9A-Za-z])[0-9](?:[ \-]?[0-9]){12,}(?![0-9A-Za-z])")
_GROUP = re.compile(r"[0-9]+")
# What every _CANDIDATE match starts with: a digit and 12 more digits, spaces or dashes. Looser than
# _CANDIDATE (no boundaries, any separators), and far cheaper to search for: a pre-screen only.
_CANDIDATE_START = re.compile(r"[0-9][0-9 \-]{12}")


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn (mod 10) check."""
    total = 0
    double = False
    for char in reversed(digits):
        value = ord(char) - 48
        if double:
            value *= 2
            if value > 9:
                value -= 9
        total += value
        double = not double
    return total % 10 == 0


def _issuer_plausible(digits: str) -> bool:
    first = digits[0]
    if first in "23456":
        return True
    if first == "1":
        return len(digits) == 15
    if first == "8":
        return digits[1] in "12"
    return digits.startswith("9792")


def is_card_number(digits: str) -> bool:
    """True for a 13-19 digit string that is Luhn-valid and starts like an issued card."""
    return (
        _MIN_DIGITS <= len(digits) <= _MAX_DIGITS
        and digits.isdigit()
        and digits.isascii()
        and _issuer_plausible(digits)
        and luhn_valid(digits)
    )


def _spans_in_run(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Yield (start, end) of each card number inside one candidate run of the text."""
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(text, start, end)]
    if len(groups) == 1:
        if is_card_number(text[start:end]):
            yield start, end
        return
    # Separated groups: the whole run, else the first card found at each group boundary.
    i = 0
    while i < len(groups):
        found = False
        digits = ""
        for j in range(i, len(groups)):
            digits += text[groups[j][0] : groups[j][1]]
            if len(digits) > _MAX_DIGITS:
                break
            # Prefer the longest card starting at group i: look ahead before accepting.
            if len(digits) >= _MIN_DIGITS and is_card_number(digits):
                longest = j
                longer = digits
                for k in range(j + 1, len(groups)):
                    longer += text[groups[k][0] : groups[k][1]]
                    if len(longer) > _MAX_DIGITS:
                        break
                    if is_card_number(longer):
                        longest = k
                yield groups[i][0], groups[longest][1]
                i = longest + 1
                found = True
                break
        if not found:
            i += 1


def _too_few_digits(text: str) -> bool:
    # str.count runs in C: ten passes cost less than one pass of the regex engine.
    return sum(map(text.count, "0123456789")) < _MIN_DIGITS


def may_contain_pan(text: str) -> bool:
    """False only when ``text`` cannot hold a card number (then ``find_pans`` is empty and
    ``mask_pans`` returns it unchanged); True means "perhaps": run ``find_pans`` to know."""
    return len(text) >= _MIN_DIGITS and _CANDIDATE_START.search(text) is not None


def find_pans(text: str) -> list[tuple[int, int]]:
    """Spans (start, end) of every card number in ``text``, in order."""
    spans: list[tuple[int, int]] = []
    if _too_few_digits(text):
        return spans
    for match in _CANDIDATE.finditer(text):
        spans.extend(_spans_in_run(text, match.start(), match.end()))
    return spans


def contains_pan(text: str) -> bool:
    """True when ``text`` holds at least one card number."""
    if _too_few_digits(text):
        return False
    for match in _CANDIDATE.finditer(text):
        for _ in _spans_in_run(text, match.start(), match.end()):
            return True
    return False


def mask_digits(digits: str) -> str:
    """``4242424242424242`` -> ``424242******4242`` (BIN and last four, PCI DSS 3.4)."""
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def mask_pans(text: str) -> str:
    """Replace every card number in ``text`` by its masked form; other text is left as is."""
    spans = find_pans(text)
    if not spans:
        return text
    parts: list[str] = []
    cursor = 0
    for start, end in spans:
        parts.append(text[cursor:start])
        parts.append(mask_digits(re.sub(r"[ \-]", "", text[start:end])))
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts)
