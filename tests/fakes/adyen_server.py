"""A protocol-level fake of Adyen's Checkout API (v71): JSON in, JSON out, X-API-Key, Idempotency-Key.

Card behaviour follows Adyen's test conventions: the holder name selects the refusal reason
(``NOT_ENOUGH_BALANCE``, ``DECLINED``, ...), anything else authorises. ``CHALLENGE`` asks for 3-D
Secure: ``RedirectShopper`` with a redirect ``action`` (to the fake's own page, back to the
``returnUrl``), finished by ``/payments/details`` with the ``redirectResult`` that
:meth:`AdyenFake.authenticate` hands the customer's browser; ``FRICTIONLESS`` authorises with its
3-D Secure result. Stored cards made by a
``storePaymentMethod`` zero-value payment keep the behaviour of the card they were made from.

    with AdyenFake() as fake:
        fake.inject(Fault.ERROR_500_AFTER_CHARGE)
        ...                        # AdyenGateway with base_url=fake.base_url
        fake.charges_for("att_1")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.fakes.stripe_server import FakeGatewayServer, FakeRequest, FakeResponse, Fault, LedgerCharge

__all__ = ["AdyenFake", "Fault", "encrypted_card"]


@dataclass(frozen=True, slots=True)
class _Card:
    brand: str
    last4: str
    holder: str
    bin: str = "411111"
    country: str = "US"


# Test holder names -> (resultCode, refusalReasonCode, refusalReason)
HOLDER_RESULTS: dict[str, tuple[str, str | None, str | None]] = {
    "DECLINED": ("Refused", "2", "Refused"),
    "BLOCK_CARD": ("Refused", "5", "Blocked Card"),
    "CARD_EXPIRED": ("Refused", "6", "Expired Card"),
    "INVALID_CARD": ("Refused", "8", "Invalid Card Number"),
    "NOT_ENOUGH_BALANCE": ("Refused", "12", "Not enough balance"),
    "FRAUD": ("Refused", "20", "FRAUD"),
    "CVC_DECLINED": ("Refused", "24", "CVC Declined"),
    "ACQUIRER_ERROR": ("Refused", "4", "Acquirer Error"),
    "ISSUER_UNAVAILABLE": ("Refused", "9", "Issuer Unavailable"),
    "ERROR": ("Error", None, "Acquirer Error"),
    "RECEIVED": ("Received", None, None),
}

# The first character of the (fake) encrypted number -> brand, last four, BIN and issuing country;
# "9" is the fake's own hint for a Visa issued in the Netherlands.
_BRANDS = {
    "4": ("visa", "1111", "411111", "US"),
    "5": ("mc", "4444", "555555", "US"),
    "3": ("amex", "8431", "370000", "US"),
    "9": ("visa", "0000", "454617", "NL"),
}


def encrypted_card(holder: str = "J. Smith", number_hint: str = "4") -> str:
    """A Drop-in style ``paymentMethod`` token. The fake reads only the first character of the
    (normally encrypted) number field for the brand, and the holder name for the result."""
    return json.dumps(
        {
            "type": "scheme",
            "encryptedCardNumber": f"adyenjs_0_1_25${number_hint}fake",
            "encryptedExpiryMonth": "adyenjs_0_1_25$03",
            "encryptedExpiryYear": "adyenjs_0_1_25$2030",
            "encryptedSecurityCode": "adyenjs_0_1_25$737",
            "holderName": holder,
        }
    )


class AdyenFake(FakeGatewayServer):
    """``/v71/payments`` and its ``captures``, ``cancels`` and ``refunds`` modifications."""

    checks_fingerprint = False  # Adyen replays the first answer for a key, whatever the body

    def __init__(self, api_key: str = "AQE_fake_key", merchant_account: str = "PayorchECOM") -> None:
        super().__init__()
        self.api_key = api_key
        self.merchant_account = merchant_account
        self._stored: dict[str, _Card] = {}
        self._challenges: dict[str, dict[str, Any]] = {}
        """pspReference -> the ``/payments`` answer it will give once authenticated."""
        self._redirect_results: dict[str, tuple[str, bool]] = {}
        self._manual: dict[str, bool] = {}

    def __enter__(self) -> AdyenFake:
        self.start()
        return self

    @property
    def base_url(self) -> str:
        return f"{self.url}/v71"

    # -- protocol --------------------------------------------------------------------------------

    def token_of(self, request: FakeRequest) -> str | None:
        method = _json(request.body).get("paymentMethod")
        if not isinstance(method, dict):
            return None
        return method.get("storedPaymentMethodId") or method.get("holderName")

    def error_response(self, status: int, kind: str) -> FakeResponse:
        codes = {
            "rate_limited": ("000", "Too many requests", "throttling"),
            "unavailable": ("000", "Service unavailable", "internal"),
            "server_error": ("905", "Internal error", "internal"),
            "key_in_use": ("704", "request already processed or in progress", "validation"),
            "key_reused": ("704", "request already processed or in progress", "validation"),
        }
        error_code, message, error_type = codes[kind]
        # Adyen reports an idempotency conflict as 422, not 400/409.
        status = 422 if kind in ("key_in_use", "key_reused") else status
        return _adyen_error(status, error_code, message, error_type)

    async def route(self, request: FakeRequest) -> FakeResponse:
        if request.headers.get("x-api-key") != self.api_key:
            return _adyen_error(401, "000", "HTTP Status Response - Unauthorized", "security")
        body = _json(request.body)
        details = request.path.rstrip("/").endswith("/payments/details")  # names no merchant account
        if not details and body.get("merchantAccount") != self.merchant_account:
            return _adyen_error(403, "901", "Invalid Merchant Account", "security")
        parts = request.path.strip("/").split("/")
        with self._cond:
            match request.method, parts:
                case "POST", ["v71", "paymentMethods"]:
                    return FakeResponse.json(200, {"paymentMethods": [{"type": "scheme", "name": "Cards"}]})
                case "POST", ["v71", "payments"]:
                    return self._payment(body, request.headers.get("idempotency-key"))
                case "POST", ["v71", "payments", "details"]:
                    return self._details(body)
                case "POST", ["v71", "payments", psp, "captures" | "cancels" | "refunds" as action]:
                    return self._modification(psp, action, body)
        return _adyen_error(404, "000", "Not found", "validation")

    # -- payments --------------------------------------------------------------------------------

    def _card(self, method: dict[str, Any]) -> _Card | None:
        stored_id = method.get("storedPaymentMethodId")
        if stored_id is not None:
            return self._stored.get(str(stored_id))
        number = str(method.get("encryptedCardNumber", ""))
        if method.get("type") != "scheme" or not number.startswith("adyenjs_"):
            return None
        brand, last4, first_digits, country = _BRANDS.get(number.partition("$")[2][:1], _BRANDS["4"])
        return _Card(brand, last4, str(method.get("holderName", "")), first_digits, country)

    def _payment(self, body: dict[str, Any], key: str | None) -> FakeResponse:
        amount, method = body.get("amount"), body.get("paymentMethod")
        if not isinstance(amount, dict) or not isinstance(amount.get("value"), int) or not body.get("reference"):
            return _adyen_error(422, "100", "Required field 'amount' or 'reference' is not provided.", "validation")
        card = self._card(method) if isinstance(method, dict) else None
        if card is None:
            return _adyen_error(422, "174", "Unable to decrypt data", "validation")
        psp = self.new_id("PSP")
        result_code, reason_code, reason = HOLDER_RESULTS.get(card.holder, ("Authorised", None, None))
        answer: dict[str, Any] = {
            "pspReference": psp,
            "resultCode": result_code,
            "merchantReference": body["reference"],
            "amount": amount,
            "paymentMethod": {"brand": card.brand, "type": "scheme"},
            "additionalData": {
                "cardSummary": card.last4,
                "expiryDate": "3/2030",
                "paymentMethod": card.brand,
                # Given only where the merchant account has these additional data switched on.
                "cardBin": card.bin,
                "issuerCountry": card.country,
            },
        }
        if reason_code is not None:
            answer.update(refusalReasonCode=reason_code, refusalReason=reason)
        if card.holder == "FRICTIONLESS":
            answer["additionalData"].update(_THREE_D_SECURE_OK)
        answer["additionalData"]["networkTxReference"] = f"NTX{psp}"
        if card.holder == "CHALLENGE":
            return self._challenge(psp, body, key, card, answer)
        if body.get("storePaymentMethod") and result_code == "Authorised":
            stored_id = self.new_id("STORED")
            self._stored[stored_id] = card
            answer["additionalData"]["tokenization.storedPaymentMethodId"] = stored_id
            answer["additionalData"]["tokenization.shopperReference"] = body.get("shopperReference")
        self._record(psp, body, key, card, result_code, reason_code)
        return FakeResponse.json(200, answer)

    def _challenge(
        self, psp: str, body: dict[str, Any], key: str | None, card: _Card, answer: dict[str, Any]
    ) -> FakeResponse:
        if not body.get("returnUrl"):
            return _adyen_error(422, "14_006", "Required object 'returnUrl' is not provided.", "validation")
        self._challenges[psp] = {**answer, "additionalData": {**answer["additionalData"], **_THREE_D_SECURE_OK}}
        self._manual[psp] = (body.get("additionalData") or {}).get("manualCapture") == "true"
        self._record(psp, body, key, card, "RedirectShopper", None)
        action = {
            "paymentMethodType": "scheme",
            "type": "redirect",
            "method": "GET",
            "url": f"{self.url}/3ds/{psp}",
        }
        waiting = {k: v for k, v in answer.items() if k not in ("amount", "paymentMethod")}
        return FakeResponse.json(200, {**waiting, "resultCode": "RedirectShopper", "action": action})

    def authenticate(self, psp: str, *, succeed: bool = True) -> str:
        """The shopper finishes the challenge: the ``redirectResult`` their browser brings back."""
        with self._cond:
            result = f"rr_{self.new_id('')}"
            self._redirect_results[result] = (psp, succeed)
            return result

    def _details(self, body: dict[str, Any]) -> FakeResponse:
        details = body.get("details")
        redirect_result = details.get("redirectResult") if isinstance(details, dict) else None
        found = self._redirect_results.get(str(redirect_result))
        if found is None:
            return _adyen_error(422, "101", "Invalid redirectResult", "validation")
        psp, succeed = found
        answer = self._challenges[psp]
        charge = self.find(psp)
        if charge is not None and charge.status == "redirectshopper":
            manual = self._manual.get(psp, False)
            if succeed:
                charge.authorized = True
                charge.status = "authorised" if manual else "captured"
                charge.amount_captured = 0 if manual else charge.amount
            else:
                charge.status, charge.decline_code = "refused", "11"
        if not succeed or (charge is not None and charge.status in ("refused", "cancelled")):
            refused = {**answer, "resultCode": "Refused", "refusalReasonCode": "11",
                       "refusalReason": "3D Not Authenticated"}  # fmt: skip
            refused["additionalData"] = {**answer["additionalData"], "threeDAuthenticated": "false",
                                         "liabilityShift": "false"}  # fmt: skip
            return FakeResponse.json(200, refused)
        return FakeResponse.json(200, answer)

    def _record(
        self,
        psp: str,
        body: dict[str, Any],
        key: str | None,
        card: _Card,
        result_code: str,
        reason: str | None,
    ) -> None:
        amount = body["amount"]
        authorised = result_code == "Authorised"
        manual = body.get("additionalData", {}).get("manualCapture") == "true"
        charge = LedgerCharge(
            reference=psp,
            amount=amount["value"],
            currency=amount.get("currency", ""),
            status=("authorised" if manual else "captured") if authorised else result_code.lower(),
            token=card.holder,
            idempotency_key=key,
            metadata=dict(body.get("metadata") or {}),
            authorized=authorised,
            amount_captured=amount["value"] if authorised and not manual else 0,
            decline_code=reason,
        )
        self.record(charge)

    def _modification(self, psp: str, action: str, body: dict[str, Any]) -> FakeResponse:
        charge = self.find(psp)
        if action == "cancels" and charge is not None and charge.status == "redirectshopper":
            charge.status = "cancelled"  # a technical cancel of a payment whose shopper never came back
        elif charge is None or not charge.authorized:
            return _adyen_error(422, "167", "Original pspReference required for this operation", "validation")
        value = (body.get("amount") or {}).get("value", 0)
        if action == "captures":
            if charge.status != "authorised" or value > charge.amount:
                return _adyen_error(422, "137", "Invalid amount specified", "validation")
            charge.status, charge.amount_captured = "captured", value
        elif action == "cancels" and charge.status != "cancelled":
            if charge.status != "authorised":
                return _adyen_error(422, "167", "Payment cannot be cancelled", "validation")
            charge.status = "cancelled"
        else:
            if value > charge.amount_captured - charge.amount_refunded:
                return _adyen_error(422, "137", "Invalid amount specified", "validation")
            charge.amount_refunded += value
            charge.refunds.append(value)
        answer = {
            "merchantAccount": self.merchant_account,
            "paymentPspReference": psp,
            "pspReference": self.new_id("MOD"),
            "reference": body.get("reference"),
            "status": "received",
        }
        if "amount" in body:
            answer["amount"] = body["amount"]
        return FakeResponse.json(201, answer)


_THREE_D_SECURE_OK = {
    "threeDOffered": "true",
    "threeDAuthenticated": "true",
    "liabilityShift": "true",
    "threeDSVersion": "2.2.0",
}


def _json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _adyen_error(status: int, error_code: str, message: str, error_type: str) -> FakeResponse:
    return FakeResponse.json(
        status, {"status": status, "errorCode": error_code, "message": message, "errorType": error_type}
    )
