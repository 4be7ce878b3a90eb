"""Card numbers and numeric ids for measuring the card-number detector (tests/unit/test_pan_rates.py,
bench/pan_rates.py, docs/security.md): the networks' and gateways' published test cards, seeded
random ids, and generated cards of every network in the table."""

from __future__ import annotations

import random

from payorch.security.card_networks import NETWORKS, CardNetwork
from payorch.security.pan import luhn_valid

# Published test card numbers: (number, network, who publishes it).
PUBLISHED_TEST_CARDS: tuple[tuple[str, str, str], ...] = (
    ("4242424242424242", "Visa", "Stripe"),
    ("4000056655665556", "Visa debit", "Stripe"),
    ("4000002500001001", "Cartes Bancaires / Visa", "Stripe"),
    ("4000000760000002", "Visa (Brazil)", "Stripe"),
    ("5555555555554444", "Mastercard", "Stripe, Braintree, Adyen"),
    ("2223003122003222", "Mastercard 2-series", "Stripe"),
    ("5200828282828210", "Mastercard debit", "Stripe"),
    ("5105105105105100", "Mastercard prepaid", "Stripe, Braintree"),
    ("378282246310005", "American Express", "Stripe, Braintree"),
    ("371449635398431", "American Express", "Stripe, Braintree"),
    ("6011111111111117", "Discover", "Stripe, Braintree"),
    ("6011000990139424", "Discover", "Stripe, Braintree"),
    ("6011981111111113", "Discover debit", "Stripe"),
    ("3056930009020004", "Diners Club", "Stripe"),
    ("36227206271667", "Diners Club (14 digits)", "Stripe"),
    ("6555900000604105", "BCcard and DinaCard", "Stripe"),
    ("3566002020360505", "JCB", "Stripe, Braintree"),
    ("6200000000000005", "UnionPay", "Stripe"),
    ("6200000000000047", "UnionPay debit", "Stripe"),
    ("6205500000000000004", "UnionPay (19 digits)", "Stripe"),
    ("4111111111111111", "Visa", "Braintree, Adyen, Authorize.Net"),
    ("4005519200000004", "Visa", "Braintree"),
    ("4009348888881881", "Visa", "Braintree"),
    ("4012888888881881", "Visa", "Braintree, PayPal"),
    ("4500600000000061", "Visa prepaid", "Braintree"),
    ("4111111111131010", "Visa commercial", "Braintree"),
    ("2223000048400011", "Mastercard 2-series", "Braintree"),
    ("378734493671000", "American Express corporate", "Braintree"),
    ("371260714673002", "American Express (pay with points)", "Braintree"),
    ("6011000991300009", "Discover", "Braintree"),
    ("3530111333300000", "JCB", "Braintree"),
    ("6304000000000000", "Maestro", "Braintree"),
    ("6799990100000000019", "Maestro (19 digits)", "Braintree, Worldpay"),
    ("5066991111111118", "Elo", "Braintree, Adyen"),
    ("38520000023237", "Diners Club", "Braintree"),
    ("30569309025904", "Diners Club", "Braintree"),
    ("370000000000002", "American Express", "Adyen, Authorize.Net"),
    ("6011601160116611", "Discover", "Adyen"),
    ("3569990010095841", "JCB", "Adyen"),
    ("6771798021000008", "Maestro", "Adyen"),
    ("5000550000000029", "Maestro", "Adyen"),
    ("6771830000000000006", "Maestro (19 digits)", "Adyen"),
    ("8171999927660000", "UnionPay", "Adyen"),
    ("8171999900000000021", "UnionPay (19 digits)", "Adyen"),
    ("6062828888666688", "Hipercard", "Adyen"),
    ("5019555544445555", "Dankort", "Adyen"),
    ("36006666333344", "Diners Club", "Adyen"),
    ("36070500001020", "Diners Club", "Adyen"),
    ("6703444444444449", "Bancontact (Maestro range)", "Adyen"),
    ("135410014004955", "UATP", "Adyen"),
    ("4035501000000008", "Cartes Bancaires / Visa", "Adyen"),
    ("2222400070000005", "Mastercard 2-series", "Adyen"),
    ("5577000055770004", "Mastercard", "Adyen"),
    ("4917610000000000", "Visa Electron", "Adyen"),
    ("4007000000027", "Visa (13 digits)", "Authorize.Net"),
    ("4012888818888", "Visa (13 digits)", "Authorize.Net"),
    ("4222222222222", "Visa (13 digits)", "PayPal"),
    ("5424000000000015", "Mastercard", "Authorize.Net"),
    ("2223000010309703", "Mastercard 2-series", "Authorize.Net"),
    ("6011000000000012", "Discover", "Authorize.Net"),
    ("3088000000000017", "JCB", "Authorize.Net"),
    ("38000000000006", "Diners Club", "Authorize.Net"),
    ("340000000000009", "American Express", "Square"),
    ("6011000000000004", "Discover", "Square"),
    ("6331101999990016", "Switch/Solo", "PayPal Payflow"),
    ("5610591081018250", "Australian Bankcard", "PayPal Payflow"),
    ("5019717010103742", "Dankort", "PayPal Payflow"),
    ("6759649826438453", "Maestro UK", "Worldpay"),
    ("5641820000000005", "Maestro", "Access PaySuite"),
    ("4844215500115643", "Visa Electron", "Access PaySuite"),
    ("2200111753579001", "Mir", "Tochka Bank"),
    ("2200117996077364", "Mir", "Tochka Bank"),
    ("2200119066335755", "Mir", "Tochka Bank"),
    ("9792030000000000", "Troy", "iyzico"),
    ("9792020000000001", "Troy", "iyzico"),
    ("5061460410120223210", "Verve (19 digits)", "Flutterwave"),
    ("5061460166976054667", "Verve (19 digits)", "Flutterwave"),
)


def old_rule(digits: str) -> bool:
    """What was refused before the network table: Luhn and a first digit some network uses."""
    return luhn_valid(digits) and (
        digits[0] in "23456"
        or (digits[0] == "1" and len(digits) == 15)
        or (digits[0] == "8" and digits[1] in "12")
        or digits.startswith("9792")
    )


def with_check_digit(body: str) -> str:
    """``body`` and the digit that makes it Luhn-valid."""
    return next(body + digit for digit in "0123456789" if luhn_valid(body + digit))


def random_numeric_ids(seed: int, count: int) -> list[str]:
    """Numeric ids of 13 to 19 digits (length uniform, no leading zero), as a random or hashed id
    generator hands them out."""
    rng = random.Random(seed)
    ids = []
    for _ in range(count):
        length = rng.randint(13, 19)
        ids.append(str(rng.randrange(10 ** (length - 1), 10**length)))
    return ids


def _in_range(rng: random.Random, prefix_range: str) -> str:
    low, _, high = prefix_range.partition("-")
    return str(rng.randint(int(low), int(high or low))).zfill(len(low))


def network_card(rng: random.Random, network: CardNetwork) -> str:
    """A card number this network could issue: one of its ranges and lengths, Luhn-valid."""
    lengths = [length for length in network.lengths if 13 <= length <= 19]
    length = rng.choice(lengths)
    prefix = _in_range(rng, rng.choice(network.prefixes))
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return with_check_digit(body)


def every_network_cards(seed: int, per_network: int) -> list[tuple[str, str]]:
    """``per_network`` generated (network name, card number) pairs for every network in the table."""
    rng = random.Random(seed)
    return [(network.name, network_card(rng, network)) for network in NETWORKS for _ in range(per_network)]
