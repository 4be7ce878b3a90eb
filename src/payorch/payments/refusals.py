"""What a merchant is told when no gateway took a request: each gateway's own code and message.

A gateway's message may echo what was sent (a token, a card number someone pasted into a
description) and has no length of its own, so each is redacted like a log line, flattened to one
line and bounded before it is stored on a charge, put in an event or returned. The charge lifecycle
(``payments/charges.py``) and the vault (``payments/payment_methods.py``) both word their answers
with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from payorch.audit.redaction import redact_text
from payorch.gateways.base import Outcome

MESSAGE_LIMIT = 200
"""Characters of one gateway's message kept."""
CODE_LIMIT = 64
"""Characters of one gateway's code kept."""
TOTAL_LIMIT = 900
"""Characters of all the reasons together (the gateways are at most eight)."""

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def bounded(text: str | None, limit: int) -> str:
    """``text`` redacted, on one line, at most ``limit`` characters (an ellipsis marks a cut)."""
    if not text:
        return ""
    flat = " ".join(_UNPRINTABLE.sub(" ", redact_text(text)).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def reason(gateway: str, outcome: Outcome, code: str | None, message: str | None, *, refused: bool) -> str:
    """One gateway's part: ``stripe refused: No such token: 'tok_x' (resource_missing)``."""
    code_text = bounded(code, CODE_LIMIT)
    suffix = f" ({code_text})" if code_text else ""
    if refused:
        text = bounded(message, MESSAGE_LIMIT) or "no reason given"
        return f"{gateway} refused: {text}{suffix}"
    if outcome is Outcome.UNKNOWN:
        return f"{gateway} did not answer in time{suffix}"
    return f"{gateway} could not be reached{suffix}"


def joined(reasons: Iterable[str]) -> str:
    """The reasons in one sentence, bounded as a whole."""
    return bounded("; ".join(reasons), TOTAL_LIMIT)
