"""Settings that production decides: where /metrics is served, and placeholders it refuses."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from payorch.settings import Settings


def test_metrics_leave_the_api_port_in_production_and_stay_on_it_when_embedded() -> None:
    production = Settings(
        environment="production",
        database_url="postgresql+asyncpg://u@db/p",
        webhooks={"secret_key": Fernet.generate_key().decode()},
    )
    assert (production.metrics_port, production.metrics_on_api_port) == (9464, False)
    assert (Settings().metrics_port, Settings().metrics_on_api_port) == (None, True)
    explicit = Settings(metrics={"port": 9100})
    assert (explicit.metrics_port, explicit.metrics_on_api_port) == (9100, False)
    assert Settings(metrics={"port": 9100, "on_api_port": True}).metrics_on_api_port


@pytest.mark.parametrize(
    "overrides",
    [
        {"webhooks": {"secret_key": "CHANGE_ME"}},  # .env.example's placeholder, left in .env
        {"webhooks": {"secret_key": Fernet.generate_key().decode()}, "gateways": [
            {"name": "stripe", "kind": "stripe", "api_key": "CHANGE_ME"}]},
    ],
)  # fmt: skip
def test_production_refuses_the_env_example_placeholder(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"placeholder|SECRET_KEY"):
        Settings(environment="production", database_url="postgresql+asyncpg://u@db/p", **overrides)
