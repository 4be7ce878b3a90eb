import datetime as dt

import pytest
from pydantic import ValidationError

from payorch.audit.events import Actor, AuditAction, AuditEvent, Origin, Resource, new_audit_id


def make_event(**overrides) -> AuditEvent:
    fields = {
        "actor": Actor(merchant_id="mer_1", api_key_id="key_1"),
        "action": AuditAction.CHARGE_CREATED,
        "resource": Resource(type="charge", id="ch_1"),
        "origin": Origin(ip="203.0.113.7", request_id="req_1"),
    }
    fields.update(overrides)
    return AuditEvent(**fields)


def test_ids_are_prefixed_and_time_sortable():
    earlier = new_audit_id(dt.datetime(2024, 1, 1, tzinfo=dt.UTC))
    later = new_audit_id(dt.datetime(2024, 1, 1, 0, 0, 1, tzinfo=dt.UTC))
    assert earlier.startswith("aud_")
    assert len(earlier) == 30
    assert earlier < later
    assert len({new_audit_id() for _ in range(1000)}) == 1000


def test_event_defaults_and_payload_shape():
    event = make_event(details={"amount": 500, "currency": "usd"})
    payload = event.redacted_payload()
    assert payload["id"] == event.id
    assert payload["occurred_at"].endswith("Z")
    assert payload["action"] == "charge.created"
    assert payload["outcome"] == "success"
    assert payload["actor"] == {"merchant_id": "mer_1", "api_key_id": "key_1", "user": None}
    assert payload["origin"] == {"ip": "203.0.113.7", "request_id": "req_1"}
    assert payload["resource"] == {"type": "charge", "id": "ch_1"}
    assert payload["details"] == {"amount": 500, "currency": "usd"}


def test_payload_is_redacted_everywhere():
    event = make_event(
        actor=Actor(merchant_id="mer_1", user="ops 4242424242424242"),
        details={"metadata": {"note": "card 4242 4242 4242 4242"}, "cvc": "123", "token": "tok_visa"},
    )
    payload = event.redacted_payload()
    text = str(payload)
    assert "4242424242424242" not in text.replace(" ", "")
    assert payload["details"]["cvc"] == "[REDACTED]"
    assert payload["details"]["token"] == "[REDACTED]"


@pytest.mark.parametrize("action", ["Charge.Created", "charge", "charge..created", "charge created", ""])
def test_bad_actions_are_refused(action):
    with pytest.raises(ValidationError):
        make_event(action=action)


def test_naive_timestamps_are_refused_and_others_converted_to_utc():
    with pytest.raises(ValidationError):
        make_event(occurred_at=dt.datetime(2024, 1, 1))
    plus_two = dt.timezone(dt.timedelta(hours=2))
    event = make_event(occurred_at=dt.datetime(2024, 1, 1, 12, tzinfo=plus_two))
    assert event.occurred_at == dt.datetime(2024, 1, 1, 10, tzinfo=dt.UTC)
    assert event.occurred_at.utcoffset() == dt.timedelta(0)


def test_outcome_is_closed():
    with pytest.raises(ValidationError):
        make_event(outcome="maybe")
