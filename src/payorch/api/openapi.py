"""The OpenAPI document as a client generator reads it: only the answers payorch really gives.

FastAPI documents a 422 with its ``HTTPValidationError`` on every operation that takes a parameter
or a body. payorch never answers 422: its handler (``api/errors.py``) turns every validation error
into a 400 in the error envelope, which each route documents. The 422 and the schemas only it
refers to are left out; every other part of the document is FastAPI's.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI

_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def answered_only(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` without the 422 answers (in place), and their schemas once nothing refers to them."""
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            operation.get("responses", {}).pop("422", None)
    schemas = document.get("components", {}).get("schemas", {})
    for name in _VALIDATION_SCHEMAS:
        others = {key: value for key, value in schemas.items() if key not in _VALIDATION_SCHEMAS}
        if f"#/components/schemas/{name}" not in json.dumps([document.get("paths"), others]):
            schemas.pop(name, None)
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve ``answered_only`` of FastAPI's own document, built once."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = answered_only(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
