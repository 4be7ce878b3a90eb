"""What every gateway's config model shares: its name, its timeout, and a way to list its secrets.

Each gateway package subclasses :class:`GatewayConfig` in its own ``config.py`` with a ``kind``
literal (the discriminator of the settings' gateway list) and its own credential fields only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

ADAPTER_MARGIN_SECONDS = 0.75
"""How much longer than its own timeout a gateway call is raced (at least; 10% for long timeouts).

Every adapter sets its HTTP client's timeout to the gateway's timeout. Racing the call for exactly
that long would let the race win ties and report a bare ``timeout`` where the adapter would have
told a refused connection (not sent, safe to fail over) from a read timeout (unknown). The margin
covers the Braintree adapter's worker-thread grace (0.5 s) and scheduling jitter; the race still
bounds an answer that keeps trickling in, which a per-read HTTP timeout alone never would."""


def race_timeout(timeout: float) -> float:
    """Seconds a call to a gateway whose own timeout is ``timeout`` is raced by the executor."""
    return timeout + max(ADAPTER_MARGIN_SECONDS, timeout * 0.1)


def timeout_ms_field(default: int) -> Any:
    """``timeout_ms`` with a kind's own default: each kind redeclares the field with this."""
    return Field(default=default, gt=0, le=60_000, description="How long each call to this gateway may take.")


class GatewayConfig(BaseModel):
    """One gateway in the routing list."""

    # A field another kind uses (or a misspelt one) is refused rather than silently ignored.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    """What payment method tokens and routing orders call this gateway."""
    kind: str
    """Which gateway package reads this object."""
    timeout_ms: int
    """Each kind redeclares it with its own default (:func:`timeout_ms_field`)."""

    @field_validator("timeout_ms", mode="before")
    @classmethod
    def _default_when_null(cls, value: object) -> object:
        # ``"timeout_ms": null`` has always meant "this kind's default".
        return cls.model_fields["timeout_ms"].default if value is None else value

    @property
    def timeout(self) -> float:
        """Seconds this gateway's calls are given (the adapter's own HTTP timeout)."""
        return self.timeout_ms / 1000

    @property
    def race_timeout(self) -> float:
        """How long the executor and reconciler wait for a call: the adapter's timeout fires first."""
        return race_timeout(self.timeout)

    def secrets(self) -> Iterator[tuple[str, SecretStr]]:
        """Every secret this config holds, by field name (for checks such as production's placeholders)."""
        for field in type(self).model_fields:
            value = getattr(self, field)
            if isinstance(value, SecretStr):
                yield field, value
