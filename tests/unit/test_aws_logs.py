"""botocore's DEBUG lines never carry a KMS data key or a Secrets Manager secret, through the one
filter both clients install (observability/aws_logs.py)."""

from __future__ import annotations

import logging
import secrets

import pytest

from payorch.accounts.config import KmsConfig
from payorch.accounts.crypto import make_kms_client
from payorch.banking.config import AwsSecretsConfig
from payorch.banking.secrets import make_secretsmanager_client
from payorch.observability.aws_logs import BOTOCORE_LOGGERS, WITHHELD, WithholdSecretPayloads

AWS = {"region": "us-east-1", "endpoint_url": "http://127.0.0.1:1", "access_key_id": "testing",
       "secret_access_key": "testing"}  # fmt: skip


@pytest.mark.parametrize(
    "make_client",
    [
        lambda: make_kms_client(KmsConfig(key_id="alias/payorch", **AWS)),
        lambda: make_secretsmanager_client(AwsSecretsConfig(**AWS)),
    ],
)
def test_every_aws_client_installs_the_one_filter_once(make_client: object, caplog: pytest.LogCaptureFixture) -> None:
    make_client()  # type: ignore[operator]
    make_client()  # type: ignore[operator]
    for name in BOTOCORE_LOGGERS:
        installed = [f for f in logging.getLogger(name).filters if isinstance(f, WithholdSecretPayloads)]
        assert len(installed) == 1
    caplog.set_level(logging.DEBUG, logger="botocore")
    secret = secrets.token_hex(16)
    for name, field in zip(BOTOCORE_LOGGERS, ("Plaintext", "SecretString", "CiphertextBlob"), strict=True):
        logging.getLogger(name).debug("Response body: %s", {field: secret})
    logging.getLogger("botocore.parsers").debug("Response body: %s", {"SecretBinary": secret.encode()})
    logging.getLogger("botocore.endpoint").debug("Making request for %s", {"KeyId": "alias/payorch"})
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("botocore")]
    assert messages[:4] == [WITHHELD] * 4
    assert "alias/payorch" in messages[4]  # a line without a secret is left alone
    assert all(secret not in message for message in messages)
