"""The two rates docs/security.md publishes: every published test card is detected, and the share of
random numeric ids refused is what the network table implies (bench/pan_rates.py prints them)."""

from __future__ import annotations

import math
import statistics

import pytest
from tests.pan_samples import (
    PUBLISHED_TEST_CARDS,
    every_network_cards,
    old_rule,
    random_numeric_ids,
    with_check_digit,
)

from payorch.security.card_networks import MAX_LENGTH, MIN_LENGTH, NETWORKS, issued_share, networks_of
from payorch.security.pan import contains_pan, find_pans, is_card_number, mask_pans

SEED = 18
SAMPLE = 200_000
# The table's published ranges cover 31.7% of the prefixes of 13-19 digit numbers and Luhn passes one
# number in ten: 3.2% of random ids are card numbers by every rule a network publishes, and no
# detector that finds all cards can refuse fewer. The bound leaves room for sampling and fails when a
# change to the table or to the detector moves the share by a tenth.
FALSE_POSITIVE_BOUND = 0.035


def test_every_published_test_card_is_detected() -> None:
    missed = [
        (number, network, source) for number, network, source in PUBLISHED_TEST_CARDS if not is_card_number(number)
    ]
    assert missed == []
    for number, _, _ in PUBLISHED_TEST_CARDS:
        assert contains_pan(f"card {number} here")
        assert find_pans(number) == [(0, len(number))]
        assert number not in mask_pans(number)


def test_generated_cards_of_every_network_are_detected() -> None:
    cards = every_network_cards(SEED, per_network=100)
    assert {name for name, _ in cards} == {network.name for network in NETWORKS}
    missed = [(name, card) for name, card in cards if not contains_pan(card) or name not in networks_of(card)]
    assert missed == []


def test_the_share_of_random_numeric_ids_refused_is_the_tables() -> None:
    ids = random_numeric_ids(SEED, SAMPLE)
    refused = sum(map(contains_pan, ids)) / len(ids)
    expected = statistics.fmean(issued_share(length) for length in range(MIN_LENGTH, MAX_LENGTH + 1)) / 10
    sigma = math.sqrt(expected * (1 - expected) / len(ids))
    assert abs(refused - expected) < 5 * sigma, (refused, expected)
    assert refused < FALSE_POSITIVE_BOUND
    assert refused < 0.7 * sum(map(old_rule, ids)) / len(ids)


@pytest.mark.parametrize("length", range(MIN_LENGTH, MAX_LENGTH + 1))
def test_ids_of_one_length_are_refused_as_the_table_says(length: int) -> None:
    ids = [i for i in random_numeric_ids(SEED + length, 40_000) if len(i) == length]
    refused = sum(map(is_card_number, ids)) / len(ids)
    expected = issued_share(length) / 10
    assert abs(refused - expected) < 5 * math.sqrt(expected * (1 - expected) / len(ids)), (refused, expected)


def test_timestamp_and_snowflake_ids_are_never_cards() -> None:
    # Epoch milliseconds, microseconds and nanoseconds (13, 16, 19 digits) and 18-19 digit snowflake
    # ids all start with 1 for decades; made Luhn-valid, none is a card: no network issues on 1 at
    # those lengths.
    for length in (13, 16, 18, 19):
        first, step = 10 ** (length - 1), 10 ** (length - 1) // 5_000
        for k in range(5_000):
            number = with_check_digit(str(first + k * step)[:-1])
            assert number[0] == "1"
            assert not is_card_number(number), number
