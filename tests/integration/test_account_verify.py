"""``verify: true`` on ``/v1/gateway_accounts`` (docs/routing.md): one cheap authenticated call, made
by each gateway's real SDK or client against its fake, before anything is stored. Accepted
credentials are stored; refused ones are a 400 that says so and store nothing; an unreachable
gateway is a 503 and stores nothing."""

from __future__ import annotations

import httpx
import pytest
from tests.factories import MerchantFixture, create_merchant
from tests.integration.accounts_support import UNREACHABLE, connect, credentials
from tests.integration.orchestration_support import Fakes

from payorch.runtime import Runtime

# What a wrong credential looks like at each gateway: the key itself, and keys that do not reach
# the merchant account they name.
WRONG = [
    ("stripe", "api_key", "sk_test_revoked_0000"),
    ("braintree", "private_key", "not_the_private_key"),
    ("braintree", "merchant_account", "someone_else"),
    ("adyen", "api_key", "AQE_revoked_key"),
    ("adyen", "merchant_account", "SomeoneElseECOM"),
]


async def names(client: httpx.AsyncClient, merchant: MerchantFixture) -> list[str]:
    listed = await client.get("/v1/gateway_accounts", headers=merchant.headers)
    return [account["name"] for account in listed.json()["data"]]


def gateway_calls(gateway_fakes: Fakes, kind: str) -> int:
    """How many requests the gateway's fake has answered or refused so far (Braintree: its
    client-token calls)."""
    if kind == "braintree":
        verify = [op for op, _ in gateway_fakes.braintree.requests if op == "client_token"]
        return len(verify) + gateway_fakes.braintree.refused_requests.count("client_token")
    return (gateway_fakes.stripe if kind == "stripe" else gateway_fakes.adyen).request_count


@pytest.mark.parametrize("kind", ["stripe", "braintree", "adyen", "sandbox"])
async def test_accepted_credentials_are_verified_then_stored(
    accounts_app: tuple[Runtime, httpx.AsyncClient], gateway_fakes: Fakes, kind: str
) -> None:
    runtime, client = accounts_app
    merchant = await create_merchant(runtime)
    before = 0 if kind == "sandbox" else gateway_calls(gateway_fakes, kind)
    account = await connect(
        client, merchant, kind, "verified", verify=True, credentials=credentials(gateway_fakes, kind)
    )
    assert account["gateway"] == kind
    if kind != "sandbox":
        assert gateway_calls(gateway_fakes, kind) == before + 1
    assert await names(client, merchant) == ["verified"]
    # The update re-verifies the stored credentials when asked.
    again = await client.post(f"/v1/gateway_accounts/{account['id']}", json={"verify": True}, headers=merchant.headers)
    assert again.status_code == 200, again.text
    assert again.json()["credentials"] == account["credentials"]


@pytest.mark.parametrize(("kind", "field", "value"), WRONG)
async def test_refused_credentials_are_a_400_and_store_nothing(
    accounts_app: tuple[Runtime, httpx.AsyncClient], gateway_fakes: Fakes, kind: str, field: str, value: str
) -> None:
    runtime, client = accounts_app
    merchant = await create_merchant(runtime)
    wrong = {**credentials(gateway_fakes, kind), field: value}
    before = gateway_calls(gateway_fakes, kind)
    refused = await client.post(
        "/v1/gateway_accounts",
        json={"gateway": kind, "name": "refused", "verify": True, "credentials": wrong},
        headers=merchant.headers,
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["param"]) == ("credentials_refused", "credentials")
    assert "refused these credentials" in error["message"]
    assert value not in refused.text
    assert gateway_calls(gateway_fakes, kind) == before + 1  # the gateway was asked, and said no
    assert await names(client, merchant) == []
    # Unverified, the same credentials are stored (the merchant's call); verifying them later is refused.
    stored = await connect(client, merchant, kind, "unverified", credentials=wrong)
    update = await client.post(f"/v1/gateway_accounts/{stored['id']}", json={"verify": True}, headers=merchant.headers)
    assert update.status_code == 400
    assert update.json()["error"]["code"] == "credentials_refused"
    # New credentials given with verify are checked before they replace the stored ones.
    fixed = await client.post(
        f"/v1/gateway_accounts/{stored['id']}",
        json={"verify": True, "credentials": credentials(gateway_fakes, kind)},
        headers=merchant.headers,
    )
    assert fixed.status_code == 200, fixed.text
    reverified = await client.post(
        f"/v1/gateway_accounts/{stored['id']}", json={"verify": True}, headers=merchant.headers
    )
    assert reverified.status_code == 200, reverified.text


@pytest.mark.parametrize("kind", ["stripe", "braintree", "adyen"])
async def test_an_unreachable_gateway_is_a_503_and_stores_nothing(
    accounts_app: tuple[Runtime, httpx.AsyncClient], gateway_fakes: Fakes, kind: str
) -> None:
    runtime, client = accounts_app
    merchant = await create_merchant(runtime)
    base_url = f"{UNREACHABLE}/v71" if kind == "adyen" else UNREACHABLE
    unreachable = {**credentials(gateway_fakes, kind), "base_url": base_url}
    answer = await client.post(
        "/v1/gateway_accounts",
        json={"gateway": kind, "name": "unreachable", "verify": True, "credentials": unreachable},
        headers=merchant.headers,
    )
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "gateway_unavailable"
    assert "nothing was stored" in answer.json()["error"]["message"]
    assert await names(client, merchant) == []
