"""The card networks' issuer ranges and card lengths: what makes a Luhn-valid digit string a card
number (DESIGN.md section 11). Data only, in one table; ``payorch.security.pan`` asks ``issued``.

Sources: the IIN table of Wikipedia's "Payment card number" article (ISO/IEC 7812 allocations as the
networks publish them), Braintree's ``credit-card-type`` (the ranges Braintree's own card forms use),
and the JCB ranges the Discover network accepts. Where they disagree on a length, the table takes
the union: a card missed is a PCI DSS failure, a numeric id refused is an annoyance with a clear 400.

Two choices a reader should know about:
- Maestro is Mastercard's 50 and 56-69 allocation at 12 to 19 digits (as Braintree has it), not only
  the handful of IINs some tables list: published Maestro test cards (Adyen's 5000 5500 0000 0029,
  Braintree's 6799 9901 0000 0000 019) sit outside those IINs. This is the widest range in the
  table and the largest single source of false positives (docs/security.md gives the figures).
- Ranges starting with 1 are kept to UATP (15 digits) and legacy JCB (15 digits): the 1946 range of
  Indonesia's GPN at 16/18/19 digits would take every epoch timestamp in microseconds and
  nanoseconds of a week of August 2031 for a card, one time in ten.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

MIN_LENGTH = 13  # shorter PANs (Maestro's 12) are too rare to be worth the false positives
MAX_LENGTH = 19
_KEY_DIGITS = 8  # ISO/IEC 7812-1:2017 IINs are at most 8 digits
_KEYS = 100_000_000  # 10 ** _KEY_DIGITS


@dataclass(frozen=True)
class CardNetwork:
    name: str
    prefixes: tuple[str, ...]
    """IIN ranges, each ``"4"`` or ``"2221-2720"`` (both ends inclusive, same number of digits)."""
    lengths: tuple[int, ...]


def _span(low: int, high: int) -> tuple[int, ...]:
    return tuple(range(low, high + 1))


_ELO = (
    "401178-401179", "431274", "438935", "451416", "457393", "457631-457632", "504175", "506699-506778",
    "509000-509999", "627780", "636297", "636368", "650031-650033", "650035-650051", "650405-650439",
    "650485-650538", "650541-650598", "650700-650718", "650720-650727", "650901-650978", "651652-651679",
    "655000-655019", "655021-655058",
)  # fmt: skip

NETWORKS: tuple[CardNetwork, ...] = (
    CardNetwork("Visa", ("4",), (13, 16, 18, 19)),
    CardNetwork("Visa Electron", ("4026", "417500", "4508", "4844", "4913", "4917"), (16,)),
    CardNetwork("Mastercard", ("51-55", "2221-2720"), (16,)),
    CardNetwork("Maestro", ("50", "56-69", "493698"), _span(12, 19)),
    CardNetwork("Maestro UK", ("6759", "676770", "676774"), _span(12, 19)),
    CardNetwork("American Express", ("34", "37"), (15,)),
    CardNetwork("Discover", ("6011", "644-649", "65", "622126-622925"), _span(16, 19)),
    CardNetwork("Diners Club International", ("36", "300-305", "3095", "38-39"), _span(14, 19)),
    CardNetwork("Diners Club US & Canada", ("54",), (16,)),
    CardNetwork("JCB", ("3528-3589",), _span(16, 19)),
    CardNetwork("JCB (Discover network)", ("3088-3094", "3096-3102", "3112-3120", "3158-3159", "3337-3349"), (16,)),
    CardNetwork("JCB (legacy)", ("1800", "2131"), (15,)),
    CardNetwork("UnionPay", ("62", "81"), _span(14, 19)),
    CardNetwork("Mir", ("2200-2204",), _span(16, 19)),
    CardNetwork("Borica", ("2205",), (16,)),
    CardNetwork("RuPay", ("60", "65", "81", "82", "508", "353", "356"), (16,)),
    CardNetwork("Verve", ("506099-506198", "650002-650027", "507865-507964"), (16, 18, 19)),
    CardNetwork("Elo", _ELO, (16,)),
    CardNetwork("Hipercard", ("606282", "384100", "384140", "384160"), (16, 19)),
    CardNetwork("Hiper", ("637095", "63737423", "63743358", "637568", "637599", "637609", "637612"), (16,)),
    CardNetwork("Troy", ("65", "9792"), (16,)),
    CardNetwork("Dankort", ("5019",), (16,)),
    CardNetwork("Bankcard", ("5610", "560221-560225"), (16,)),
    CardNetwork("InterPayment", ("636",), _span(16, 19)),
    CardNetwork("InstaPayment", ("637-639",), (16,)),
    CardNetwork("Laser", ("6304", "6706", "6709", "6771"), _span(16, 19)),
    CardNetwork("Solo", ("6334", "6767"), (16, 18, 19)),
    CardNetwork("Switch", ("4903", "4905", "4911", "4936", "564182", "633110", "6333", "6759"), (16, 18, 19)),
    CardNetwork("UATP", ("1",), (15,)),
    CardNetwork("UzCard", ("8600", "5614"), (16,)),
    CardNetwork("Humo", ("9860",), (16,)),
    CardNetwork("LankaPay", ("357111",), (16,)),
    CardNetwork("NAPAS", ("9704",), (16, 19)),
    CardNetwork("DinaCard", ("9891", "655670-655697"), (16,)),
    CardNetwork("UkrCard", ("60400100-60420099",), _span(16, 19)),
    CardNetwork("NPS Pridnestrovie", ("6054740-6054744",), (16,)),
    CardNetwork("Tunion", ("31",), (19,)),
)


def _key_range(prefix_range: str) -> tuple[int, int]:
    """``"2221-2720"`` as the inclusive range of 8-digit keys it covers: 22210000..27209999."""
    low, _, high = prefix_range.partition("-")
    high = high or low
    if len(low) != len(high) or not (low + high).isdigit() or int(low) > int(high) or len(low) > _KEY_DIGITS:
        raise ValueError(f"bad IIN range {prefix_range!r}")
    pad = _KEY_DIGITS - len(low)
    return int(low) * 10**pad, (int(high) + 1) * 10**pad - 1


def _merged(ranges: list[tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Overlapping and touching ranges merged; as two sorted tuples (starts, ends) for bisect."""
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return tuple(m[0] for m in merged), tuple(m[1] for m in merged)


def _by_length() -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
    ranges: dict[int, list[tuple[int, int]]] = {length: [] for length in range(MIN_LENGTH, MAX_LENGTH + 1)}
    for network in NETWORKS:
        for length in network.lengths:
            if length in ranges:
                ranges[length].extend(_key_range(prefix) for prefix in network.prefixes)
    return {length: _merged(found) for length, found in ranges.items()}


_ISSUED = _by_length()


def issued(digits: str) -> bool:
    """True when an ASCII digit string of 13-19 digits starts in a range a network issues at its length."""
    table = _ISSUED.get(len(digits))
    if table is None:
        return False
    starts, ends = table
    key = int(digits[:_KEY_DIGITS])
    index = bisect_right(starts, key) - 1
    return index >= 0 and key <= ends[index]


def networks_of(digits: str) -> list[str]:
    """The names of the networks whose ranges and lengths admit ``digits`` (for tests and tooling)."""
    key = int(digits[:_KEY_DIGITS])
    found = []
    for network in NETWORKS:
        if len(digits) in network.lengths:
            for prefix in network.prefixes:
                low, high = _key_range(prefix)
                if low <= key <= high:
                    found.append(network.name)
                    break
    return found


def issued_share(length: int, *, leading_zero: bool = False) -> float:
    """The share of all ``length``-digit strings (of those not starting with 0 unless
    ``leading_zero``) whose prefix a network issues at that length: with Luhn (one in ten passes),
    a tenth of it is the share of random numeric ids taken for cards."""
    table = _ISSUED.get(length)
    if table is None:
        return 0.0
    covered = sum(high - low + 1 for low, high in zip(*table, strict=True))
    floor = 0 if leading_zero else _KEYS // 10
    covered -= sum(max(0, min(high, floor - 1) - low + 1) for low, high in zip(*table, strict=True))
    return covered / (_KEYS - floor)
