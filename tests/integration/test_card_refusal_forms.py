"""Issue 18, card numbers: every network's numbers are refused however they are written (separators of
any kind, digits of any script, glued to letters, in the query or the path), and numbers no network
issues pass. Through the real app, against the real database."""

from __future__ import annotations

import random
from urllib.parse import quote

import httpx
import pytest
from tests.card_storage import assert_nothing_kept, kept
from tests.factories import MerchantFixture, charge_body, create_merchant
from tests.pan_samples import network_card, with_check_digit

from payorch.runtime import Runtime
from payorch.security.card_networks import NETWORKS, CardNetwork

VISA = "4242424242424242"
MIR = "2200111753579001"
MAESTRO_19 = "6799990100000000019"
AMEX = "378282246310005"
TROY = "9792030000000000"
UNIONPAY_19 = "6205500000000000004"


def digits_in(zero: str, digits: str) -> str:
    return "".join(chr(ord(zero) + int(d)) for d in digits)


WRITTEN: list[tuple[str, str, str]] = [
    ("dots", VISA, "4242.4242.4242.4242"),
    ("slashes", MIR, "2200/1117/5357/9001"),
    ("underscores", AMEX, "3782_822463_10005"),
    ("doubled dashes", VISA, "4242--4242--4242--4242"),
    ("tabs and newlines", VISA, "4242\t4242\n4242\r\n4242"),
    ("no-break and thin spaces", MAESTRO_19, "6799\u00a09901\u20090000\u202f0000\u2007019"),
    ("ideographic space", UNIONPAY_19, "6205\u30005000\u30000000\u30000000\u3000004"),
    ("en and em dashes, minus", VISA, "4242\u20134242\u20144242\u22124242"),
    ("zero-width space", VISA, "4242\u200b4242\u200b4242\u200b4242"),
    ("zero-width joiner, word joiner", TROY, "9792\u200d0300\u20600000\u200d0000"),
    ("soft hyphen, byte-order mark", VISA, "4242\u00ad4242\ufeff4242\u00ad4242"),
    ("one digit at a time", AMEX, " ".join(AMEX)),
    ("full-width digits", VISA, digits_in("\uff10", VISA)),
    ("Arabic-Indic digits", MIR, digits_in("\u0660", MIR)),
    ("Devanagari digits, spaced", AMEX, " ".join(digits_in("\u0966", AMEX))),
    ("mathematical bold digits", TROY, digits_in("\U0001d7ce", TROY)),
    ("mixed scripts", VISA, "4" + digits_in("\uff10", "242") + digits_in("\u0660", "4242") + "4242" + "4242"),
    ("glued to a prefix", VISA, f"ORD{VISA}"),
    ("glued to a suffix", AMEX, f"{AMEX}exp1225"),
    ("inside Japanese text", VISA, f"\u30ab\u30fc\u30c9{VISA}\u3067\u3059"),
    ("full-width glued", VISA, "\uff43\uff41\uff52\uff44" + digits_in("\uff10", VISA)),
]


@pytest.mark.parametrize(("case", "digits", "written"), WRITTEN, ids=[c[0] for c in WRITTEN])
@pytest.mark.parametrize("field", ["metadata", "description", "Idempotency-Key"])
async def test_a_card_written_any_way_is_refused_and_kept_nowhere(
    runtime: Runtime, client: httpx.AsyncClient, case: str, digits: str, written: str, field: str
) -> None:
    fresh = await create_merchant(runtime)
    headers: dict[str, str | bytes] = dict(fresh.headers)
    if field == "metadata":
        body, param = charge_body(metadata={"note": written}), "metadata.note"
    elif field == "description":
        body, param = charge_body(description=f"paid with {written}, thanks"), "description"
    else:
        body, param = charge_body(), "Idempotency-Key"
        headers["Idempotency-Key"] = written.encode("utf-8")  # Starlette reads it as Latin-1
    response = await client.post("/v1/charges", json=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "card_data_not_allowed"
    assert response.json()["error"]["param"] == param
    assert digits not in response.text
    await assert_nothing_kept(runtime, fresh.id)


@pytest.mark.parametrize("network", NETWORKS, ids=[n.name for n in NETWORKS])
async def test_every_network_is_refused(runtime: Runtime, client: httpx.AsyncClient, network: CardNetwork) -> None:
    rng = random.Random(network.name)
    fresh = await create_merchant(runtime)
    for _ in range(3):
        card = network_card(rng, network)
        spaced = " ".join(card[i : i + 4] for i in range(0, len(card), 4))
        response = await client.post("/v1/charges", json=charge_body(metadata={"n": spaced}), headers=fresh.headers)
        assert response.status_code == 400, (card, response.text)
    await assert_nothing_kept(runtime, fresh.id)


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/v1/charges?ending_before=" + quote(digits_in("\uff10", VISA)), "ending_before"),
        ("/v1/charges?ending_before=4242.4242.4242.4242", "ending_before"),
        ("/v1/charges?ending_before=4242%E2%80%934242%E2%80%934242%E2%80%934242", "ending_before"),
        ("/v1/charges?limit=5&ending_before=ch_1&ending_before=" + quote(f"ORD{VISA}"), "ending_before"),
        ("/v1/charges?ending_before=ch_1&ending_before=4242%2B4242%2B4242%2B4242", "ending_before"),
        ("/v1/charges/4242.4242.4242.4242", "path"),
        ("/v1/charges/" + quote(digits_in("\u0660", MIR)), "path"),
        ("/v1/charges/ORD" + VISA, "path"),
        ("/v1/charges/" + quote("4242\u200b4242\u200b4242\u200b4242"), "path"),
    ],
)
async def test_a_card_written_any_way_in_the_url_is_refused(
    client: httpx.AsyncClient, runtime: Runtime, url: str, param: str
) -> None:
    merchant = await create_merchant(runtime)
    response = await client.get(url, headers=merchant.headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "card_data_not_allowed"
    assert response.json()["error"]["param"] == param


# Luhn-valid numbers in ranges no network issues at their length: refused before issue 18.
NOT_CARDS = [
    with_check_digit("20" + "1" * 13),  # 16 digits from 20: Mastercard starts at 2221, Mir at 2200
    with_check_digit("4" * 13),  # 14 digits from 4: Visa is 13, 16, 18 or 19 digits
    with_check_digit("51" + "2" * 12),  # 15 digits from 51: Mastercard is 16
    with_check_digit("37" + "0" * 13),  # 16 digits from 37: American Express is 15
    with_check_digit("32" + "5" * 14),  # 17 digits from 32
    with_check_digit("55" + "1" * 10),  # "+55 11 ..." below: a Brazilian mobile number
]


@pytest.fixture(scope="module")
async def merchant(runtime: Runtime) -> MerchantFixture:
    return await create_merchant(runtime)


@pytest.mark.parametrize("number", NOT_CARDS)
async def test_numbers_no_network_issues_pass(
    client: httpx.AsyncClient, merchant: MerchantFixture, number: str
) -> None:
    phone = f"+{number[:2]} {number[2:4]} {number[4:9]} {number[9:]}"
    body = charge_body(description=f"order {number}", metadata={"order_id": number, "phone": phone})
    headers = {**merchant.headers, "Idempotency-Key": number}
    response = await client.post("/v1/charges", json=body, headers=headers)
    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == {"order_id": number, "phone": phone}
    assert response.json()["description"] == f"order {number}"


async def test_an_id_with_a_card_inside_a_token_passes(runtime: Runtime, client: httpx.AsyncClient) -> None:
    # Letters on both sides: a hex digest, a base32 id. docs/security.md has the measurements.
    fresh = await create_merchant(runtime)
    for token in (f"a{VISA}b", f"ch_01H7Z{VISA}XQ", f"deadbeef{VISA}cafe0123"):
        response = await client.post("/v1/charges", json=charge_body(metadata={"ref": token}), headers=fresh.headers)
        assert response.status_code == 201, response.text
    assert len((await kept(runtime, fresh.id))["charges"]) == 3
