from __future__ import annotations

import time

import pytest

from payorch.ids import has_prefix, new_id
from payorch.money import UnknownCurrency, exponent, normalize_currency, to_major_string
from payorch.payments.states import (
    AttemptStatus,
    ChargeStatus,
    InvalidTransition,
    can_transition,
    transition,
    transition_attempt,
)
from payorch.security.api_keys import parse


@pytest.mark.parametrize(
    ("code", "exp"),
    [
        ("usd", 2),
        ("JPY", 0),
        ("krw", 0),
        ("KWD", 3),
        ("bhd", 3),
        ("jod", 3),
        ("omr", 3),
        ("tnd", 3),
        ("clf", 4),
        ("eur", 2),
    ],
)
def test_exponents(code: str, exp: int) -> None:
    assert exponent(code) == exp
    assert normalize_currency(code) == code.lower()


@pytest.mark.parametrize("code", ["xyz", "us", "", "usdd", "ЕUR"])
def test_unknown_currencies(code: str) -> None:
    with pytest.raises(UnknownCurrency):
        normalize_currency(code)


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [(1050, "usd", "10.50"), (5, "usd", "0.05"), (500, "jpy", "500"), (1234, "kwd", "1.234"), (-7, "eur", "-0.07")],
)
def test_major_strings_are_exact(amount: int, currency: str, text: str) -> None:
    assert to_major_string(amount, currency) == text


def test_ids_sort_by_creation_time() -> None:
    first = new_id("ch")
    time.sleep(0.002)
    second = new_id("ch")
    assert first < second
    assert has_prefix(first, "ch")
    assert not has_prefix(first, "re")
    assert len({new_id("att") for _ in range(1000)}) == 1000


def test_charge_state_machine() -> None:
    assert transition(ChargeStatus.PENDING, ChargeStatus.SUCCEEDED) is ChargeStatus.SUCCEEDED
    assert transition(ChargeStatus.PROCESSING, ChargeStatus.FAILED) is ChargeStatus.FAILED
    assert transition(ChargeStatus.AUTHORIZED, ChargeStatus.CANCELED) is ChargeStatus.CANCELED
    for final in (ChargeStatus.SUCCEEDED, ChargeStatus.FAILED, ChargeStatus.CANCELED):
        for target in ChargeStatus:
            assert not can_transition(final, target)
    with pytest.raises(InvalidTransition):
        transition(ChargeStatus.FAILED, ChargeStatus.SUCCEEDED)
    with pytest.raises(InvalidTransition):
        transition(ChargeStatus.SUCCEEDED, ChargeStatus.PENDING)


def test_attempt_state_machine() -> None:
    assert transition_attempt(AttemptStatus.PENDING, AttemptStatus.UNKNOWN) is AttemptStatus.UNKNOWN
    assert transition_attempt(AttemptStatus.UNKNOWN, AttemptStatus.REVIEW) is AttemptStatus.REVIEW
    assert transition_attempt(AttemptStatus.APPROVED, AttemptStatus.REVERSED) is AttemptStatus.REVERSED
    with pytest.raises(InvalidTransition):
        transition_attempt(AttemptStatus.DECLINED, AttemptStatus.APPROVED)
    with pytest.raises(InvalidTransition):
        transition_attempt(AttemptStatus.NOT_SENT, AttemptStatus.APPROVED)


def test_api_key_format() -> None:
    good = "sk_test_" + "a" * 12 + "B" * 32
    assert parse(good) == ("test", "a" * 12)
    assert parse("sk_live_" + "a" * 44) == ("live", "a" * 12)
    for bad in ("sk_test_short", "pk_test_" + "a" * 44, "sk_test_" + "a" * 43 + "!", "", "sk_prod_" + "a" * 44):
        assert parse(bad) is None


def test_the_stale_window_must_outlast_the_request_deadline() -> None:
    from pydantic import ValidationError

    from payorch.settings import Settings

    with pytest.raises(ValidationError, match="stale_after_seconds must exceed"):
        Settings(routing={"deadline_ms": 90_000})
    accepted = Settings(routing={"deadline_ms": 90_000}, idempotency={"stale_after_seconds": 120})
    assert accepted.idempotency.stale_after_seconds == 120


def test_a_charge_waiting_for_its_customer_ends_only_in_a_final_state() -> None:
    assert transition(ChargeStatus.PENDING, ChargeStatus.REQUIRES_ACTION) is ChargeStatus.REQUIRES_ACTION
    for target in (ChargeStatus.SUCCEEDED, ChargeStatus.AUTHORIZED, ChargeStatus.FAILED, ChargeStatus.CANCELED):
        assert can_transition(ChargeStatus.REQUIRES_ACTION, target)
    assert not can_transition(ChargeStatus.REQUIRES_ACTION, ChargeStatus.PROCESSING)
    assert not can_transition(ChargeStatus.PROCESSING, ChargeStatus.REQUIRES_ACTION)
    assert transition_attempt(AttemptStatus.PENDING, AttemptStatus.REQUIRES_ACTION) is AttemptStatus.REQUIRES_ACTION
    with pytest.raises(InvalidTransition):
        transition_attempt(AttemptStatus.REQUIRES_ACTION, AttemptStatus.UNKNOWN)
