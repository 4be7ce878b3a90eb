"""Rate limiting (DESIGN.md section 7): sliding-window counters on Redis, in process when Redis is
absent or failing, applied by an ASGI middleware that runs before everything else."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis, RedisCluster

from payorch.ratelimit.config import Limit, MerchantOverride, RateLimitConfig, RoutePolicy
from payorch.ratelimit.limiter import Decision, FallbackLimiter, Limiter, MemoryLimiter, RedisLimiter
from payorch.ratelimit.middleware import RateLimitMiddleware, bearer_identity, bearer_token, client_ip

__all__ = [
    "Decision",
    "FallbackLimiter",
    "Limit",
    "Limiter",
    "MemoryLimiter",
    "MerchantOverride",
    "RateLimitConfig",
    "RateLimitMiddleware",
    "RedisLimiter",
    "RoutePolicy",
    "bearer_identity",
    "bearer_token",
    "build_limiter",
    "client_ip",
]


def build_limiter(
    config: RateLimitConfig,
    redis: Redis | RedisCluster | None,
    *,
    prefix: str = "rl",
    on_fallback: Callable[[], None] | None = None,
) -> Limiter:
    """The limiter for a Runtime: in process when there is no Redis (embedded mode), else Redis with
    the in-process limiter standing in whenever Redis fails or is slower than ``redis_timeout_ms``."""
    if redis is None:
        return MemoryLimiter()
    return FallbackLimiter(
        RedisLimiter(redis, prefix=prefix),
        MemoryLimiter(),
        timeout_s=config.redis_timeout_ms / 1000,
        log_interval_s=config.fallback_log_interval_seconds,
        probe_interval_s=config.fallback_probe_interval_seconds,
        on_fallback=on_fallback,
    )
