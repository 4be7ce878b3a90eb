"""The card facts a gateway reports besides brand and last four, in one shape for every adapter:
the BIN (the issuer's first 6 or 8 digits, never more) and the issuing country (ISO 3166-1
alpha-2). Routing rules match on them (docs/routing.md); a value of another shape is dropped,
never cut down, so no adapter can store more of a card number than a BIN."""

from __future__ import annotations

import re
from typing import Final

from iso3166 import countries_by_alpha2, countries_by_alpha3

_BIN: Final = re.compile(r"[0-9]{6}(?:[0-9]{2})?")


def card_bin(reported: object) -> str | None:
    """The gateway's BIN if it is 6 or 8 ASCII digits; anything else (longer, masked, a number) is None."""
    if not isinstance(reported, str) or not _BIN.fullmatch(reported):
        return None
    return reported


def issuing_country(reported: object) -> str | None:
    """An ISO 3166-1 country, alpha-2 or alpha-3 (Braintree's ``country_of_issuance``), as alpha-2;
    None for ``Unknown``, an empty value or a code that names no country."""
    if not isinstance(reported, str):
        return None
    code = reported.strip().upper()
    if len(code) == 2 and code in countries_by_alpha2:
        return code
    if len(code) == 3 and code in countries_by_alpha3:
        return countries_by_alpha3[code].alpha2
    return None
