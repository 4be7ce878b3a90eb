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
