"""Every URL in a log line is redacted (issue 18): userinfo, query values, fragments and long path
segments, wherever the URL sits in the event; the audit trail keeps URLs as configured."""

import pytest
import structlog

from payorch.audit.redaction import REDACTED, redact, redact_log_event, redact_urls


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (
            'HTTP Request: POST https://hooks.example.com/hooks?token=s3cr3t&shop=42 "HTTP/1.1 200 OK"',
            f'HTTP Request: POST https://hooks.example.com/hooks?token={REDACTED}&shop={REDACTED} "HTTP/1.1 200 OK"',
        ),
        ("postgresql://payorch:hunter2@db:5432/payorch", f"postgresql://{REDACTED}@db:5432/payorch"),
        ("https://user@example.com/", f"https://{REDACTED}@example.com/"),
        ("https://app.example/#access_token=abc", f"https://app.example/#{REDACTED}"),
        (
            "https://hooks.slack.com/services/T0000000/B0000000/XXXXXXXXXXXXXXXXXXXXXXXX",
            f"https://hooks.slack.com/services/T0000000/B0000000/{REDACTED}",
        ),
        ("https://x.example/v1/payment_methods/notifications", "https://x.example/v1/payment_methods/notifications"),
        ("('https://a.example/?k=v',)", f"('https://a.example/?k={REDACTED}',)"),
        ('{"url": "https://a.example/p?k=v"}', f'{{"url": "https://a.example/p?k={REDACTED}"}}'),
        ("https://a.example/?", "https://a.example/?"),
        ("is it and/or? yes", "is it and/or? yes"),
        ("no url here", "no url here"),
    ],
)  # fmt: skip
def test_urls_keep_scheme_host_and_route_words_only(text: str, redacted: str) -> None:
    assert redact_urls(text) == redacted


def _logged(**fields: object) -> dict[str, object]:
    captured: list[dict[str, object]] = []

    def capture(_logger: object, _method: str, event_dict: dict[str, object]) -> dict[str, object]:
        captured.append(dict(event_dict))
        raise structlog.DropEvent

    logger = structlog.wrap_logger(structlog.PrintLogger(), processors=[redact_log_event, capture], context_class=dict)
    logger.info("delivering to https://h.example/hook?token=s3cr3t", **fields)
    return captured[0]


def test_every_field_of_a_log_event_is_searched_for_urls() -> None:
    event = _logged(url="https://h.example/a?x=1", nested={"urls": ["https://u:p@h.example/"]}, count=3)
    assert event["event"] == f"delivering to https://h.example/hook?token={REDACTED}"
    assert event["url"] == f"https://h.example/a?x={REDACTED}"
    assert event["nested"] == {"urls": [f"https://{REDACTED}@h.example/"]}
    assert event["count"] == 3


def test_a_card_number_in_a_url_is_masked_as_anywhere() -> None:
    event = _logged(path="https://h.example/v1/charges/4242424242424242")
    assert "4242424242424242" not in str(event)
    assert event["path"] == "https://h.example/v1/charges/424242******4242"


def test_the_audit_trail_keeps_urls_as_configured() -> None:
    # A webhook endpoint's audit event records the URL the merchant configured; only logs cut it.
    assert redact({"url": "https://h.example/hook?shop=42"}) == {"url": "https://h.example/hook?shop=42"}
