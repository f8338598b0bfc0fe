"""Who acts: the principal behind a request, and the roles an endpoint may require.

With `INTENTD_AUTH=tokens` a principal is a token's name and roles (app.api_tokens). With auth off
(loopback only) every caller is the local operator with every role; the course's calls, which name
the approver in the body, keep working unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    viewer = "viewer"  # reads
    submitter = "submitter"  # create intents, start runs
    approver = "approver"  # approve, reject or request changes; answer questions
    operator = "operator"  # retry, cancel
    admin = "admin"  # tokens


class Channel(StrEnum):
    """Where a request came from (the X-Intentd-Channel header; api when absent)."""

    api = "api"
    cli = "cli"
    console = "console"


@dataclass(frozen=True)
class Principal:
    name: str
    roles: frozenset[Role]
    channel: Channel = Channel.api
    request_id: str = ""
    # False with auth off: the name is then the one the body gives (approvedBy), or "local".
    authenticated: bool = False

    def has(self, role: Role) -> bool:
        return role in self.roles


LOCAL_OPERATOR = Principal(name="local", roles=frozenset(Role))
