"""The orchestration package's own settings, nested in ``Settings`` as ``routing`` and ``reconciler``
(the breaker's are in ``breaker.py``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RoutingConfig(BaseModel):
    """Gateway order and failover policy (DESIGN.md section 5)."""

    order_by_currency: dict[str, list[str]] = Field(default_factory=dict)
    deadline_ms: int = Field(default=15_000, gt=0, le=120_000)
    failover_on_unknown: bool = False
    cascadable_soft_declines: list[str] = Field(default_factory=list)
    sca_retry: bool = False
    """Retry an ``authentication_required`` soft decline once, on the same gateway, asking the issuer
    for a challenge (the charge then waits in ``requires_action``). Never for off-session charges."""


class ReconcilerConfig(BaseModel):
    interval_seconds: float = Field(default=5.0, gt=0)
    first_check_seconds: float = Field(default=5.0, ge=0)
    max_checks: int = Field(default=12, gt=0)
    """After this many inconclusive lookups an attempt is flagged for review."""
    batch_size: int = Field(default=100, gt=0)
    authentication_expiry_minutes: float = Field(default=60.0, gt=0, le=7 * 24 * 60)
    """How long a customer has to finish authenticating before the charge is canceled (after the
    gateway was asked whether it completed after all)."""
