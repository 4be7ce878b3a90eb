"""A card's BIN and issuing country as each gateway reports them (gateways/cards.py and each
gateway's mapping), and what the card-number detector makes of them: a BIN is never a card number,
and no more of a number than a BIN is ever kept."""

from __future__ import annotations

import json
import warnings

import pytest

from payorch.audit.redaction import redact_text
from payorch.gateways.adyen import mapping as adyen
from payorch.gateways.braintree import mapping as braintree_mapping
from payorch.gateways.cards import card_bin, issuing_country
from payorch.gateways.sandbox.adapter import TEST_TOKENS
from payorch.gateways.stripe import mapping as stripe
from payorch.security.pan import contains_pan, find_pans, is_card_number, mask_pans

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"braintree\.")
    import braintree


@pytest.mark.parametrize("reported", ["424242", "42424242", "400000", "55555555"])
def test_a_bin_of_6_or_8_digits_is_kept_as_reported(reported: str) -> None:
    assert card_bin(reported) == reported


@pytest.mark.parametrize(
    "reported",
    [
        "4242424242424242",  # a whole card number: dropped, never cut down to a BIN
        "424242424",
        "4242424",
        "42424",
        "424242******4242",
        "４２４２４２",  # full-width digits
        " 424242",
        "",
        424242,
        None,
    ],
)
def test_anything_else_is_no_bin(reported: object) -> None:
    assert card_bin(reported) is None


@pytest.mark.parametrize(
    ("reported", "country"),
    [("US", "US"), ("fr", "FR"), ("USA", "US"), ("CAN", "CA"), ("gbr", "GB"), ("Unknown", None), ("", None),
     ("XX", None), ("ZZZ", None), ("United States", None), (840, None), (None, None)],
)  # fmt: skip
def test_issuing_country_is_alpha_2(reported: object, country: str | None) -> None:
    assert issuing_country(reported) == country


def test_stripe_tells_the_country_and_no_bin() -> None:
    method = {"id": "pm_1", "card": {"brand": "visa", "last4": "0003", "exp_month": 4, "exp_year": 2031,
                                     "country": "FR", "fingerprint": "abc"}}  # fmt: skip
    card = stripe.card_summary(method)
    assert card is not None
    assert (card.bin, card.country) == (None, "FR")


def test_braintree_tells_the_bin_and_the_alpha_3_country() -> None:
    fields = {"card_type": "Visa", "last_4": "0002", "expiration_month": "12", "expiration_year": "2030"}
    card = braintree_mapping.card_summary(
        braintree.CreditCard(None, {**fields, "bin": "400000", "country_of_issuance": "CAN"})
    )
    assert card is not None
    assert (card.bin, card.country) == ("400000", "CA")
    unknown = braintree_mapping.card_summary(
        braintree.CreditCard(None, {**fields, "bin": "400000", "country_of_issuance": "Unknown"})
    )
    assert unknown is not None
    assert (unknown.bin, unknown.country) == ("400000", None)


def test_adyen_tells_them_where_the_account_asks_for_them() -> None:
    payment = {
        "paymentMethod": {"brand": "visa"},
        "additionalData": {"cardSummary": "0000", "expiryDate": "3/2030", "cardBin": "454617", "issuerCountry": "NL"},
    }
    card = adyen.card_summary(payment)
    assert card is not None
    assert (card.bin, card.country) == ("454617", "NL")
    plain = adyen.card_summary({"paymentMethod": {"brand": "visa"}, "additionalData": {"cardSummary": "0000"}})
    assert plain is not None
    assert (plain.bin, plain.country) == (None, None)
    whole = adyen.card_summary({"additionalData": {"cardSummary": "4242", "cardBin": "4242424242424242"}})
    assert whole is not None
    assert whole.bin is None


@pytest.mark.parametrize("token", sorted(TEST_TOKENS))
def test_no_test_card_bin_with_its_last_four_reads_as_a_card_number(token: str) -> None:
    card = TEST_TOKENS[token].card
    assert card.bin is not None
    assert card.country is not None
    # Rendered the way payorch writes it (an answer, an audit event, a log line): no card number,
    # and redaction leaves it as it is.
    rendered = json.dumps({"brand": card.brand, "last4": card.last4, "exp_month": card.exp_month,
                           "exp_year": card.exp_year, "bin": card.bin, "country": card.country})  # fmt: skip
    for text in (rendered, f"card {card.bin} {card.country}", repr(card)):
        assert not contains_pan(text)
        assert mask_pans(text) == text
        assert redact_text(text) == text
    assert not is_card_number(card.bin)
    assert find_pans(card.bin) == []


@pytest.mark.parametrize("bin_digits", ["42424242", "41111111", "55555555", "37828200"])
def test_an_eight_digit_bin_is_not_a_card_number_whatever_follows_it_in_words(bin_digits: str) -> None:
    for text in (f"bin={bin_digits}", f"{bin_digits}", f"BIN {bin_digits}, last4 4242", f'"bin": "{bin_digits}"'):
        assert find_pans(text) == []
