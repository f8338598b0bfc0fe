"""The embedded PostgreSQL's password: a random one in a 0600 libpq password file, and the
pg_hba.conf that demands it (scram-sha-256) on every TCP and unix-socket connection.

Without it any local account would be superuser of the database: forge approvals, `COPY … TO
PROGRAM` as the server's account, or plant workflow rows that DBOS unpickles in the worker.
The role's password is set as a SCRAM verifier, so the plain text never reaches the server or its
logs. Clients name the file (`passfile=` in Settings.database_url); the password is never on a
command line or in a URL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from intentd.hardening import write_private

ROLE = "postgres"
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)

# Every connection, local or TCP, replication included, proves the password; nothing else gets in.
HBA = """\
# Written by intentd (src/intentd/db/pg_auth.py): every connection needs the password kept in the
# libpq password file beside the data directory. Rewritten on `mise run db:up`; edits are lost.
# TYPE  DATABASE     USER  ADDRESS       METHOD
local   all          all                 scram-sha-256
host    all          all   127.0.0.1/32  scram-sha-256
host    all          all   ::1/128       scram-sha-256
local   replication  all                 scram-sha-256
host    replication  all   127.0.0.1/32  scram-sha-256
host    replication  all   ::1/128       scram-sha-256
"""

_HEADER = "# intentd: the embedded PostgreSQL's password (libpq password file); made by `mise run db:up`\n"


def new_password() -> str:
    return secrets.token_urlsafe(32)  # [A-Za-z0-9_-]: no ':' or '\\' to escape in the file


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores in pg_authid (RFC 5802/7677 and its format)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def alter_role_sql(password: str) -> str:
    # The verifier is base64 plus '$' and ':', so it needs no escaping inside the literal.
    return f"ALTER ROLE {ROLE} WITH LOGIN PASSWORD '{scram_verifier(password)}'"


def read_password(path: Path) -> str | None:
    """The password in `path`, or None when the file is missing or holds none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    for line in text.splitlines():
        if line and not line.startswith("#"):
            return line.rsplit(":", 1)[-1] or None
    return None


def is_private(path: Path) -> bool:
    """Only its owner, who is us, may read it: anything else may have leaked the password."""
    st = path.stat()
    return st.st_uid == os.geteuid() and st.st_mode & 0o077 == 0


def write_password(path: Path, password: str) -> None:
    write_private(path, f"{_HEADER}*:*:*:{ROLE}:{password}\n")


def hba_is_current(hba: Path) -> bool:
    try:
        return hba.read_text() == HBA
    except FileNotFoundError:
        return False
