"""The gateway fakes and the adapter under test, as fixtures (registered in tests/conftest.py).

One server of each fake runs for the whole session; every test gets it with no fault left over
from the test before. ``driver`` and ``adapter`` are the contract suite's: parametrized over every
gateway fake by ``gateway_kind``, which a module testing one gateway overrides with its own kind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from tests.fakes.adyen_server import AdyenFake
from tests.fakes.braintree_driver import BraintreeDriver
from tests.fakes.braintree_server import BraintreeFake
from tests.fakes.drivers import GatewayDriver
from tests.fakes.ledger_drivers import AdyenDriver, StripeDriver
from tests.fakes.stripe_server import StripeFake

from payorch.gateways.base import Gateway

DRIVERS: dict[str, type[GatewayDriver]] = {
    driver.kind: driver for driver in (StripeDriver, BraintreeDriver, AdyenDriver)
}
"""Every gateway fake the contract suite runs against; the fixture of each is ``<kind>_fake``."""


@pytest.fixture(scope="session")
def _stripe_server() -> Iterator[StripeFake]:
    with StripeFake() as server:
        yield server


@pytest.fixture(scope="session")
def _braintree_server() -> Iterator[BraintreeFake]:
    with BraintreeFake() as server:
        yield server


@pytest.fixture(scope="session")
def _adyen_server() -> Iterator[AdyenFake]:
    with AdyenFake() as server:
        yield server


def _without_faults(server: StripeFake | BraintreeFake | AdyenFake) -> Iterator[None]:
    server.clear_faults()
    yield
    server.clear_faults()
    if not isinstance(server, BraintreeFake):  # its held requests end when their client leaves
        server.release()


@pytest.fixture
def stripe_fake(_stripe_server: StripeFake) -> Iterator[StripeFake]:
    for _ in _without_faults(_stripe_server):
        yield _stripe_server


@pytest.fixture
def braintree_fake(_braintree_server: BraintreeFake) -> Iterator[BraintreeFake]:
    for _ in _without_faults(_braintree_server):
        yield _braintree_server


@pytest.fixture
def adyen_fake(_adyen_server: AdyenFake) -> Iterator[AdyenFake]:
    for _ in _without_faults(_adyen_server):
        yield _adyen_server


@pytest.fixture(params=list(DRIVERS))
def gateway_kind(request: pytest.FixtureRequest) -> str:
    """Which gateway fake a contract test runs against (overridden by a one-gateway module)."""
    kind: str = request.param
    return kind


@pytest.fixture
def driver(gateway_kind: str, request: pytest.FixtureRequest) -> GatewayDriver:
    cls = DRIVERS[gateway_kind]
    return cls(request.getfixturevalue(f"{gateway_kind}_fake"))


@pytest.fixture
async def adapter(driver: GatewayDriver) -> AsyncIterator[Gateway]:
    """The adapter built by its plugin, as the runtime builds it, pointed at the fake."""
    built = driver.build()
    yield built
    await built.aclose()
