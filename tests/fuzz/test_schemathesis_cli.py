"""The schemathesis CLI, as an outside reviewer runs it: every check, every phase (examples, coverage,
fuzzing, stateful over the document's links), against a shim and a live worker on a fresh database.
Zero failures is the bar; a failure is fixed in the server or in the document, never by dropping a
check.

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
from tests.conftest import make_database

FUZZ_EXAMPLES = int(os.environ.get("INTENTD_FUZZ_EXAMPLES", "150"))
FUZZ_SEED = os.environ.get("INTENTD_FUZZ_SEED")
MAX_EXAMPLES = max(20, FUZZ_EXAMPLES // 7)

pytestmark = pytest.mark.timeout(1800)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def fresh_stack(pg_server: Settings) -> Iterator[Settings]:
    """Shim and worker as processes (OC_MODE=mock) on a database of their own."""
    name = f"fuzzcli_{uuid.uuid4().hex[:8]}"
    settings = make_database(pg_server, name).model_copy(update={"port": _free_port(), "admin_port": _free_port()})
    extra = {
        "DATABASE_URL": settings.database_url,
        "INTENTD_TMP": str(settings.tmp_dir),
        "INTENTD_EXECUTOR_ID": f"fuzz-{name}",
        "OC_MODE": "mock",
        "DBOS__APPVERSION": "fuzz",
    }
    worker, shim = stack.worker(settings, **extra), stack.shim(settings, **extra)
    worker.start()
    shim.start()
    try:
        stack.wait_http(f"http://127.0.0.1:{settings.admin_port}/healthz", timeout=60, proc=worker)
        stack.wait_http(f"http://127.0.0.1:{settings.port}/healthz", timeout=60, proc=shim)
        yield settings
    finally:
        shim.kill()
        worker.kill()


def test_schemathesis_with_every_check_and_phase_finds_nothing(fresh_stack: Settings, tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    argv = [
        str(cli),
        "run",
        f"http://127.0.0.1:{fresh_stack.port}/openapi.json",
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
    print(f"\n$ {' '.join(argv[1:])}\n{summary}")
    cases = re.search(r"(\d+) generated", out)
    assert done.returncode == 0, f"schemathesis found failures:\n{out[-12000:]}"
    assert cases is not None and int(cases.group(1)) >= FUZZ_EXAMPLES, summary
    # The stateful phase must get past creation: the links reach the run's calls, retry included.
    assert "Stateful" in out and "API Links" in out, summary
