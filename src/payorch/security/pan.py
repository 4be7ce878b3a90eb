"""Card-number (PAN) detection and masking: the one detector behind the request guard, the audit
trail's redaction and the logs' (DESIGN.md section 11).

A PAN here is 13-19 digits that pass the Luhn check and start in a range that a card network issues
at that length (``payorch.security.card_networks``), however it is written:

- every character is read through Unicode NFKC and every decimal digit counts as its digit, so
  full-width ``４２４２``, Arabic-Indic ``٤٢٤٢``, superscript or mathematical digits are digits;
- any run of characters that are neither letters nor digits separates digit groups: spaces of any
  kind, dots, slashes, underscores, dashes of any kind, zero-width and other format characters;
- in a run of groups, any stretch of whole groups of 13-19 digits may be the card
  (``ref 1234 4242 4242 4242 4242 9999``); a group of more than 19 digits written without a separator
  is an id or a counter, never part of a card;
- a number touching letters (ASCII letters, the alphabet of ids and tokens) on one side is still a
  card (``ORD4111...``, ``card4242...``, ``4242...exp``); a number with letters on both sides sits
  inside a token (a hex digest, a base32 or base62 id) and is not. Letters of other scripts end a
  number without gluing to it (Japanese text puts no space between a word and a number);
- a number of at most 15 digits written after ``+`` is a phone number (E.164), never a card:
  ``+55 11 91234 5678`` (Brazil) and ``+49 151 23456789`` (Germany) have 13 digits and would
  otherwise be refused one time in ten. docs/security.md gives the measurements behind both rules.

Text is scanned through its "skeleton": the same text with every digit as an ASCII digit, every
ASCII letter as ``a``, every other letter or numeral as ``b``, ``+`` as itself and everything else
as a space. An
ASCII text is its own skeleton up to letters and separators, so the common case costs one C-level
``str.translate`` and a regex; a text with no run of 13 digits is answered by the regex alone.
"""

from __future__ import annotations

import re
import string
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import accumulate

from payorch.security.card_networks import MAX_LENGTH, MIN_LENGTH, issued

_GLUE = "a"  # an ASCII letter in the skeleton
_OTHER = "b"  # a letter or numeral of another script: ends a number, does not glue to it
_SEP = " "
_PLUS = "+"  # a separator too, kept apart: "+" before a number of at most 15 digits makes it a phone number
_E164_DIGITS = 15


def _ascii_skeleton() -> dict[int, str]:
    table = dict.fromkeys(range(128), _SEP)
    table.update({ord(digit): digit for digit in string.digits})
    table.update({ord(letter): _GLUE for letter in string.ascii_letters})
    table[ord(_PLUS)] = _PLUS
    return table


def _fold_char(char: str) -> str:
    """One character's skeleton: NFKC first (one character may become several: ``⑫`` is ``12``)."""
    folded = []
    for part in unicodedata.normalize("NFKC", char):
        if part.isascii():
            folded.append(_ASCII_SKELETON[ord(part)])
            continue
        digit = unicodedata.decimal(part, None)
        if digit is not None:
            folded.append(chr(48 + digit))
        else:
            folded.append(_OTHER if part.isalnum() else _SEP)
    return "".join(folded)


class _Skeletons(dict[int, str]):
    """``str.translate`` table filled on first sight of each character (bounded: once full, a new
    character is computed each time it is seen instead of remembered)."""

    limit = 1 << 16

    def __missing__(self, code: int) -> str:
        folded = _fold_char(chr(code))
        if len(self) < self.limit:
            self[code] = folded
        return folded


_ASCII_SKELETON = _ascii_skeleton()
_SKELETONS = _Skeletons(_ASCII_SKELETON)
_MOST_DIGITS_PER_CHAR = 3  # U+2152 VULGAR FRACTION ONE TENTH is "1⁄10" (tests/unit/test_pan.py checks)

# 13 digits with nothing but separators between them: what every card needs, ignoring glue. The
# same pattern reads a skeleton and a raw ASCII text alike (their separators are non-alphanumeric).
# _NO_LETTERS needs less (a digit, then 12 characters that are not letters) and is searched first:
# it costs what the fixed pattern before it did, and most strings (ids, words) fail it.
_THIRTEEN_DIGITS = re.compile(r"[0-9](?:[^0-9A-Za-z]*+[0-9]){12}")
_NO_LETTERS = re.compile(r"[0-9][^A-Za-z]{12}")
_RUN = re.compile(r"[0-9]++(?:[ +]++[0-9]++)*+")
_GROUP = re.compile(r"[0-9]+")


def skeleton(text: str) -> str:
    """``text`` as the detector reads it (see the module docstring)."""
    return text.translate(_SKELETONS)


def luhn_valid(digits: str) -> bool:
    """True when the ASCII digit string passes the Luhn (mod 10) check."""
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


def is_card_number(digits: str) -> bool:
    """True for a string of 13-19 ASCII digits that a network issues and that passes Luhn."""
    return (
        MIN_LENGTH <= len(digits) <= MAX_LENGTH
        and digits.isascii()
        and digits.isdigit()
        and issued(digits)
        and luhn_valid(digits)
    )


def may_contain_pan(text: str) -> bool:
    """False only when ``text`` cannot hold a card number (then ``find_pans`` is empty and
    ``mask_pans`` returns it unchanged); True means "perhaps": run ``find_pans`` to know."""
    if not text.isascii():
        if len(text) * _MOST_DIGITS_PER_CHAR < MIN_LENGTH:
            return False
        text = skeleton(text)
    return _NO_LETTERS.search(text) is not None and _THIRTEEN_DIGITS.search(text) is not None


_LUHN_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn_sums(digits: str) -> tuple[list[int], list[int]]:
    """Prefix sums of Luhn values with the even positions doubled, and with the odd ones doubled:
    ``digits[a:b]`` passes Luhn when the sum over it whose doubled positions have ``b``'s parity
    ends in 0. One pass per run, then any candidate is checked in constant time (a run of thousands
    of one-digit groups has thousands of candidates)."""
    even, odd = [0], [0]
    for position, char in enumerate(digits):
        value = ord(char) - 48
        doubled = _LUHN_DOUBLED[value]
        even.append(even[-1] + (doubled if position % 2 == 0 else value))
        odd.append(odd[-1] + (value if position % 2 == 0 else doubled))
    return even, odd


def _cards_in_run(folded: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(start, end) in the skeleton of each card in one run of digit groups."""
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(folded, start, end)]
    digits = "".join(folded[a:b] for a, b in groups)
    ends = list(accumulate(b - a for a, b in groups))  # digits up to the end of each group
    even, odd = _luhn_sums(digits)
    glued_both = start > 0 and folded[start - 1] == _GLUE and end < len(folded) and folded[end] == _GLUE
    last = len(groups) - 1
    i = 0
    while i <= last:
        first = ends[i - 1] if i else 0
        found = None
        # Only the groups that end a stretch of 13-19 digits from group i can end a card.
        for j in range(bisect_left(ends, first + MIN_LENGTH, i), bisect_right(ends, first + MAX_LENGTH, i)):
            stop = ends[j]
            sums = even if stop % 2 == 0 else odd
            if (
                (sums[stop] - sums[first]) % 10 == 0
                and issued(digits[first:stop])
                and not (glued_both and i == 0 and j == last)
            ):
                found = j  # keep looking: the longest card starting at group i wins
        if found is None:
            i += 1
        else:
            yield groups[i][0], groups[found][1]
            i = found + 1


def _digits(folded: str) -> str:
    return folded.replace(_SEP, "").replace(_PLUS, "")


def _skeleton_spans(folded: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for match in _RUN.finditer(folded):
        start, end = match.span()
        digits = len(_digits(match.group()))
        phone = start > 0 and folded[start - 1] == _PLUS and digits <= _E164_DIGITS
        if digits >= MIN_LENGTH and not phone:
            spans.extend(_cards_in_run(folded, start, end))
    return spans


def _to_text_spans(text: str, folded: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Skeleton positions as positions in ``text`` (they differ only where NFKC made one character
    several: a span then covers every character it touches)."""
    if len(folded) == len(text) or not spans:
        return spans
    origin: list[int] = []
    for index, char in enumerate(text):
        origin.extend([index] * len(_SKELETONS[ord(char)]))
    return [(origin[start], origin[end - 1] + 1) for start, end in spans]


def _found(text: str) -> tuple[str, list[tuple[int, int]]]:
    """(skeleton, card spans in the skeleton); spans empty when there is none."""
    if not may_contain_pan(text):
        return text, []
    folded = skeleton(text)
    return folded, _skeleton_spans(folded)


def find_pans(text: str) -> list[tuple[int, int]]:
    """Spans (start, end) in ``text`` of every card number in it, in order."""
    folded, spans = _found(text)
    return _to_text_spans(text, folded, spans)


def contains_pan(text: str) -> bool:
    """True when ``text`` holds at least one card number."""
    return bool(_found(text)[1])


def mask_digits(digits: str) -> str:
    """``4242424242424242`` -> ``424242******4242`` (BIN and last four, PCI DSS 3.4)."""
    return digits[:6] + "*" * (len(digits) - 10) + digits[-4:]


def mask_pans(text: str) -> str:
    """Replace every card number in ``text`` by its masked form (in ASCII digits, separators
    dropped); other text is left as it is."""
    folded, spans = _found(text)
    if not spans:
        return text
    parts: list[str] = []
    cursor = 0
    for (start, end), (fold_start, fold_end) in zip(_to_text_spans(text, folded, spans), spans, strict=True):
        parts.append(text[cursor:start])
        parts.append(mask_digits(_digits(folded[fold_start:fold_end])))
        cursor = end
    parts.append(text[cursor:])
    return "".join(parts)
