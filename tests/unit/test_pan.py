import pytest

from payorch.security.pan import contains_pan, find_pans, is_card_number, luhn_valid, mask_pans


def with_check_digit(prefix: str) -> str:
    """Append the digit that makes ``prefix`` Luhn-valid, so false-positive cases pass Luhn."""
    return next(prefix + d for d in "0123456789" if luhn_valid(prefix + d))


@pytest.mark.parametrize(
    "number",
    [
        "4242424242424242",  # Visa
        "4000056655665556",  # Visa debit
        "5555555555554444",  # Mastercard
        "2223003122003222",  # Mastercard 2-series
        "378282246310005",  # Amex, 15 digits
        "6011111111111117",  # Discover
        "3056930009020004",  # Diners, 16
        "36227206271667",  # Diners, 14
        "6200000000000005",  # UnionPay
        "4222222222222",  # Visa, 13 digits
        "6250941006528599",  # UnionPay
        "3566002020360505",  # JCB
        "4242424242424242428",  # 19 digits, Luhn-valid
    ],
)
def test_test_cards_are_found(number):
    assert luhn_valid(number)
    assert is_card_number(number)
    assert contains_pan(f"card {number} please")


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("4242424242424242", "424242******4242"),
        ("pay with 4242 4242 4242 4242 now", "pay with 424242******4242 now"),
        ("amex 3782-822463-10005.", "amex 378282*****0005."),
        ('{"pan":"5555555555554444"}', '{"pan":"555555******4444"}'),
        ("tok_4242424242424242", "tok_424242******4242"),
        ("a 4242424242424242, b 5555555555554444", "a 424242******4242, b 555555******4444"),
        ("order 12 card 4242 4242 4242 4242", "order 12 card 424242******4242"),
    ],
)
def test_masking_keeps_bin_and_last_four(text, masked):
    assert mask_pans(text) == masked
    assert not contains_pan(masked)


def test_card_inside_longer_separated_run_is_found():
    text = "ref 1234 4242 4242 4242 4242 9999"
    assert contains_pan(text)
    assert "4242424242424242" not in mask_pans(text).replace(" ", "")


@pytest.mark.parametrize(
    "text",
    [
        "4242424242424241",  # Luhn fails
        "1234567890123",  # not Luhn
        with_check_digit("170000000000"),  # epoch ms (13 digits, starts with 1), Luhn-valid
        with_check_digit("170000000000000"),  # epoch us
        with_check_digit("170000000000000000"),  # epoch ns
        with_check_digit("123456789012345678"),  # snowflake-style id
        "0000000000000000",  # all zeros: Luhn-valid, no issuer
        with_check_digit("700000000000000"),  # no card network issues on 7
        with_check_digit("4242424242424242424"),  # 20 contiguous digits: an id, not a card
        "ch_01H7Z4242424242424242XQ",  # digits glued to letters (ids, digests)
        "sha256 a4242424242424242b",
        "2024-01-15 12:30:45.123456",  # timestamps
        "2024-01-15T12:30:45Z",
        "+1 (415) 555-0100",  # phone
        "12345",
        "",
        "424242424242",  # 12 digits
        "4242--4242-4242-4242",  # doubled separator is not card formatting
    ],
)
def test_false_positives_are_not_cards(text):
    assert not contains_pan(text)
    assert mask_pans(text) == text
    assert find_pans(text) == []


def test_luhn_valid_13_digit_uatp_prefix_only_at_15():
    assert is_card_number("135412345678911")  # UATP test number, 15 digits
    assert not is_card_number("1354123456789")  # 13 digits starting with 1 is a timestamp shape


def test_large_text_without_digits_is_left_alone():
    text = "lorem ipsum " * 10_000
    assert mask_pans(text) is text
