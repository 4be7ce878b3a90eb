"""Gateways as plugins: the registry's plugins, the settings' gateway union built from them, and the
checks settings make on any gateway's config without naming a gateway."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import SecretStr, ValidationError

from payorch.gateways.base import Capabilities
from payorch.gateways.plugin import GatewayServices
from payorch.gateways.registry import (
    PLUGINS,
    Configured,
    build_gateway,
    embedded_gateways,
    notifying_plugins,
    plugin_for,
)
from payorch.gateways.sandbox.config import SandboxConfig
from payorch.settings import Settings

STRIPE = {"name": "stripe", "kind": "stripe", "api_key": "sk_live_realistic0123"}
BRAINTREE = {
    "name": "braintree",
    "kind": "braintree",
    "merchant_account": "m",
    "public_key": "p",
    "private_key": "bt_private_realistic0123",
}
ADYEN = {"name": "adyen", "kind": "adyen", "api_key": "AQE_realistic0123", "merchant_account": "PayorchECOM"}


def test_each_plugin_owns_one_kind_and_its_config_says_so() -> None:
    kinds = [plugin.kind for plugin in PLUGINS]
    assert len(set(kinds)) == len(kinds)
    for plugin in PLUGINS:
        assert plugin.config.model_fields["kind"].default == plugin.kind
        assert plugin_for(plugin.kind) is plugin
        assert (plugin.notification_scheme is not None) is plugin.capabilities.notifications


def test_the_embedded_default_comes_from_the_plugins() -> None:
    configured = Settings().gateways

    assert [(g.name, g.kind) for g in configured] == [("sandbox", "sandbox"), ("sandbox_backup", "sandbox")]
    assert configured == embedded_gateways()


def test_each_kind_is_validated_by_its_own_model_with_its_own_default_timeout() -> None:
    settings = Settings(gateways=[STRIPE, BRAINTREE, ADYEN, {"name": "sim", "kind": "sandbox", "timeout_ms": None}])

    assert [type(g).__name__ for g in settings.gateways] == [
        "StripeConfig",
        "BraintreeConfig",
        "AdyenConfig",
        "SandboxConfig",
    ]
    assert [g.timeout for g in settings.gateways] == [3.0, 5.0, 8.0, 2.0]
    assert settings.gateways[0].race_timeout == 3.75  # the adapter's own timeout fires first


@pytest.mark.parametrize(
    ("gateway", "names"),
    [
        ({**STRIPE, "kind": "stripes"}, ["'sandbox', 'stripe', 'braintree', 'adyen'"]),
        ({**ADYEN, "merchant_account": None}, ["merchant_account"]),
        ({k: v for k, v in ADYEN.items() if k != "merchant_account"}, ["merchant_account", "Field required"]),
        ({**STRIPE, "private_key": "bt_private_realistic0123"}, ["private_key", "Extra inputs"]),
        ({**BRAINTREE, "private_key": ""}, ["private_key"]),
    ],
)
def test_a_bad_gateway_object_is_refused_without_echoing_its_secrets(
    gateway: dict[str, object], names: list[str]
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(gateways=[gateway])

    message = str(refused.value)
    assert all(name in message for name in names)
    assert "realistic0123" not in message


@pytest.mark.parametrize(
    ("gateway", "field"),
    [
        ({**STRIPE, "api_key": "sk_live_changeme"}, "api_key"),
        ({**STRIPE, "webhook_secret": "whsec_placeholder"}, "webhook_secret"),
        ({**BRAINTREE, "private_key": "xxx"}, "private_key"),
        ({**ADYEN, "webhook_secret": "example"}, "webhook_secret"),
    ],
)
def test_production_refuses_a_placeholder_in_any_gateway_secret(gateway: dict[str, object], field: str) -> None:
    production = {"environment": "production", "database_url": "postgresql+asyncpg://db/payorch"}
    with pytest.raises(ValidationError, match=f"gateway {gateway['name']}: placeholder {field} refused"):
        Settings(**production, gateways=[gateway])


def test_a_config_lists_its_secrets_and_nothing_else() -> None:
    [stripe] = Settings(gateways=[{**STRIPE, "webhook_secret": "whsec_1"}]).gateways

    assert {field: secret.get_secret_value() for field, secret in stripe.secrets()} == {
        "api_key": "sk_live_realistic0123",
        "webhook_secret": "whsec_1",
    }
    assert list(SandboxConfig(name="sim").secrets()) == []


def test_the_notifications_route_text_comes_from_the_plugins_in_registry_order() -> None:
    described = [(plugin.title, plugin.notification_scheme) for plugin in notifying_plugins()]

    assert described == [
        ("Stripe", "Stripe-Signature with timestamp tolerance"),
        ("Braintree", "Braintree bt_signature"),
        ("Adyen", "Adyen HMAC"),
    ]


def test_an_unknown_kind_cannot_be_built() -> None:
    with pytest.raises(ValueError, match="not available"):
        plugin_for("acme")


def test_the_sandbox_needs_its_books() -> None:
    with pytest.raises(ValueError, match="books"):
        build_gateway(SandboxConfig(name="sim"), GatewayServices())


async def test_a_configured_gateway_answers_its_plugins_capabilities() -> None:
    [stripe] = Settings(gateways=[STRIPE]).gateways
    gateway = build_gateway(stripe, GatewayServices())
    try:
        configured = Configured(stripe, gateway)
        assert configured.capabilities == plugin_for("stripe").capabilities
        assert isinstance(configured.capabilities, Capabilities)
        assert configured.capabilities.refund
        assert configured.capabilities.customer_authentication
    finally:
        await gateway.aclose()


def test_loading_settings_loads_no_gateway_sdk() -> None:
    probe = (
        "import sys, payorch.settings, payorch.gateways.registry;"
        "print(sorted({'stripe', 'braintree', 'httpx', 'requests'} & set(sys.modules)))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)

    assert loaded.stdout.strip() == "[]"


def test_a_secret_stays_a_secret() -> None:
    [stripe] = Settings(gateways=[STRIPE]).gateways

    assert isinstance(dict(stripe.secrets())["api_key"], SecretStr)
    assert "realistic0123" not in repr(stripe)
