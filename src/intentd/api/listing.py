"""The list endpoints' query: strict parameters, the RFC 3339 `since`, and the opaque keyset cursor.

A cursor names the last row served by its key: `<list>.<createdAt in microseconds since 1970>.<id as
hex of its UTF-8>` (`r.` runs, `i.` intents); the next page starts strictly after that key in the
order (created_at DESC, id DESC). It is opaque to clients and has a regular grammar, declared in the
OpenAPI document: a cursor outside it (or of the other list) is a 400 `bad_cursor`, never a query
error, and every cursor inside it is a position the list can start from (a schema-valid request is
never refused).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request

from intentd.errors import ValidationFailed

LIMIT_DEFAULT = 50
LIMIT_MAX = 200
_ID_MAX = 200
_KINDS = {"run": "r", "intent": "i"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# RFC 3339 date-time (section 5.6); Python's fromisoformat alone also takes forms RFC 3339 does not.
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def strict_query(request: Request, allowed: Iterable[str]) -> None:
    """Unknown or repeated query parameters are refused: fail closed, never silently ignored."""
    allowed = set(allowed)
    names = [name for name, _ in request.query_params.multi_items()]
    unknown = sorted({n for n in names if n not in allowed})
    if unknown:
        raise ValidationFailed(
            f"unknown query parameter(s): {', '.join(map(repr, unknown))}",
            code="unknown_parameter",
            details={"unknown": unknown, "allowed": sorted(allowed)},
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValidationFailed(
            f"query parameter(s) given more than once: {', '.join(repeated)}",
            code="repeated_parameter",
            details={"repeated": repeated},
        )


def parse_since(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        if not _RFC3339.match(value):
            raise ValueError
        # Nanoseconds are valid RFC 3339; PostgreSQL keeps microseconds, so the rest is dropped.
        text = re.sub(r"(\.\d{6})\d+", r"\1", value.upper().replace(" ", "T").replace("Z", "+00:00"))
        # A leap second (23:59:60, RFC 3339 5.7) is the instant just before the next minute.
        leap = re.match(r"^(.{16}):60(\.\d+)?(.*)$", text)
        if leap:
            text = f"{leap.group(1)}:59.999999{leap.group(3)}"
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            "since must be an RFC 3339 date-time with a time zone, e.g. 2026-01-31T12:00:00Z",
            code="bad_since",
            details={"since": value[:100]},
        ) from None


def parse_filter_id(name: str, value: str | None) -> str | None:
    if value is not None and (not value or len(value) > _ID_MAX or "\x00" in value):
        raise ValidationFailed(
            f"{name} must be 1..{_ID_MAX} characters without NUL", code="bad_filter", details={"parameter": name}
        )
    return value


def cursor_pattern(kind: str) -> str:
    """The cursor grammar of one list (documented in the OpenAPI document as the parameter's pattern)."""
    return rf"^{_KINDS[kind]}\.[0-9]{{1,17}}\.([0-9a-f]{{2}}){{1,{_ID_MAX * 4}}}$"


def encode_cursor(kind: str, created_at: str, row_id: str) -> str:
    at = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
    micros = (at - _EPOCH) // timedelta(microseconds=1)
    return f"{_KINDS[kind]}.{micros}.{row_id.encode().hex()}"


def decode_cursor(kind: str, cursor: str | None) -> tuple[datetime, str] | None:
    """(createdAt, id) of the row the page starts after, or None for the first page."""
    if cursor is None:
        return None
    match = re.match(cursor_pattern(kind), cursor)
    if match is None:
        raise ValidationFailed(
            "cursor is not one this list hands out (pass nextCursor unchanged)",
            code="bad_cursor",
            details={"pattern": cursor_pattern(kind)},
        )
    _, micros, hex_id = cursor.split(".")
    # Any string of the grammar is a position in the order (a key's parts are public: they are in the
    # items), so an edited cursor is a page from elsewhere, never an error; bytes that are no UTF-8
    # text, or a NUL PostgreSQL cannot hold, become U+FFFD.
    row_id = bytes.fromhex(hex_id).decode("utf-8", errors="replace").replace("\x00", "\ufffd")
    return _EPOCH + timedelta(microseconds=int(micros)), row_id


def page_body(kind: str, page: dict[str, Any]) -> str:
    """The response text: PostgreSQL's items JSON as it is, and the cursor of the next page."""
    cursor = encode_cursor(kind, page["last_at"], page["last_id"]) if page["more"] else None
    return f'{{"items":{page["items"]},"nextCursor":{json.dumps(cursor)}}}'
