"""The schemathesis CLI, as an outside reviewer runs it: every check, every phase (examples, coverage,
fuzzing, stateful over the document's links), against a shim and a live worker on a fresh database.
Zero failures is the bar; a failure is fixed in the server or in the document, never by dropping a
check.

It runs twice: with INTENTD_AUTH=tokens, the fuzzer sending an admin-equivalent token (every role) as
`Authorization: Bearer`, so every route is reached past the auth layer and `ignored_auth` checks that
a request without it is refused; and with auth off (the course's loopback mode). Event streams end
after INTENTD_STREAM_MAX_SECONDS (1 s here) so a stream of a waiting run does not hold a case open.

Its budget is `--max-examples` per operation and phase: INTENTD_FUZZ_EXAMPLES / 7 (at least 20);
INTENTD_FUZZ_SEED makes a run reproducible.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from intentd import stack
from intentd.config import Settings
from intentd.db import tokens
from intentd.db.connection import create_engine
from intentd.identity import Role
from tests.conftest import make_database

FUZZ_EXAMPLES = int(os.environ.get("INTENTD_FUZZ_EXAMPLES", "150"))
FUZZ_SEED = os.environ.get("INTENTD_FUZZ_SEED")
MAX_EXAMPLES = max(20, FUZZ_EXAMPLES // 7)

pytestmark = pytest.mark.timeout(1800)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module", params=["tokens", "off"])
def fresh_stack(request: pytest.FixtureRequest, pg_server: Settings) -> Iterator[tuple[Settings, list[str]]]:
    """Shim and worker as processes (OC_MODE=mock) on a database of their own, in one auth mode; with
    the schemathesis arguments that mode needs (the token's header)."""
    mode = request.param
    name = f"fuzzcli_{uuid.uuid4().hex[:8]}"
    settings = make_database(pg_server, name).model_copy(update={"port": _free_port(), "admin_port": _free_port()})
    extra = {
        "DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"fuzz-{name}",
        "OC_MODE": "mock",
        "DBOS__APPVERSION": "fuzz",
        "INTENTD_AUTH": mode,
        "INTENTD_WRITE_RATE": "1000000",  # the fuzzer's writes are not throttled (429 is tested elsewhere)
        "INTENTD_STREAM_MAX_SECONDS": "1",
    }
    args: list[str] = []
    if mode == "tokens":
        engine = create_engine(settings, pool_size=1)
        token = tokens.create(engine, "fuzz", [r.value for r in Role], actor=tokens.cli_principal())
        engine.dispose()
        args = ["--header", f"Authorization: Bearer {token}"]
    worker, shim = stack.worker(settings, **extra), stack.shim(settings, **extra)
    worker.start()
    shim.start()
    try:
        stack.wait_http(f"http://127.0.0.1:{settings.admin_port}/healthz", timeout=60, proc=worker)
        stack.wait_http(f"http://127.0.0.1:{settings.port}/healthz", timeout=60, proc=shim)
        yield settings, args
    finally:
        shim.kill()
        worker.kill()


def test_schemathesis_with_every_check_and_phase_finds_nothing(
    fresh_stack: tuple[Settings, list[str]], tmp_path: Path
) -> None:
    settings, auth_args = fresh_stack
    cli = Path(sys.executable).with_name("schemathesis")
    argv = [
        str(cli),
        "run",
        f"http://127.0.0.1:{settings.port}/openapi.json",
        *auth_args,
        "--checks",
        "all",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-database",
        "none",
        "--no-color",
        *(["--seed", FUZZ_SEED] if FUZZ_SEED else []),
    ]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=1700)
    out = done.stdout + done.stderr
    summary = out[out.rfind("SUMMARY") :] if "SUMMARY" in out else out[-4000:]
    shown = [a if not a.startswith("Authorization:") else "Authorization: Bearer itd_…" for a in argv[1:]]
    print(f"\n$ {' '.join(shown)}\n{summary}")
    cases = re.search(r"(\d+) generated", out)
    assert done.returncode == 0, f"schemathesis found failures:\n{out[-12000:]}"
    assert cases is not None and int(cases.group(1)) >= FUZZ_EXAMPLES, summary
    # The stateful phase must get past creation: the links reach the run's calls, retry included.
    assert "Stateful" in out and "API Links" in out, summary
