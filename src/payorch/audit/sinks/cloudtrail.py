"""CloudTrail Lake sink: ``cloudtrail-data`` ``PutAuditEvents`` to an integration channel.

CloudTrail has no ``PutEvents`` API; custom events go to a CloudTrail Lake channel through
``PutAuditEvents``: at most 100 events per call, each with ``eventData`` (a JSON string in the Lake
integration event format) and ``eventDataChecksum``. The answer lists ``successful`` and ``failed``
entries; only the failed ones are sent again, and ids already accepted are remembered so a batch the
shipper re-sends after an outage is not stored twice. They are remembered on the sink's own thread as
the answer arrives, so a call the shipper stopped waiting for (its timeout) still counts what it stored.

``eventDataChecksum`` follows the API reference: base64 of the binary SHA-256 of ``eventData``
(``printf %s "$eventData" | openssl dgst -binary -sha256 | base64``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import threading
from collections import OrderedDict
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from payorch.audit.chain import ChainedEvent
from payorch.audit.sinks.base import SinkError, SinkMisconfigured, SinkThread, SinkUnsupported

MAX_EVENTS_PER_CALL = 100
EVENT_DATA_VERSION = "1.0"

_CHANNEL_ARN = re.compile(r"^arn:aws[a-z-]*:cloudtrail:[a-z0-9-]+:(\d{12}):channel/[A-Za-z0-9._/-]+$")
_MISCONFIGURED_CODES = frozenset(
    {
        "ChannelNotFound", "InvalidChannelARN", "ChannelInsufficientPermission", "ChannelUnsupportedSchema",
        # A refused credential: retried with backoff like the rest, but reported as configuration.
        "InvalidSignatureException", "UnrecognizedClientException", "AccessDeniedException",
        "ExpiredTokenException", "InvalidClientTokenId",
    }
)  # fmt: skip


def event_data_checksum(event_data: str) -> str:
    """base64(SHA-256(eventData)), as the PutAuditEvents reference specifies."""
    return base64.b64encode(hashlib.sha256(event_data.encode("utf-8")).digest()).decode("ascii")


def to_event_data(link: ChainedEvent, *, recipient_account_id: str, event_source: str) -> dict[str, Any]:
    """Map one chained audit event to the CloudTrail Lake integration event format. The whole chain
    link travels in ``additionalEventData`` so the Lake copy can be verified like any other sink."""
    event = link.event
    actor: dict[str, Any] = event.get("actor") or {}
    origin: dict[str, Any] = event.get("origin") or {}
    details: dict[str, Any] = event.get("details") or {}
    if actor.get("api_key_id"):
        identity_type, principal = "ApiKey", actor["api_key_id"]
    elif actor.get("user"):
        identity_type, principal = "User", actor["user"]
    elif actor.get("merchant_id"):
        identity_type, principal = "Merchant", actor["merchant_id"]
    else:
        identity_type, principal = "System", event_source
    data: dict[str, Any] = {
        "version": EVENT_DATA_VERSION,
        "userIdentity": {"type": identity_type, "principalId": str(principal), "details": actor},
        "userAgent": event_source,
        "eventSource": event_source,
        "eventName": event.get("action", ""),
        "eventTime": _event_time(link.occurred_at),
        "UID": link.event_id,
        "requestParameters": {"resource": event.get("resource"), "details": details},
        "responseElements": {"outcome": event.get("outcome")},
        "recipientAccountId": recipient_account_id,
        "additionalEventData": {
            "requestId": origin.get("request_id"),
            "merchantId": actor.get("merchant_id"),
            "chain": {"seq": link.seq, "prevHash": link.prev_hash, "hash": link.hash},
            "auditEvent": event,
        },
    }
    if origin.get("ip"):
        data["sourceIPAddress"] = origin["ip"]
    if event.get("outcome") == "failure":
        data["errorCode"] = str(details.get("code") or details.get("decline_code") or "failure")
        if details.get("message"):
            data["errorMessage"] = str(details["message"])[:1024]
    return data


def _event_time(occurred_at: str) -> str:
    """``yyyy-MM-DDTHH:mm:ssZ`` in UTC, as CloudTrail records carry it."""
    return occurred_at[:19] + "Z" if len(occurred_at) >= 19 else occurred_at


class CloudTrailLakeSink:
    """Ships to a CloudTrail Lake channel. ``client`` is a boto3 ``cloudtrail-data`` client."""

    def __init__(
        self,
        client: Any,
        channel_arn: str,
        *,
        event_source: str = "payorch",
        failed_entry_attempts: int = 3,
        retry_delay: float = 0.5,
        remember_ids: int = 50_000,
        name: str = "cloudtrail",
    ) -> None:
        match = _CHANNEL_ARN.match(channel_arn)
        if match is None:
            raise ValueError(f"not a CloudTrail Lake channel ARN: {channel_arn!r}")
        self.name = name
        self._client = client
        self._channel_arn = channel_arn
        self._account_id = match.group(1)
        self._event_source = event_source
        self._attempts = max(1, failed_entry_attempts)
        self._retry_delay = retry_delay
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._remember = remember_ids
        self._delivered_lock = threading.Lock()  # the sink's thread adds, the shipper reads
        self._thread = SinkThread(name)

    async def check(self) -> None:
        """The ARN was validated at construction; ``cloudtrail-data`` has no read call to probe the
        channel with, so a wrong channel shows up as ``SinkMisconfigured`` on the first put."""

    async def read_all(self) -> list[ChainedEvent]:
        raise SinkUnsupported(
            "CloudTrail Lake is read back through an event data store query, not the channel; "
            "verify the S3 or local sink"
        )

    async def put_batch(self, events: list[ChainedEvent]) -> None:
        with self._delivered_lock:
            pending = [link for link in events if link.event_id not in self._delivered]
        for start in range(0, len(pending), MAX_EVENTS_PER_CALL):
            await self._put_chunk(pending[start : start + MAX_EVENTS_PER_CALL])

    async def _put_chunk(self, chunk: list[ChainedEvent]) -> None:
        remaining = {link.event_id: self._entry(link) for link in chunk}
        failures: list[dict[str, Any]] = []
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._retry_delay * 2 ** (attempt - 1))
            response = await self._call(list(remaining.values()))
            for accepted in response.get("successful", []):
                remaining.pop(accepted.get("id"), None)
            failures = list(response.get("failed", []))
            if not remaining:
                return
        codes = sorted({str(f.get("errorCode")) for f in failures})
        raise SinkError(f"cloudtrail: {len(remaining)} events still failing after {self._attempts} attempts: {codes}")

    async def _call(self, entries: list[dict[str, str]]) -> dict[str, Any]:
        try:
            response: dict[str, Any] = await self._thread.run(self._send, entries)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISCONFIGURED_CODES:
                raise SinkMisconfigured(f"cloudtrail channel {self._channel_arn}: {code}") from exc
            raise SinkError(f"cloudtrail: PutAuditEvents failed: {exc}") from exc
        except BotoCoreError as exc:
            raise SinkError(f"cloudtrail: PutAuditEvents failed: {exc}") from exc
        return response

    def _send(self, entries: list[dict[str, str]]) -> dict[str, Any]:
        """On the sink's thread: one PutAuditEvents call, its accepted ids remembered at once."""
        response: dict[str, Any] = self._client.put_audit_events(channelArn=self._channel_arn, auditEvents=entries)
        sent = {entry["id"] for entry in entries}
        with self._delivered_lock:
            for accepted in response.get("successful", []):
                if accepted.get("id") in sent:
                    self._remember_delivered(accepted["id"])
        return response

    def _entry(self, link: ChainedEvent) -> dict[str, str]:
        data = to_event_data(link, recipient_account_id=self._account_id, event_source=self._event_source)
        event_data = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return {
            "id": link.event_id,
            "eventData": event_data,
            "eventDataChecksum": event_data_checksum(event_data),
        }

    def _remember_delivered(self, event_id: str) -> None:
        """Under ``_delivered_lock``."""
        self._delivered[event_id] = None
        while len(self._delivered) > self._remember:
            self._delivered.popitem(last=False)
