"""Charges and their attempts: the writes of the request path and of settlement, each one statement
(so one round trip and its own transaction) with the audit events it records.

1. ``open_charge``: take the idempotency key, write the pending charge, its first pending attempt;
2. ``advance_attempt`` (failover): the failed attempt's result and the next pending attempt;
3. ``close_charge``: the last attempt's result, the charge's new state, the stored reply;
``settle_charge`` moves a charge whose outcome was learnt later (reconciler, notifications), and
``move_authorized`` captures or voids one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from payorch.storage.audit import outbox_insert
from payorch.storage.charges import CHARGE_COLUMNS, AttemptResult, Charge, NewCharge
from payorch.storage.idempotency import (
    EXISTING_KEY,
    EXISTING_KEY_COLUMNS,
    KeyExists,
    KeyRequest,
    complete_key,
    existing_key,
    take_key,
)
from payorch.storage.sql import Connection, Statement, row_to

_INSERT_CHARGE = """
        INSERT INTO charges (id, merchant_id, livemode, amount, currency, status, capture, payment_method,
                             description, metadata, idempotency_key, api_key_id, created_at, updated_at, routing,
                             return_url, setup_future_usage, off_session, customer_presence)
        SELECT :charge_id::text, :merchant_id::text, :livemode::boolean, :amount::bigint, :currency::text,
               'pending', :capture::boolean, :payment_method::text, :description::text, :metadata::jsonb,
               :key::text, :api_key_id::text, :created_at::timestamptz, :created_at::timestamptz, :routing::jsonb,
               :return_url::text, :setup_future_usage::text, :off_session::boolean, :customer_presence::jsonb
         WHERE {condition}
        RETURNING id"""

_INSERT_ATTEMPT = """
        INSERT INTO charge_attempts (id, merchant_id, charge_id, seq, gateway, token, status,
                                     authentication_requested)
        SELECT :{attempt}::text, :merchant_id::text, :charge_id::text, :{seq}::integer, :{gateway}::text,
               :{ref}::text, 'pending', {requested}
         WHERE {condition}
        RETURNING id"""

RECORD_ATTEMPT = """
        UPDATE charge_attempts
           SET status = :attempt_status::text, gateway_reference = :attempt_gateway_reference::text,
               raw_code = :attempt_raw_code::text, decline_code = :attempt_decline_code::text,
               message = :attempt_message::text, latency_ms = coalesce(:attempt_latency_ms::integer, latency_ms),
               next_check_at = :attempt_next_check_at::timestamptz, updated_at = now()
         WHERE merchant_id = :merchant_id::text AND id = :attempt_id::text AND status = :attempt_expected::text
        RETURNING id"""
"""A CTE body: an attempt's result (``AttemptResult.params()``), if the attempt is still in
``attempt_expected``."""

_MOVE_CHARGE = """
        UPDATE charges
           SET status = :status::text, amount_captured = :amount_captured::bigint, card_brand = :card_brand::text,
               card_last4 = :card_last4::text, card_exp_month = :card_exp_month::integer,
               card_exp_year = :card_exp_year::integer, gateway = :gateway::text,
               gateway_reference = :gateway_reference::text, failure_code = :failure_code::text,
               failure_message = :failure_message::text, decline_code = :decline_code::text,
               next_action = :next_action::jsonb, authentication = :authentication::jsonb,
               updated_at = :updated_at::timestamptz
         WHERE merchant_id = :merchant_id::text AND id = :charge_id::text AND status = :expected_status::text
        RETURNING {columns}"""

_OPEN = Statement(
    f"""
    WITH {take_key("charge_id")}, c AS ({_INSERT_CHARGE.format(condition="EXISTS (SELECT 1 FROM ok)")}),
    a AS ({
        _INSERT_ATTEMPT.format(
            attempt="attempt_id",
            seq="seq",
            gateway="gateway",
            ref="token",
            requested="false",
            condition="EXISTS (SELECT 1 FROM ok)",
        )
    }),
    o AS ({outbox_insert("EXISTS (SELECT 1 FROM ok)")})
    SELECT EXISTS (SELECT 1 FROM c) AS opened, {EXISTING_KEY_COLUMNS}
      FROM (SELECT 1) AS one {EXISTING_KEY}
    """
)

_OPEN_UNDER_KEY = Statement(
    f"""
    WITH c AS ({_INSERT_CHARGE.format(condition="true")}),
    a AS ({
        _INSERT_ATTEMPT.format(
            attempt="attempt_id", seq="seq", gateway="gateway", ref="token", requested="false", condition="true"
        )
    }),
    o AS ({outbox_insert()})
    SELECT count(*) FROM c
    """
)

_ADVANCE = Statement(
    f"""
    WITH prev AS ({RECORD_ATTEMPT}),
    nxt AS ({
        _INSERT_ATTEMPT.format(
            attempt="next_attempt_id",
            seq="next_seq",
            gateway="next_gateway",
            ref="next_token",
            requested=":next_authentication_requested::boolean",
            condition="true",
        )
    }),
    o AS ({outbox_insert()})
    SELECT EXISTS (SELECT 1 FROM prev) AS recorded
    """
)

_CLOSE = Statement(
    f"""
    WITH a AS ({RECORD_ATTEMPT}), c AS ({_MOVE_CHARGE.format(columns="id")}),
    k AS ({complete_key("EXISTS (SELECT 1 FROM c)", "charge_id")}),
    o AS ({outbox_insert("EXISTS (SELECT 1 FROM c)")})
    SELECT EXISTS (SELECT 1 FROM c) AS charge_moved
    """
)

_SETTLE = Statement(
    f"""
    WITH c AS ({_MOVE_CHARGE.format(columns=CHARGE_COLUMNS)}),
    k AS (
        UPDATE idempotency_keys
           SET status = 'completed', response_status = :reply_status::integer, response_body = :reply_body::bytea,
               completed_at = now()
         WHERE merchant_id = :merchant_id::text AND charge_id = :charge_id::text AND status = 'in_progress'
           AND :store_reply::boolean AND EXISTS (SELECT 1 FROM c)
        RETURNING key
    ), o AS ({outbox_insert("EXISTS (SELECT 1 FROM c)")})
    SELECT {CHARGE_COLUMNS} FROM c
    """
)

_MOVE_AUTHORIZED = Statement(
    f"""
    WITH c AS (
        UPDATE charges SET status = :status::text, amount_captured = :amount_captured::bigint, updated_at = now()
         WHERE merchant_id = :merchant_id::text AND id = :charge_id::text AND status = 'authorized'
        RETURNING {CHARGE_COLUMNS}
    ), o AS ({outbox_insert("EXISTS (SELECT 1 FROM c)")})
    SELECT {CHARGE_COLUMNS} FROM c
    """
)

_CLAIM_CAPTURE = Statement(
    """
    UPDATE charges SET capture_requested_amount = coalesce(capture_requested_amount, :amount::bigint)
     WHERE merchant_id = :merchant_id::text AND id = :charge_id::text AND status = 'authorized'
    RETURNING capture_requested_amount
    """
)

_RELEASE_CAPTURE = Statement(
    """
    UPDATE charges SET capture_requested_amount = NULL
     WHERE merchant_id = :merchant_id::text AND id = :charge_id::text AND status = 'authorized'
       AND capture_requested_amount = :amount::bigint
    """
)

ADD_REFUNDED = """
        UPDATE charges SET amount_refunded = amount_refunded + :refund_amount::bigint, updated_at = now()
         WHERE merchant_id = :merchant_id::text AND id = :charge_id::text AND ({condition})
        RETURNING id"""
"""A CTE body counting a succeeded refund on its charge, when ``condition`` holds."""


def _charge_params(charge: NewCharge, created_at: datetime) -> dict[str, Any]:
    return {
        "charge_id": charge.id,
        "merchant_id": charge.merchant_id,
        "livemode": charge.livemode,
        "amount": charge.amount,
        "currency": charge.currency,
        "capture": charge.capture,
        "payment_method": charge.payment_method,
        "description": charge.description,
        "metadata": charge.metadata,
        "key": charge.idempotency_key,
        "api_key_id": charge.api_key_id,
        "created_at": created_at,
        "routing": charge.routing,
        "return_url": charge.return_url,
        "setup_future_usage": charge.setup_future_usage,
        "off_session": charge.off_session,
        "customer_presence": charge.customer_presence,
    }


def _outcome_params(charge: Charge) -> dict[str, Any]:
    """The columns an outcome changes, from the charge as it will be."""
    return {
        "status": charge.status,
        "amount_captured": charge.amount_captured,
        "card_brand": charge.card_brand,
        "card_last4": charge.card_last4,
        "card_exp_month": charge.card_exp_month,
        "card_exp_year": charge.card_exp_year,
        "gateway": charge.gateway,
        "gateway_reference": charge.gateway_reference,
        "failure_code": charge.failure_code,
        "failure_message": charge.failure_message,
        "decline_code": charge.decline_code,
        "next_action": charge.next_action,
        "authentication": charge.authentication,
        "updated_at": charge.updated_at,
    }


async def open_charge(
    connection: Connection,
    charge: NewCharge,
    *,
    key: KeyRequest | None,
    attempt_id: str,
    gateway: str,
    token: str,
    audit: dict[str, list[Any]],
    created_at: datetime,
) -> Charge | KeyExists:
    """Take ``key`` (when there is one), write the pending charge, its first pending attempt and the
    ``audit`` events, all or nothing. When the key exists nothing is written and its record comes
    back instead, so a replay needs no second round trip."""
    params = {
        **_charge_params(charge, created_at),
        "fingerprint": None if key is None else key.fingerprint,
        "method": None if key is None else key.method,
        "path": None if key is None else key.path,
        "attempt_id": attempt_id,
        "seq": 1,
        "gateway": gateway,
        "token": token,
        **audit,
    }
    row = await _OPEN.fetchrow(connection, **params)
    if row is not None and row["opened"]:
        return charge.pending(created_at)  # what the statement wrote, built here rather than sent back
    return KeyExists(None if row is None else existing_key(row, charge.merchant_id, charge.idempotency_key))


async def open_charge_under_key(
    connection: Connection,
    charge: NewCharge,
    *,
    attempt_id: str,
    gateway: str,
    token: str,
    audit: dict[str, list[Any]],
    created_at: datetime,
) -> Charge:
    """``open_charge`` for a request that took over an abandoned key (already locked in the caller's
    transaction and naming this charge)."""
    await _OPEN_UNDER_KEY.fetchval(
        connection,
        **_charge_params(charge, created_at),
        attempt_id=attempt_id,
        seq=1,
        gateway=gateway,
        token=token,
        **audit,
    )
    return charge.pending(created_at)


async def advance_attempt(
    connection: Connection,
    merchant_id: str,
    *,
    attempt_id: str,
    result: AttemptResult,
    charge_id: str,
    next_attempt_id: str,
    seq: int,
    gateway: str,
    token: str,
    audit: dict[str, list[Any]],
    authentication_requested: bool = False,
) -> bool:
    """Failover (or the SCA retry, ``authentication_requested``): the finished attempt's result (if
    it is still pending; False otherwise), the charge's next pending attempt and the ``audit`` events."""
    recorded = await _ADVANCE.fetchval(
        connection,
        merchant_id=merchant_id,
        attempt_id=attempt_id,
        attempt_expected="pending",
        **result.params(),
        charge_id=charge_id,
        next_attempt_id=next_attempt_id,
        next_seq=seq,
        next_gateway=gateway,
        next_token=token,
        next_authentication_requested=authentication_requested,
        **audit,
    )
    return bool(recorded)


async def close_charge(
    connection: Connection,
    *,
    attempt_id: str,
    result: AttemptResult,
    charge: Charge,
    idempotency_key: str | None,
    reply_status: int,
    reply_body: bytes,
    audit: dict[str, list[Any]],
) -> bool:
    """From a pending charge to ``charge`` (its new state, as the caller rendered it): the last
    attempt's result (if still pending), the charge (if still pending), the stored reply (for
    ``idempotency_key``, only if the charge moved) and the ``audit`` events (those flagged
    conditional only if the charge moved). False: someone else (the reconciler) moved it first."""
    moved = await _CLOSE.fetchval(
        connection,
        merchant_id=charge.merchant_id,
        attempt_id=attempt_id,
        attempt_expected="pending",
        **result.params(),
        charge_id=charge.id,
        expected_status="pending",
        **_outcome_params(charge),
        key=idempotency_key,
        reply_status=reply_status,
        reply_body=reply_body,
        **audit,
    )
    return bool(moved)


async def settle_charge(
    connection: Connection,
    charge: Charge,
    *,
    expected_status: str,
    reply_status: int,
    reply_body: bytes,
    store_reply: bool,
    audit: dict[str, list[Any]],
) -> Charge | None:
    """Move a charge from ``expected_status`` to ``charge`` (its state as the caller rendered it);
    with ``store_reply``, the reply goes to the key whose request created it and died. None:
    someone else moved it first (nothing written but the unconditional ``audit`` events)."""
    row = await _SETTLE.fetchrow(
        connection,
        merchant_id=charge.merchant_id,
        charge_id=charge.id,
        expected_status=expected_status,
        **_outcome_params(charge),
        reply_status=reply_status,
        reply_body=reply_body,
        store_reply=store_reply,
        **audit,
    )
    return None if row is None else row_to(Charge, row)


async def move_authorized(
    connection: Connection, charge: Charge, *, status: str, amount_captured: int, audit: dict[str, list[Any]]
) -> Charge | None:
    """Capture (``succeeded``) or void (``canceled``) an authorized charge, with its audit events;
    None when it is no longer authorized."""
    row = await _MOVE_AUTHORIZED.fetchrow(
        connection,
        merchant_id=charge.merchant_id,
        charge_id=charge.id,
        status=status,
        amount_captured=amount_captured,
        **audit,
    )
    return None if row is None else row_to(Charge, row)


async def claim_capture(connection: Connection, merchant_id: str, charge_id: str, amount: int) -> int | None:
    """Record ``amount`` as the charge's capture unless one is recorded already; return the recorded
    amount (``amount``, or the earlier one). None if the charge is no longer ``authorized``."""
    claimed = await _CLAIM_CAPTURE.fetchval(connection, merchant_id=merchant_id, charge_id=charge_id, amount=amount)
    return None if claimed is None else int(claimed)


async def release_capture(connection: Connection, merchant_id: str, charge_id: str, amount: int) -> None:
    """Forget a capture the gateway provably did not perform, so another amount may be tried."""
    await _RELEASE_CAPTURE.execute(connection, merchant_id=merchant_id, charge_id=charge_id, amount=amount)
