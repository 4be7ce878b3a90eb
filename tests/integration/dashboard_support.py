"""Signing in to the dashboard over HTTP, for the in-process dashboard tests."""

from __future__ import annotations

import re
import secrets

import httpx

from payorch.audit.events import Actor
from payorch.runtime import Runtime

_TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]{64})"')


def csrf(page: httpx.Response) -> str:
    """The CSRF token a page's forms carry."""
    found = _TOKEN.search(page.text)
    assert found is not None, page.text
    return found.group(1)


async def new_user(runtime: Runtime, merchant_id: str | None) -> tuple[str, str]:
    """A merchant's user (an operator for None): (email, password)."""
    email = f"user-{secrets.token_hex(4)}@example.com"
    user, password = await runtime.dashboard_users.create(email, merchant_id=merchant_id, actor=Actor(user="test"))
    return user.email, password


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    page = await client.get("/dashboard/sign-in")
    return await client.post(
        "/dashboard/sign-in", data={"csrf_token": csrf(page), "email": email, "password": password}
    )


async def post_form(client: httpx.AsyncClient, page: str, action: str, **fields: str) -> httpx.Response:
    """Post a form of ``page`` as the browser would: with the page's CSRF token."""
    token = csrf(await client.get(page))
    return await client.post(action, data={"csrf_token": token, **fields})
