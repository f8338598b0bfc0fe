"""Webhook endpoints (INTENTD_WEBHOOKS and `[[recipes.X.webhooks]]`), which events they get, the URL
policy and the signature.

A webhook URL is an SSRF surface: only http(s) to a loopback address or to a host named in
INTENTD_WEBHOOK_HOSTS is accepted, and delivery.py follows no redirect, times out and caps the answer.
The secret never appears in a file or in a workflow's input: `secretEnv` names the variable holding it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from intentd.config import Settings, webhook_secret

# Webhook event names (the contract), and the run statuses each run.status event maps to.
ENDED_EVENTS = ("succeeded", "failed", "retries_exceeded", "canceled", "rejected", "expired")
EVENT_NAMES = ("run.waiting", "run.reminder", *(f"run.{s}" for s in ENDED_EVENTS))
SIGNATURE_HEADER = "Intentd-Signature"


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    url: str = Field(max_length=2000)
    secret_env: str = Field(alias="secretEnv", pattern=r"^[A-Z_][A-Z0-9_]*$")
    events: list[str] = Field(default_factory=lambda: list(EVENT_NAMES))

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(EVENT_NAMES))
        if unknown:
            raise ValueError(f"unknown webhook events {unknown}; known: {list(EVENT_NAMES)}")
        return value


class WebhookConfigError(ValueError):
    """A webhook endpoint the worker refuses to use (bad URL, host not allowed, secret missing)."""


def allowed_hosts(settings: Settings) -> frozenset[str]:
    return frozenset(h.strip().lower() for h in settings.webhook_hosts_raw.split(",") if h.strip())


def check_url(url: str, hosts: frozenset[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookConfigError(f"webhook URL {url!r}: only http(s) URLs with a host")
    if parts.username or parts.password:
        raise WebhookConfigError(f"webhook URL {url!r}: no credentials in the URL (sign with the secret)")
    host = parts.hostname.lower()
    if host in hosts or host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise WebhookConfigError(f"webhook URL {url!r}: host {host!r} is neither loopback nor in INTENTD_WEBHOOK_HOSTS")


def global_endpoints(settings: Settings) -> list[Endpoint]:
    """INTENTD_WEBHOOKS: a JSON list, or '@path' to a file holding one."""
    raw = settings.webhooks_raw.strip()
    if not raw:
        return []
    text = Path(raw[1:]).read_text() if raw.startswith("@") else raw
    items = json.loads(text)
    if not isinstance(items, list):
        raise WebhookConfigError("INTENTD_WEBHOOKS must be a JSON list of endpoints")
    return [Endpoint.model_validate(item) for item in items]


def validate(endpoints: list[Endpoint], settings: Settings) -> None:
    """Refuse an endpoint before any delivery: its URL policy and its secret's presence."""
    hosts = allowed_hosts(settings)
    for ep in endpoints:
        check_url(ep.url, hosts)
        if not webhook_secret(ep.secret_env):
            raise WebhookConfigError(f"webhook {ep.name!r}: environment variable {ep.secret_env} is not set")


def webhook_event(type_: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The webhook event an app.events row is, with its payload; None when it is none."""
    if type_ == "run.reminder":
        return "run.reminder", data
    if type_ != "run.status":
        return None
    status = data.get("status")
    if status == "waiting_input":
        return "run.waiting", {"nextAction": data.get("nextAction"), "gate": data.get("gate")}
    if status in ENDED_EVENTS:
        return f"run.{status}", {k: v for k, v in data.items() if k in ("status", "from", "error", "nextAction")}
    return None


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`, as Stripe signs (docs/events.md has the check)."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, header: str, body: bytes, *, now: int, tolerance: int = 300) -> bool:
    """The receiver's check: a fresh timestamp and a matching v1 (constant-time compare)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    expected = signature(secret, timestamp, body).split("v1=", 1)[1]
    return abs(now - timestamp) <= tolerance and hmac.compare_digest(expected, fields.get("v1", ""))
