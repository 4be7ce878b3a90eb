"""ISO 4217 currencies and their minor-unit exponents; amounts are integers in minor units."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final

from pydantic import AfterValidator, StringConstraints

_ZERO_DECIMAL: Final = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMAL: Final = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMAL: Final = "CLF UYW"
_TWO_DECIMAL: Final = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL "
    "GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD "
    "LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN "
    "PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN SVC SYP SZL "
    "THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VES VED WST XCD XCG YER ZAR ZMW ZWG ZWL"
)

EXPONENTS: Final[dict[str, int]] = {
    **dict.fromkeys(_TWO_DECIMAL.split(), 2),
    **dict.fromkeys(_ZERO_DECIMAL.split(), 0),
    **dict.fromkeys(_THREE_DECIMAL.split(), 3),
    **dict.fromkeys(_FOUR_DECIMAL.split(), 4),
}

MAX_AMOUNT: Final = 2**63 - 1
"""Amounts are stored as BIGINT."""


class UnknownCurrency(ValueError):
    pass


def normalize_currency(code: str) -> str:
    """Validate an ISO 4217 code (case-insensitive) and return it lowercase, as the API speaks it."""
    upper = code.upper()
    if upper not in EXPONENTS:
        raise UnknownCurrency(code)
    return upper.lower()


def _known_currency(code: str) -> str:
    try:
        return normalize_currency(code)
    except UnknownCurrency:
        raise ValueError("must be an ISO 4217 currency code") from None


CurrencyCode = Annotated[str, StringConstraints(min_length=3, max_length=3), AfterValidator(_known_currency)]
"""A currency in a request model: ISO 4217, case-insensitive in, lowercase out; another code is a
400 naming the field."""


def exponent(currency: str) -> int:
    """The number of minor-unit digits: 2 for USD, 0 for JPY, 3 for KWD."""
    try:
        return EXPONENTS[currency.upper()]
    except KeyError:
        raise UnknownCurrency(currency) from None


def to_major_string(amount: int, currency: str) -> str:
    """Render minor units as an exact decimal string in major units (``1050 usd -> "10.50"``)."""
    exp = exponent(currency)
    sign = "-" if amount < 0 else ""
    digits = str(abs(amount)).rjust(exp + 1, "0")
    if exp == 0:
        return sign + digits
    return f"{sign}{digits[:-exp]}.{digits[-exp:]}"


def from_major_string(value: Decimal | str, currency: str) -> int:
    """Parse an exact decimal amount in major units into minor units (``"10.50" usd -> 1050``).

    Refuses anything finer than the currency's minor unit instead of rounding it away.
    """
    scaled = Decimal(value).scaleb(exponent(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value} has more precision than {currency.upper()} allows")
    return int(scaled)
