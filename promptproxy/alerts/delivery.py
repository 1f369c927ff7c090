"""One delivery on the wire: the body (Slack `text` or our JSON object), the signature headers, the POST."""
from __future__ import annotations

import hashlib
import hmac
import time

import orjson
import requests

USER_AGENT = "PromptProxy-Webhooks/1"


def body(fmt: str, delivery_id: int, event: str, created_at, payload: dict) -> bytes:
    """`slack`: {"text"}; `json`: {"id", "event", "created_at", "text", "data"} (docs/alerts.md)."""
    if fmt == "slack":
        return orjson.dumps({"text": payload.get("text", "")})
    return orjson.dumps({"id": f"dlv_{delivery_id}", "event": event,
                         "created_at": created_at.isoformat(timespec="seconds") + "Z",
                         "text": payload.get("text", ""), "data": payload.get("data") or {}})


def signature(secret: str, timestamp: str, data: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>` under the webhook's secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + data, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(delivery_id: int, event: str, data: bytes, secret: str | None, now: float | None = None) -> dict:
    """Content type, event and delivery ids, and the signature when the webhook has a secret."""
    out = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "X-PromptProxy-Event": event,
           "X-PromptProxy-Delivery": f"dlv_{delivery_id}"}
    if secret:
        stamp = str(int(now if now is not None else time.time()))
        out["X-PromptProxy-Timestamp"] = stamp
        out["X-PromptProxy-Signature"] = signature(secret, stamp, data)
    return out


def post(session: requests.Session, url: str, data: bytes, hdrs: dict, timeout: float) -> tuple[int | None, str | None]:
    """(HTTP status, error or None). Errors name the failure, never the URL (it may carry a token)."""
    try:
        resp = session.post(url, data=data, headers=hdrs, timeout=(min(timeout, 5.0), timeout),
                            allow_redirects=False, stream=True)
    except requests.Timeout as exc:
        return None, f"timed out ({type(exc).__name__})"
    except requests.RequestException as exc:
        return None, f"connection failed ({type(exc).__name__})"
    resp.close()  # the receiver's body is not needed
    if 200 <= resp.status_code < 300:
        return resp.status_code, None
    if 300 <= resp.status_code < 400:
        return resp.status_code, f"HTTP {resp.status_code} (redirects are not followed)"
    return resp.status_code, f"HTTP {resp.status_code}"
