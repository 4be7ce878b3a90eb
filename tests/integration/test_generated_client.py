"""The API document as a client generator sees it (issue 18): ``openapi-python-client`` generates a
client from the served ``/openapi.json``, the generated package is imported, and it drives a
charge, a refund, a parsed 402 decline and parsed 400s against ``payorch serve`` on loopback. Its
functions are named by the document's ``operationId`` (``create_charge``, not FastAPI's
``create_charge_v1_charges_post``), and it knows no 422: payorch never answers one."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from tests.factories import create_merchant
from tests.integration.served_payorch import Served, serve

from payorch.runtime import Runtime

PACKAGE = "payorch_client"


@pytest.fixture(scope="module")
def served(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(database_url, tmp_path_factory.mktemp("served-client")) as process:
        yield process


@pytest.fixture(scope="module")
def generated(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client generated from the served document, imported as ``payorch_client``."""
    where = tmp_path_factory.mktemp("generated")
    document = where / "openapi.json"
    document.write_bytes(httpx.get(f"{served.url}/openapi.json", timeout=10).content)
    config = where / "config.yaml"
    config.write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n")
    generator = Path(sys.executable).with_name("openapi-python-client")
    finished = subprocess.run(
        [
            str(generator),
            "generate",
            "--path",
            str(document),
            "--config",
            str(config),
            "--meta",
            "none",
            "--output-path",
            str(where / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]


def module(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


def test_every_operation_is_a_function_named_by_its_operation_id(generated: ModuleType) -> None:
    for operation in (
        "charges.create_charge",
        "charges.list_charges",
        "charges.retrieve_charge",
        "charges.capture_charge",
        "charges.cancel_charge",
        "refunds.create_refund",
        "refunds.retrieve_refund",
        "payment_methods.create_payment_method",
    ):
        assert callable(module(f"api.{operation}").asyncio_detailed), operation
    models = module("models")
    assert not hasattr(models, "HTTPValidationError")


async def test_a_charge_a_refund_a_decline_and_refusals_through_the_generated_client(
    generated: ModuleType, served: Served, runtime: Runtime
) -> None:
    merchant = await create_merchant(runtime)
    models = module("models")
    create_charge, retrieve_charge = module("api.charges.create_charge"), module("api.charges.retrieve_charge")
    create_refund = module("api.refunds.create_refund")

    def body(token: str, currency: str = "usd", amount: int = 2500) -> Any:
        tokens = models.TokensPaymentMethodTokens.from_dict({"sandbox": token})
        return models.ChargeCreate(amount=amount, currency=currency, payment_method=models.TokensPaymentMethod(tokens))

    async with generated.AuthenticatedClient(
        base_url=served.url, token=merchant.key, raise_on_unexpected_status=True
    ) as client:
        created = await create_charge.asyncio_detailed(client=client, body=body("tok_visa"), idempotency_key="gen-1")
        assert created.status_code == 201
        charge = created.parsed
        assert isinstance(charge, models.ChargeOut)
        assert (charge.status, charge.amount_captured, charge.currency) == (
            models.ChargeOutStatus.SUCCEEDED,
            2500,
            "usd",
        )
        fetched = await retrieve_charge.asyncio(charge.id, client=client)
        assert (fetched.id, fetched.status) == (charge.id, models.ChargeOutStatus.SUCCEEDED)

        refunded = await create_refund.asyncio_detailed(
            client=client, body=models.RefundCreate(charge=charge.id, amount=1000)
        )
        assert refunded.status_code == 201
        assert isinstance(refunded.parsed, models.RefundOut)
        assert (refunded.parsed.charge, refunded.parsed.amount) == (charge.id, 1000)
        assert refunded.parsed.status == models.RefundOutStatus.SUCCEEDED

        declined = await create_charge.asyncio_detailed(client=client, body=body("tok_chargeDeclined"))
        assert declined.status_code == 402
        decline = declined.parsed
        assert isinstance(decline, models.ErrorEnvelope)
        assert (decline.error.type_, decline.error.code) == (models.ErrorBodyType.CARD_ERROR, "card_declined")
        assert decline.error.decline_code == "card_declined"
        assert decline.error.charge.startswith("ch_")

        invalid = await create_charge.asyncio_detailed(client=client, body=body("tok_visa", currency="zzz"))
        assert invalid.status_code == 400
        assert isinstance(invalid.parsed, models.ErrorEnvelope)
        assert (invalid.parsed.error.code, invalid.parsed.error.param) == ("parameter_invalid", "currency")

        refused = await create_charge.asyncio_detailed(client=client, body=body("tok_bogus"))
        assert refused.status_code == 400
        assert isinstance(refused.parsed, models.ErrorEnvelope)
        assert (refused.parsed.error.type_, refused.parsed.error.code) == (
            models.ErrorBodyType.INVALID_REQUEST_ERROR,
            "token_rejected",
        )
        assert "sandbox refused: No such token at the sandbox. (invalid_token)" in refused.parsed.error.message
