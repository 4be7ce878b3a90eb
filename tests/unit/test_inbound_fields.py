"""Every field an adapter took from a verified notification is bounded before it is stored
(webhooks/inbound.py, issue 18): what no JSON body can bring past the request guard still cannot
reach the database from an adapter's decoding (XML, form bodies)."""

from __future__ import annotations

import pytest

from payorch.gateways.base import GatewayNotification
from payorch.webhooks.inbound import unstorable_field


def notification(**fields: object) -> GatewayNotification:
    values: dict[str, object] = {"event_id": "evt_1", "kind": "payment.succeeded", "attempt_id": "att_1"}
    values.update(fields)
    return GatewayNotification(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"event_id": "e" * 256}, ("event_id", "is longer than 255 characters")),
        ({"event_id": ""}, ("event_id", "is empty")),
        ({"kind": ""}, ("kind", "is empty")),
        ({"kind": "k" * 129}, ("kind", "is longer than 128 characters")),
        ({"attempt_id": "a\x00b"}, ("attempt_id", "holds a control character")),
        ({"reference": "r\ud800"}, ("reference", "is not valid Unicode")),
        ({"reference": "line\nbreak"}, ("reference", "holds a control character")),
        ({"extra": {"object_id": "x" * 1001}}, ("extra.object_id", "is longer than 1000 characters")),
        ({"extra": {"reason": "\udfff"}}, ("extra.reason", "is not valid Unicode")),
        ({"amount": 2**63}, ("amount", "is out of range")),
        ({"amount": -(2**63)}, ("amount", "is out of range")),
    ],
)
def test_an_unstorable_field_is_named(fields: dict[str, object], problem: tuple[str, str]) -> None:
    assert unstorable_field(notification(**fields)) == problem


def test_fields_at_their_bounds_are_storable() -> None:
    at_bounds = notification(
        event_id="e" * 255,
        kind="k" * 128,
        attempt_id="a" * 255,
        reference="r" * 255,
        amount=2**63 - 1,
        extra={"object_id": "é" * 1000},
    )
    assert unstorable_field(at_bounds) is None
