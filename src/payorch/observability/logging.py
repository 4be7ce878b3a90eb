"""Process-wide logging: structlog, JSON lines in production, readable lines when embedded.

Every record, structlog's or the standard library's (payorch's own ``logging.getLogger`` loggers,
uvicorn, SQLAlchemy, botocore), goes through one processor chain on the root handler:
the request's context (``request_id``, ``merchant_id``: contextvars bound while a request is served),
level, logger name, timestamp, rendered traceback, then ``redact_log_event``, the redaction the
audit trail uses, so no card number, API key or token reaches a log line, and every URL in it
(httpx's "HTTP Request: POST <url>" lines name webhook receivers) keeps no userinfo, query value,
fragment or long path segment.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.contextvars import bind_contextvars, clear_contextvars
from structlog.types import EventDict, Processor

from payorch.audit.redaction import redact_log_event

__all__ = ["bind_charge", "bind_merchant", "bind_request", "clear_request", "configure_logging", "get_logger"]


def _context_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.StackInfoRenderer(),
    ]


def _drop_color_message(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    # uvicorn adds a copy of its message with terminal colour codes: noise in a log line.
    event_dict.pop("color_message", None)
    return event_dict


def configure_logging(*, json_lines: bool, level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Route every logger through structlog's chain to ``stream`` (stderr by default)."""
    renderer: Processor
    if json_lines:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_context_processors(), structlog.stdlib.ExtraAdder(), _drop_color_message],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Tracebacks become text before redaction, so a secret in an exception message is masked.
            structlog.processors.format_exc_info,
            redact_log_event,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn, run with log_config=None, leaves its loggers handler-less: make sure they reach root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
    structlog.configure(
        processors=[*_context_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    """A structlog logger (``log.info("charge.created", charge=...)``) on the same chain."""
    return structlog.get_logger(name)


def bind_request(request_id: str) -> None:
    """Start a request's log context: every line until ``clear_request`` carries ``request_id``."""
    clear_contextvars()
    bind_contextvars(request_id=request_id)


def bind_merchant(merchant_id: str) -> None:
    """Called once the caller is authenticated: later lines carry ``merchant_id``."""
    bind_contextvars(merchant_id=merchant_id)


def bind_charge(charge_id: str, status: str, gateway: str) -> None:
    """A charge's outcome, carried by its request's own line (one line per request, not two)."""
    bind_contextvars(charge_id=charge_id, charge_status=status, gateway=gateway)


def clear_request() -> None:
    clear_contextvars()
