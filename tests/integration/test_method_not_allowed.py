"""Every 405 names the methods the URL does answer (``Allow``, RFC 9110 15.5.6), for every route the
app has: the cases are generated from the app's own routes, so a new route is covered by itself."""

from __future__ import annotations

import re

import httpx
import pytest

from payorch.app import create_app
from payorch.runtime import Runtime
from payorch.settings import Settings

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _paths(settings: Settings) -> dict[str, set[str]]:
    """Each route's path with its parameters filled in -> every method some route answers there."""
    templates = {
        template: {method.upper() for method in operations}
        for template, operations in create_app(settings).openapi()["paths"].items()
    }
    patterns = {
        template: re.compile("^" + re.sub(r"\\{[^/]*?\\}", "[^/]+", re.escape(template)) + "$")
        for template in templates
    }
    concrete = {re.sub(r"\{[^}]+\}", "x_1", template) for template in templates}
    return {
        path: set().union(*(templates[t] for t, pattern in patterns.items() if pattern.match(path)))
        for path in sorted(concrete)
    }


def test_the_generated_cases_cover_the_api() -> None:
    paths = _paths(Settings(environment="development", database_url="postgresql+asyncpg://u@db/p"))
    assert paths["/v1/charges"] == {"GET", "POST"}
    assert "/v1/webhook_endpoints/x_1/deliveries/x_1/redeliver" in paths
    assert len(paths) >= 15


async def test_every_405_carries_allow_with_every_method_of_the_url(
    client: httpx.AsyncClient, settings: Settings, runtime: Runtime
) -> None:
    checked = 0
    for path, allowed in _paths(settings).items():
        expected = allowed  # FastAPI's routes answer HEAD only where they say so
        for method in set(METHODS) - allowed:
            response = await client.request(method, path, headers={"Authorization": "Bearer sk_test_x"})
            assert response.status_code == 405, (method, path, response.text)
            assert set(response.headers["Allow"].split(", ")) == expected, (method, path)
            if method != "HEAD":  # a HEAD answer has no body
                assert response.json()["error"]["code"] == "method_not_allowed"
                assert response.json()["error"]["request_id"] == response.headers["Request-Id"]
            checked += 1
    assert checked > 40


@pytest.mark.parametrize(
    ("method", "path", "allow"), [("DELETE", "/v1/charges", "GET, POST"), ("HEAD", "/v1/charges", "GET, POST")]
)
async def test_a_405_names_methods_of_every_route_at_the_path(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
