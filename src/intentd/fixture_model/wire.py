"""The OpenAI chat-completions wire format of the fixture model: one reply as a JSON body or SSE chunks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from intentd.fixture_model.scenarios import MODEL_ID, Reply

CREATED = 1_700_000_000  # fixed: the same request gives the same bytes


def _completion_id(request: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(request.get("messages"), sort_keys=True).encode()).hexdigest()
    return f"chatcmpl-{digest[:24]}"


def usage(request: dict[str, Any], reply: Reply) -> dict[str, int]:
    prompt = len(json.dumps(request.get("messages"), sort_keys=True)) // 4
    completion = (len(reply.content or "") + sum(len(c.arguments) + len(c.name) for c in reply.tool_calls)) // 4
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    """The non-streaming `chat.completion` body."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    return {
        "id": _completion_id(request),
        "object": "chat.completion",
        "created": CREATED,
        "model": str(request.get("model") or MODEL_ID),
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        "usage": usage(request, reply),
    }


def chunks(request: dict[str, Any], reply: Reply) -> Iterator[dict[str, Any]]:
    """The streaming `chat.completion.chunk` objects, in order (the caller adds `data: [DONE]`)."""
    base = {
        "id": _completion_id(request),
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": str(request.get("model") or MODEL_ID),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    yield chunk({"role": "assistant", "content": ""})
    if reply.content:
        text = reply.content
        step = max(1, len(text) // 3 + 1)  # a few deltas, like a real stream
        for start in range(0, len(text), step):
            yield chunk({"content": text[start : start + step]})
    for index, call in enumerate(reply.tool_calls):
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        yield chunk({"tool_calls": [{"index": index, "function": {"arguments": call.arguments}}]})
    yield chunk({}, reply.finish_reason)
    if (request.get("stream_options") or {}).get("include_usage"):
        yield {**base, "choices": [], "usage": usage(request, reply)}


def sse(request: dict[str, Any], reply: Reply) -> Iterator[bytes]:
    for item in chunks(request, reply):
        yield f"data: {json.dumps(item, ensure_ascii=False)}\n\n".encode()
    yield b"data: [DONE]\n\n"
