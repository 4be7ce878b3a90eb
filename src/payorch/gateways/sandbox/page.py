"""The sandbox's authentication page: what a card issuer's 3-D Secure challenge is to a real payment,
served by payorch itself so the embedded mode shows the whole flow with no account anywhere.

``GET /sandbox/authenticate/{payment_id}`` shows the payment and two buttons, "Complete
authentication" and "Fail authentication". Each posts (an empty form) to the page, which records
the simulated customer's answer in the sandbox's books and sends the browser to the charge's
``return_url`` with ``?charge=<id>&authentication=<succeeded|failed>`` added (303), as an issuer's
page returns to the merchant's site. The merchant then confirms the charge
(``POST /v1/charges/{id}/confirm``), or payorch's reconciler finds it when it expires.

The app mounts this at ``/sandbox`` (the plugin's ``GatewayPages``), naming no gateway itself.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from payorch.gateways.plugin import GatewayServices
from payorch.gateways.sandbox.books import BookedPayment, SandboxBooks
from payorch.money import to_major_string

_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' http: https:",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_PAGE: Final = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sandbox: authenticate this payment</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 28rem; margin: 4rem auto; color: #1a1a1a; }}
.amount {{ font-size: 2rem; margin: 0.5rem 0 1.5rem; }}
form {{ display: inline; }}
button {{ font-size: 1rem; padding: 0.6rem 1.2rem; margin-right: 0.5rem; cursor: pointer; }}
.note {{ color: #666; font-size: 0.9rem; margin-top: 2rem; }}
</style></head>
<body>
<h1>Authenticate this payment</h1>
<p>The sandbox's issuer asks you to confirm this payment, as a bank's 3-D Secure page would.</p>
<p class="amount">{amount} {currency}</p>
<form method="post" action="{base}/complete"><button type="submit" id="complete">Complete authentication</button></form>
<form method="post" action="{base}/fail"><button type="submit" id="fail">Fail authentication</button></form>
<p class="note">Payment {payment_id} at {gateway}. No money moves: this is payorch's sandbox.</p>
</body></html>
"""

_DONE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sandbox: {title}</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 28rem; margin: 4rem auto;">
<h1>{title}</h1><p>{text}</p></body></html>
"""


def build_pages(services: Callable[[], GatewayServices]) -> Starlette:
    """The page as an ASGI app; ``services`` gives the runtime's books once it is built."""

    def books() -> SandboxBooks:
        ledger = services().processor_books
        if ledger is None:
            raise RuntimeError("the sandbox's authentication page needs the sandbox's books")
        return ledger

    async def show(request: Request) -> Response:
        payment_id = request.path_params["payment_id"]
        payment = await books().find_payment(payment_id)
        if payment is None or payment.status != "requires_action":
            return _finished(payment)
        return HTMLResponse(
            _PAGE.format(
                amount=escape(to_major_string(payment.amount, payment.currency)),
                currency=escape(payment.currency.upper()),
                base=escape(request.url.path.rstrip("/")),
                payment_id=escape(payment_id),
                gateway=escape(payment.gateway),
            ),
            headers=_HEADERS,
        )

    async def answer(request: Request, approved: bool) -> Response:
        payment_id = request.path_params["payment_id"]
        payment = await books().authenticate(payment_id, approved=approved)
        if payment is None:
            return _finished(await books().find_payment(payment_id))
        if payment.return_url is None:
            title = "Authentication complete" if approved else "Authentication failed"
            return _done(title, "You may close this window.", 200)
        target = _with_query(
            payment.return_url, charge=payment.charge_id, authentication="succeeded" if approved else "failed"
        )
        return RedirectResponse(target, status_code=303, headers=_HEADERS)

    async def complete(request: Request) -> Response:
        return await answer(request, True)

    async def fail(request: Request) -> Response:
        return await answer(request, False)

    return Starlette(
        routes=[
            Route("/authenticate/{payment_id}", show, methods=["GET"]),
            Route("/authenticate/{payment_id}/complete", complete, methods=["POST"]),
            Route("/authenticate/{payment_id}/fail", fail, methods=["POST"]),
        ]
    )


def _finished(payment: BookedPayment | None) -> Response:
    if payment is None:
        return _done("No such payment", "This authentication does not exist.", 404)
    return _done("Nothing to authenticate", "This payment is not waiting for authentication any more.", 409)


def _done(title: str, text: str, status: int) -> Response:
    return HTMLResponse(_DONE.format(title=escape(title), text=escape(text)), status_code=status, headers=_HEADERS)


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))
