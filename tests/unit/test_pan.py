import random
import sys

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


def test_any_run_of_separators_still_separates():
    # Issue 18: any run of non-alphanumeric characters between digit groups is a separator. The
    # doubled dash here was once taken for "not card formatting"; it is a card written oddly.
    assert contains_pan("4242--4242-4242-4242")
    assert mask_pans("4242--4242-4242-4242") == "424242******4242"


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


VISA = "4242424242424242"
AMEX = "378282246310005"


def in_script(digits: str, zero: str) -> str:
    """``digits`` written in the decimal digits that start at ``zero``."""
    return "".join(chr(ord(zero) + int(d)) for d in digits)


@pytest.mark.parametrize(
    "zero",
    [
        "\uff10",  # full-width
        "\u0660",  # Arabic-Indic
        "\u06f0",  # extended Arabic-Indic (Persian, Urdu)
        "\u0966",  # Devanagari
        "\u09e6",  # Bengali
        "\u0e50",  # Thai
        "\u1040",  # Myanmar
        "\U0001d7ce",  # mathematical bold
        "\U0001d7f6",  # mathematical monospace
        "\U0001fbf0",  # segmented (legacy computing)
    ],
)
def test_every_unicode_decimal_digit_is_a_digit(zero):
    written = in_script(VISA, zero)
    assert contains_pan(f"card {written} thanks")
    assert mask_pans(f"card {written} thanks") == "card 424242******4242 thanks"
    mixed = "".join(in_script(d, zero) if i % 2 else d for i, d in enumerate(VISA))
    assert contains_pan(mixed)


def test_nfkc_digits_count_too():
    assert contains_pan("\u2074\u00b2\u2074\u00b2" * 4)  # superscripts: ⁴²⁴²...
    assert contains_pan("\u2084\u2082\u2084\u2082" * 4)  # subscripts
    assert contains_pan("\u32b7" * 8)  # ㊷ CIRCLED NUMBER FORTY TWO, eight times: 4242424242424242
    assert find_pans("x \u32b7\u32b7\u32b7\u32b7\u32b7\u32b7\u32b7\u32b7 y") == [(2, 10)]
    assert mask_pans("x \u32b7\u32b7\u32b7\u32b7\u32b7\u32b7\u32b7\u32b7 y") == "x 424242******4242 y"


@pytest.mark.parametrize(
    "separator",
    [
        ".", "/", "_", "\t", "\n", ",", ", ", " - ", "--", "...", "|", "*", "#", ":", "+",
        "\u00a0", "\u2007", "\u2009", "\u202f", "\u3000", "\u1680",  # no-break, figure, thin, ideographic spaces
        "\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015", "\u2212", "\ufe63", "\uff0d",  # dashes, minus
        "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e",  # zero-width and format (Cf)
        "\u0301", "\u20e3", "\ufe0f",  # combining marks, variation selector
        "\u200b\u00a0-\u2009",  # a mixed run
    ],
)  # fmt: skip
def test_any_non_alphanumeric_run_separates_groups(separator):
    for groups in (["4242", "4242", "4242", "4242"], ["3782", "822463", "10005"], list(VISA)):
        written = separator.join(groups)
        assert contains_pan(written), repr(written)
        assert contains_pan(f"pay {written} now")
        digits = "".join(groups)
        assert mask_pans(f"pay {written} now") == f"pay {digits[:6]}{'*' * (len(digits) - 10)}{digits[-4:]} now"


def test_a_number_glued_to_letters_on_one_side_is_a_card():
    for text in (
        f"ORD{VISA}",
        f"card{VISA}",
        f"{VISA}exp1225",
        f"cc{AMEX}",
        f"VISA{VISA}",
        f"\uff2f\uff32\uff24{VISA}",
    ):
        assert contains_pan(text), text
        assert VISA not in mask_pans(text)
        assert AMEX not in mask_pans(text)
    assert mask_pans(f"ORD{VISA}") == "ORD424242******4242"


def test_a_number_inside_a_token_is_not_a_card():
    # Letters on both sides: a hex digest, a base32 or base62 id (docs/security.md: the evidence).
    for text in (f"a{VISA}b", f"ch_01H7Z{VISA}XQ", f"deadbeef{VISA}cafe", f"\uff41{VISA}\uff42"):
        assert not contains_pan(text), text
        assert mask_pans(text) == text


def test_letters_of_other_scripts_do_not_glue():
    for text in (
        f"\u30ab\u30fc\u30c9{VISA}\u3067\u3059",
        f"\u0628\u0637\u0627\u0642\u0629{VISA}\u0634\u0643\u0631\u0627",
    ):
        assert contains_pan(text), text
    # ...but they do end a number: a letter between groups is not a separator.
    assert not contains_pan("4242\u30ab4242\u30ab4242\u30ab4242")


def test_e164_phone_numbers_are_not_cards():
    for phone in (
        "+55 11 91234 5678",
        "+49 151 23456789",
        "+62 812 3456 7890",
        "+4915123456789",
        "\uff0b5511912345678",
    ):
        digits = "".join(c for c in phone if c.isdigit())
        assert 13 <= len(digits) <= 15
        assert not contains_pan(phone), phone
    # Without its "+", or longer than E.164 allows, it is read as any other number.
    assert contains_pan("+" + VISA)
    assert contains_pan(with_check_digit("491512345678"))  # 13 digits: a Visa number


def test_luhn_valid_numbers_no_network_issues_are_not_cards():
    for body in (
        "7" * 15,
        "8" * 15,
        "9" * 15,
        "37" + "0" * 13,
        "4" * 13,
        "4" * 16,
        "1" * 15,
        "30" + "0" * 10,
        "0" * 15,
    ):
        number = with_check_digit(body)
        assert luhn_valid(number)
        assert contains_pan(number) == is_card_number(number)
    assert not is_card_number(with_check_digit("37" + "1" * 13))  # Amex is 15 digits, not 16
    assert not is_card_number(with_check_digit("4" * 13))  # Visa is 13, 16, 18 or 19 digits, not 14
    assert not is_card_number(with_check_digit("88" + "0" * 13))  # no network issues on 88


def test_no_character_folds_to_more_digits_than_the_prescreen_allows():
    from payorch.security import pan

    folds = [pan._fold_char(chr(code)) for code in range(128, sys.maxunicode + 1)]
    assert max(sum(part.isdigit() for part in folded) for folded in folds) <= pan._MOST_DIGITS_PER_CHAR
    assert all(folds)  # no character folds to nothing: equal lengths mean equal positions


def test_the_run_search_checks_luhn_as_luhn_valid_does():
    from payorch.security import pan

    rng = random.Random(18)
    for _ in range(500):
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 30)))
        even, odd = pan._luhn_sums(digits)
        for start in range(len(digits)):
            for stop in range(start + 1, len(digits) + 1):
                sums = even if stop % 2 == 0 else odd
                assert ((sums[stop] - sums[start]) % 10 == 0) == luhn_valid(digits[start:stop])


def test_a_long_run_of_small_groups_is_searched_whole():
    # Thousands of one- and two-digit groups: every stretch of 13-19 digits is a candidate.
    # (No network issues on 7, so only stretches starting inside the card can be cards.)
    text = "7 7 " * 5000 + " ".join(VISA) + " 7 7" * 5000
    (span,) = find_pans(text)
    assert span[0] == 20000
    assert span[1] >= 20000 + 2 * len(VISA) - 1
    assert "4 2 4 2" not in mask_pans(text)
