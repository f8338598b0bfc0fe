"""A small Server-Sent Events reader for tests and the stream bench (intentd never imports it).

It parses the wire as the spec says (fields `id`, `event`, `data`; comment lines start with ':'),
so a test sees exactly the frames the shim sent, pings included.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Frame:
    id: str | None
    event: str | None
    data: str
    comment: str | None = None  # a `: ping` line

    @property
    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value


class _Parser:
    def __init__(self) -> None:
        self.id: str | None = None
        self.event: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> Frame | None:
        if line == "":
            if not self.data and self.event is None and self.id is None:
                return None
            frame = Frame(self.id, self.event, "\n".join(self.data))
            self.id, self.event, self.data = None, None, []
            return frame
        if line.startswith(":"):
            return Frame(None, None, "", comment=line[1:].strip())
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "id":
            self.id = value
        elif name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return None


def frames(lines: Iterable[str]) -> Iterator[Frame]:
    parser = _Parser()
    for line in lines:
        frame = parser.feed(line.rstrip("\r"))
        if frame is not None:
            yield frame


async def aframes(lines: AsyncIterator[str]) -> AsyncIterator[Frame]:
    parser = _Parser()
    async for line in lines:
        frame = parser.feed(line.rstrip("\r"))
        if frame is not None:
            yield frame
