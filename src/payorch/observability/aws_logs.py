"""Keeping secrets out of botocore's own log lines.

botocore logs every request's parameters (``botocore.endpoint``), every response body
(``botocore.parsers``) and its event hooks' arguments (``botocore.hooks``) at DEBUG. For KMS those
carry a data key in the clear (``Plaintext``) or wrapped (``CiphertextBlob``); for Secrets Manager
the secret itself (``SecretString``, ``SecretBinary``). A filter on those loggers rewrites such a
record before any handler sees it, whatever level logging is set to: the log redaction cannot
recognise a random key as a secret.
"""

from __future__ import annotations

import logging
from typing import Final

BOTOCORE_LOGGERS: Final = ("botocore.endpoint", "botocore.parsers", "botocore.hooks")
SECRET_FIELDS: Final = ("Plaintext", "CiphertextBlob", "SecretString", "SecretBinary")
WITHHELD: Final = "[payorch withheld a botocore debug line carrying a secret or key material]"


class WithholdSecretPayloads(logging.Filter):
    """Rewrites a botocore record that names a field carrying a secret or key material."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to fix
            return True
        if any(field in message for field in SECRET_FIELDS):
            record.msg = WITHHELD
            record.args = ()
        return True


def guard_botocore_logs() -> None:
    """Install the filter on botocore's loggers (once, however often a client is made)."""
    for name in BOTOCORE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, WithholdSecretPayloads) for existing in logger.filters):
            logger.addFilter(WithholdSecretPayloads())
