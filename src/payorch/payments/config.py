"""The payments package's own settings, nested in ``Settings`` as ``idempotency``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class IdempotencyConfig(BaseModel):
    ttl_hours: int = Field(default=24, ge=24)
    """Keys live at least 24 hours (DESIGN.md section 6)."""
    purge_interval_seconds: float = Field(default=300.0, gt=0)
    stale_after_seconds: float = Field(default=60.0, gt=0)
    """A key still in progress after this long belongs to a request that died (crash, kill)."""
