"""The OpenAPI document is complete: every route, body, response and error."""

from __future__ import annotations

import httpx

SERVED = {
    ("/healthz", "get"),
    ("/readyz", "get"),
    ("/metrics", "get"),
    ("/v1/charges", "post"),
    ("/v1/charges", "get"),
    ("/v1/charges/{charge_id}", "get"),
    ("/v1/charges/{charge_id}/capture", "post"),
    ("/v1/charges/{charge_id}/cancel", "post"),
    ("/v1/charges/{charge_id}/confirm", "post"),
    ("/v1/refunds", "post"),
    ("/v1/refunds/{refund_id}", "get"),
    ("/v1/payment_methods", "post"),
    ("/v1/payment_methods/{payment_method_id}", "get"),
    ("/v1/bank_links", "post"),
    ("/v1/bank_links/callback", "get"),
    ("/v1/bank_links/{bank_link_id}", "get"),
    ("/v1/webhook_endpoints", "post"),
    ("/v1/webhook_endpoints", "get"),
    ("/v1/webhook_endpoints/{endpoint_id}", "get"),
    ("/v1/webhook_endpoints/{endpoint_id}", "delete"),
    ("/v1/webhook_endpoints/{endpoint_id}/rotate_secret", "post"),
    ("/v1/webhook_endpoints/{endpoint_id}/deliveries", "get"),
    ("/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver", "post"),
    ("/v1/gateway_webhooks/{gateway}", "post"),
    ("/v1/gateway_accounts", "post"),
    ("/v1/gateway_accounts", "get"),
    ("/v1/gateway_accounts/{account_id}", "get"),
    ("/v1/gateway_accounts/{account_id}", "post"),
    ("/v1/gateway_accounts/{account_id}", "delete"),
    ("/v1/routing", "put"),
    ("/v1/routing", "get"),
    ("/v1/routing/evaluate", "post"),
}
# Reached by the end user's browser (the OAuth redirect), not by a merchant's API key.
PUBLIC = {("/v1/bank_links/callback", "get")}
# Posted by a gateway, authenticated by the gateway's own signature over the body.
SIGNED_BY_GATEWAY = {("/v1/gateway_webhooks/{gateway}", "post")}


async def test_every_route_is_documented(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert documented == SERVED
    for path, method in documented:
        operation = document["paths"][path][method]
        assert operation["summary"]
        if (path, method) in SIGNED_BY_GATEWAY:
            assert {"400", "404", "429", "500"} <= set(operation["responses"]), (path, method)
            assert operation.get("security", []) == []
        elif (path, method) in PUBLIC:
            assert {"303", "400", "429", "500"} <= set(operation["responses"]), (path, method)
            assert operation["security"] == []
        elif path.startswith("/v1/"):
            assert {"400", "401", "429", "500"} <= set(operation["responses"]), (path, method)
            assert operation["security"] == [{"HTTPBearer": []}]


async def test_charge_routes_document_their_errors(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    create = document["paths"]["/v1/charges"]["post"]
    assert {"201", "202", "400", "401", "402", "409", "413", "415", "429", "503"} <= set(create["responses"])
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChargeCreate")
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])
    assert "404" in document["paths"]["/v1/charges/{charge_id}"]["get"]["responses"]
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorBody"]["properties"]) >= {
        "type",
        "code",
        "message",
        "param",
        "decline_code",
        "charge",
        "request_id",
    }
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    assert schemas["ChargeCreate"]["properties"]["amount"]["type"] == "integer"


# Issue 18: what a client generator names its functions after, chosen on purpose (they were
# FastAPI's defaults, such as create_charge_v1_charges_post).
OPERATION_IDS = {
    ("/healthz", "get"): "check_liveness",
    ("/readyz", "get"): "check_readiness",
    ("/metrics", "get"): "get_metrics",
    ("/v1/charges", "post"): "create_charge",
    ("/v1/charges", "get"): "list_charges",
    ("/v1/charges/{charge_id}", "get"): "retrieve_charge",
    ("/v1/charges/{charge_id}/capture", "post"): "capture_charge",
    ("/v1/charges/{charge_id}/cancel", "post"): "cancel_charge",
    ("/v1/charges/{charge_id}/confirm", "post"): "confirm_charge",
    ("/v1/refunds", "post"): "create_refund",
    ("/v1/refunds/{refund_id}", "get"): "retrieve_refund",
    ("/v1/payment_methods", "post"): "create_payment_method",
    ("/v1/payment_methods/{payment_method_id}", "get"): "retrieve_payment_method",
    ("/v1/bank_links", "post"): "create_bank_link",
    ("/v1/bank_links/callback", "get"): "complete_bank_link",
    ("/v1/bank_links/{bank_link_id}", "get"): "retrieve_bank_link",
    ("/v1/webhook_endpoints", "post"): "create_webhook_endpoint",
    ("/v1/webhook_endpoints", "get"): "list_webhook_endpoints",
    ("/v1/webhook_endpoints/{endpoint_id}", "get"): "retrieve_webhook_endpoint",
    ("/v1/webhook_endpoints/{endpoint_id}", "delete"): "delete_webhook_endpoint",
    ("/v1/webhook_endpoints/{endpoint_id}/rotate_secret", "post"): "rotate_webhook_endpoint_secret",
    ("/v1/webhook_endpoints/{endpoint_id}/deliveries", "get"): "list_webhook_deliveries",
    ("/v1/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver", "post"): "redeliver_webhook_delivery",
    ("/v1/gateway_webhooks/{gateway}", "post"): "receive_gateway_notification",
    ("/v1/gateway_accounts", "post"): "create_gateway_account",
    ("/v1/gateway_accounts", "get"): "list_gateway_accounts",
    ("/v1/gateway_accounts/{account_id}", "get"): "retrieve_gateway_account",
    ("/v1/gateway_accounts/{account_id}", "post"): "update_gateway_account",
    ("/v1/gateway_accounts/{account_id}", "delete"): "delete_gateway_account",
    ("/v1/routing", "put"): "update_routing",
    ("/v1/routing", "get"): "retrieve_routing",
    ("/v1/routing/evaluate", "post"): "evaluate_routing",
}


async def test_every_operation_has_its_deliberate_operation_id(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    documented = {
        (path, method): operation.get("operationId")
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert documented == OPERATION_IDS
    assert set(OPERATION_IDS) == SERVED


async def test_only_answers_really_given_are_documented(client: httpx.AsyncClient) -> None:
    # payorch answers every validation error 400 in the envelope; FastAPI's 422 is never given.
    document = (await client.get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert "422" not in operation["responses"], (path, method)
            if operation.get("parameters") or operation.get("requestBody"):
                assert "400" in operation["responses"], (path, method)
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    create = document["paths"]["/v1/charges"]["post"]["responses"]
    assert "token_rejected" in create["400"]["description"]
    assert "parameter_invalid" in create["400"]["description"]
    inbound = document["paths"]["/v1/gateway_webhooks/{gateway}"]["post"]["responses"]
    assert "notification_invalid" in inbound["400"]["description"]
