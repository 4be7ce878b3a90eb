"""A protocol-level fake of CloudTrail Lake's ``cloudtrail-data`` REST-JSON endpoint.

moto has no ``cloudtrail-data``, so this serves ``POST /PutAuditEvents?channelArn=...`` on 127.0.0.1
in a thread, for the real boto3 client pointed at it with ``endpoint_url``. It:
- checks the SigV4 ``Authorization`` header: well-formed, for service ``cloudtrail-data``, signed by
  the known access key, and the signature recomputed from the request with the known secret;
- validates the body: 1..100 events, ids unique and well-formed, ``eventData`` a JSON object in the
  integration event format, ``eventDataChecksum`` (base64 SHA-256) matching when given;
- stores accepted events per channel, counting how often each id arrived;
- answers partial failures (``fail_next``) and outages (``outage``) on demand;
- hangs on demand (``hang``): it accepts the connection and the request and never answers while
  ``hang`` is set, storing nothing (then a 503 nobody is waiting for any more).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)"
    r"/(?P<service>[a-z0-9-]+)/aws4_request, ?SignedHeaders=(?P<headers>[a-z0-9;-]+),"
    r" ?Signature=(?P<signature>[0-9a-f]{64})$"
)
_ID = re.compile(r"^[-_A-Za-z0-9]{1,128}$")
_REQUIRED = ("version", "eventSource", "eventName", "eventTime", "UID", "recipientAccountId")


@dataclass
class StoredEvent:
    id: str
    event_id: str
    event_data: dict[str, Any]


@dataclass
class CloudTrailDataFake:
    access_key: str = "testing"
    secret_key: str = "testing"
    channels: set[str] = field(default_factory=set)
    """Known channel ARNs; empty means any well-formed ARN is accepted."""
    stored: dict[str, list[StoredEvent]] = field(default_factory=dict)
    arrivals: Counter[str] = field(default_factory=Counter)
    """How many times each id was accepted: exactly-once means every count is 1."""
    calls: list[list[str]] = field(default_factory=list)
    """The ids of every well-formed, authenticated PutAuditEvents call, in order."""
    rejected: list[str] = field(default_factory=list)
    """Why requests were refused at the request level (bad signature, bad body)."""
    outage: bool = False
    hang: bool = False
    hung_calls: int = 0
    """How many requests arrived while ``hang`` was set (each one held without an answer)."""
    _fail: dict[str, tuple[int, str]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None
    url: str = ""

    # -- control --------------------------------------------------------------------------------

    def fail_next(self, ids: list[str], *, times: int = 1, code: str = "InternalFailure") -> None:
        """Answer these ids as ``failed`` the next ``times`` times they are sent."""
        with self._lock:
            for event_id in ids:
                self._fail[event_id] = (times, code)

    def events(self, channel_arn: str) -> list[StoredEvent]:
        with self._lock:
            return list(self.stored.get(channel_arn, []))

    def start(self, timeout: float = 10.0) -> str:
        app = Starlette(routes=[Route("/PutAuditEvents", self._put_audit_events, methods=["POST"])])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("cloudtrail-data fake did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        self.hang = False  # held requests end, so the server can stop
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)

    # -- the endpoint ---------------------------------------------------------------------------

    async def _put_audit_events(self, request: Request) -> Response:
        body = await request.body()
        problem = self._check_signature(request, body)
        if problem is not None:
            return self._error(403, "InvalidSignatureException", problem)
        if self.hang:
            with self._lock:
                self.hung_calls += 1
            while self.hang:  # the fake holds the request until the test lets go
                await asyncio.sleep(0.05)
            return self._error(503, "ServiceUnavailableException", "held until nobody waited")
        if self.outage:
            return self._error(503, "ServiceUnavailableException", "injected outage")
        channel = urllib.parse.parse_qs(request.url.query).get("channelArn", [""])[0]
        if not channel.startswith("arn:") or (self.channels and channel not in self.channels):
            return self._error(404, "ChannelNotFound", f"channel {channel!r} not found")
        try:
            entries = json.loads(body)["auditEvents"]
        except (ValueError, KeyError, TypeError):
            return self._error(400, "ValidationException", "body must be {auditEvents: [...]}")
        if not isinstance(entries, list) or not 1 <= len(entries) <= 100:
            return self._error(400, "ValidationException", "auditEvents must hold 1 to 100 events")
        ids = [entry.get("id") for entry in entries if isinstance(entry, dict)]
        if len(ids) != len(entries) or not all(isinstance(i, str) and _ID.match(i) for i in ids):
            return self._error(400, "ValidationException", "every event needs a well-formed id")
        if len(set(ids)) != len(ids):
            return self._error(400, "DuplicatedAuditEventId", "an id appears twice in one request")
        with self._lock:
            self.calls.append(ids)
            successful, failed = [], []
            for entry in entries:
                outcome = self._accept(channel, entry)
                (successful if "eventID" in outcome else failed).append(outcome)
        return JSONResponse({"successful": successful, "failed": failed})

    def _accept(self, channel: str, entry: dict[str, Any]) -> dict[str, str]:
        event_id = entry["id"]
        times, code = self._fail.get(event_id, (0, ""))
        if times:
            self._fail[event_id] = (times - 1, code)
            return {"id": event_id, "errorCode": code, "errorMessage": "injected failure"}
        event_data = entry.get("eventData")
        try:
            data = json.loads(event_data) if isinstance(event_data, str) else None
        except ValueError:
            data = None
        if not isinstance(data, dict):
            return {"id": event_id, "errorCode": "InvalidEventData", "errorMessage": "eventData is not JSON"}
        missing = [name for name in _REQUIRED if not data.get(name)]
        identity = data.get("userIdentity")
        if not isinstance(identity, dict) or not identity.get("type") or not identity.get("principalId"):
            missing.append("userIdentity")
        if missing:
            return {"id": event_id, "errorCode": "InvalidEventData", "errorMessage": f"missing {missing}"}
        checksum = entry.get("eventDataChecksum")
        expected = base64.b64encode(hashlib.sha256(event_data.encode("utf-8")).digest()).decode()
        if checksum is not None and checksum != expected:
            return {"id": event_id, "errorCode": "InvalidChecksum", "errorMessage": "checksum mismatch"}
        stored = StoredEvent(id=event_id, event_id=str(uuid.uuid4()), event_data=data)
        self.stored.setdefault(channel, []).append(stored)
        self.arrivals[event_id] += 1
        return {"id": event_id, "eventID": stored.event_id}

    def _error(self, status: int, code: str, message: str) -> Response:
        if status in (400, 403):
            with self._lock:
                self.rejected.append(f"{code}: {message}")
        return JSONResponse({"message": message}, status_code=status, headers={"x-amzn-ErrorType": code})

    # -- SigV4 ----------------------------------------------------------------------------------

    def _check_signature(self, request: Request, body: bytes) -> str | None:
        match = _AUTH.match(request.headers.get("authorization", ""))
        if match is None:
            return "missing or malformed SigV4 Authorization header"
        amz_date = request.headers.get("x-amz-date", "")
        if match["key"] != self.access_key:
            return "unknown access key"
        if match["service"] != "cloudtrail-data":
            return f"signed for service {match['service']!r}"
        if not amz_date.startswith(match["date"]):
            return "x-amz-date does not match the credential scope"
        signed = match["headers"].split(";")
        if "host" not in signed or "x-amz-date" not in signed:
            return "host and x-amz-date must be signed"
        canonical = "\n".join(
            [
                request.method,
                urllib.parse.quote(request.url.path, safe="/~"),
                _canonical_query(request.url.query),
                "".join(f"{name}:{_header_value(request, name)}\n" for name in signed),
                match["headers"],
                request.headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest(),
            ]
        )
        scope = f"{match['date']}/{match['region']}/{match['service']}/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        key = f"AWS4{self.secret_key}".encode()
        for part in (match["date"], match["region"], match["service"], "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, match["signature"]):
            return "signature does not match"
        return None


def _canonical_query(query: str) -> str:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}" for k, v in sorted(pairs)
    )


def _header_value(request: Request, name: str) -> str:
    return ",".join(" ".join(value.split()) for value in request.headers.getlist(name))
