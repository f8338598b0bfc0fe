"""Lifecycle of the real OpenCode daemon (the pinned npm package) and of the fixture model it talks to.

`python -m intentd.oc.daemon up|health|down|user` (the `oc:daemon:*` tasks; the contract tasks are
`python -m intentd.oc.contract`). `up` is idempotent: the fixture model on FIXTURE_MODEL_PORT, then
`opencode serve --hostname 127.0.0.1 --port OC_SERVER_PORT` locked down (see `jail`): a fresh random
password (basic auth, `auth`), no project config, an allowlisted environment, the unprivileged
account `intentd-oc` in a bubblewrap jail, a private HOME `.tmp/oc-home-<port>/` holding a copy of
the config (OPENCODE_CONFIG). Pidfiles under .tmp/run/, logs `.tmp/oc-daemon-<port>.log` and
`.tmp/fixture-model-<port>.log`. The fixture model is jailed too, as the same account with its own
environment: its state dir `.tmp/fixture-model-<port>/` holds the request log (`requests.jsonl`) and
the token `GET /_log` wants (`model_log_headers`). `down` stops what `up` started: every process of
its session and the jail's recorded pids (a launcher may be gone while the jail lives on), then checks
that the ports are free. Never kills anything it did not start.
"""

from __future__ import annotations

import json
import platform
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from intentd.config import REPO_ROOT, Settings, get_settings
from intentd.hardening import private_dir, restrict_umask, write_private
from intentd.oc import auth, jail
from intentd.process import Proc, port_bound, port_listeners

CONFIG_PATH = REPO_ROOT / "config" / "opencode" / "opencode.json"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
# Processes this Python process started, by pidfile: stopping them through their Popen reaps them
# (a pid-only handle would wait on a zombie).
_started: dict[Path, Proc] = {}


class DaemonError(RuntimeError):
    """The daemon is missing, did not start, is not the pinned version, or refuses our password."""


def pinned_version() -> str:
    """The exact `opencode-ai` version package.json pins."""
    manifest = json.loads((REPO_ROOT / "package.json").read_text())
    return str(manifest["dependencies"]["opencode-ai"])


def binary() -> Path:
    """The platform binary the optional dependency installed (scripts ignored, so not the npm shim)."""
    machine = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    system = {"linux": "linux", "darwin": "darwin"}.get(sys.platform, sys.platform)
    for suffix in ("", "-baseline"):
        candidate = REPO_ROOT / "node_modules" / f"opencode-{system}-{machine}{suffix}" / "bin" / "opencode"
        if candidate.exists():
            return candidate
    raise DaemonError("opencode is not installed: run `mise run oc:setup` (npm ci of the pinned opencode-ai)")


def installed() -> bool:
    try:
        binary()
    except DaemonError:
        return False
    return True


def config_path(settings: Settings) -> Path:
    # A real provider: point OPENCODE_CONFIG (Settings.oc_config_path) at your own config file.
    return settings.oc_config_path


@dataclass(frozen=True)
class Paths:
    home: Path
    daemon_log: Path
    daemon_pid: Path
    model_log: Path
    model_dir: Path
    model_requests: Path
    model_token: Path
    model_pid: Path


def paths(settings: Settings) -> Paths:
    tmp, port, fport = settings.tmp_dir, settings.oc_server_port, settings.fixture_model_port
    run = private_dir(tmp / "run")  # pidfiles and the daemon's password file
    return Paths(
        home=tmp / f"oc-home-{port}",
        daemon_log=tmp / f"oc-daemon-{port}.log",
        daemon_pid=run / f"oc-daemon-{port}.pid",
        model_log=tmp / f"fixture-model-{fport}.log",
        model_dir=tmp / f"fixture-model-{fport}",
        model_requests=tmp / f"fixture-model-{fport}" / "requests.jsonl",
        model_token=tmp / f"fixture-model-{fport}" / "token",
        model_pid=run / f"fixture-model-{fport}.pid",
    )


def model_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.fixture_model_port}"


def _python_trees() -> list[Path]:
    """What running `python -m intentd.fixture_model` reads: the interpreter, the venv, our source."""
    import intentd

    trees = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve()}
    trees.add(Path(intentd.__file__).resolve().parents[1])
    # A tree inside another is mounted with it.
    return sorted(t for t in trees if not any(o != t and o in t.parents for o in trees))


def fixture_model_proc(settings: Settings) -> Proc:
    p = paths(settings)
    argv = [sys.executable, "-m", "intentd.fixture_model", "--port", str(settings.fixture_model_port)]
    argv += ["--log", str(p.model_requests), "--token-file", str(p.model_token)]
    jailed = jail.model_argv(settings, p.model_dir, _python_trees(), argv)
    return Proc("fixture-model", jailed, jail.model_env(p.model_dir), p.model_log, p.model_pid)


def model_log_headers(settings: Settings) -> dict[str, str]:
    """The header `GET /_log` wants: the token `up` wrote (0600, for root and the model's account)."""
    token = auth.read_password(paths(settings).model_token)
    return {"Authorization": f"Bearer {token}"} if token else {}


def serve_argv(settings: Settings) -> list[str]:
    return [str(binary()), "serve", "--hostname", "127.0.0.1", "--port", str(settings.oc_server_port)]


def daemon_proc(settings: Settings, password: str = "") -> Proc:
    """The jailed daemon (`password`: the one `up` just made; only `up` starts it)."""
    p = paths(settings)
    config = p.home / "opencode.json"  # the copy `jail.prepare_dirs` makes
    argv = jail.jail_argv(settings, p.home, binary(), serve_argv(settings)[1:])
    return Proc("opencode", argv, jail.daemon_env(settings, p.home, config, password), p.daemon_log, p.daemon_pid)


def daemon_pid(settings: Settings) -> int | None:
    """The host pid of the `opencode serve` process itself (inside the jail, below bwrap and setpriv)."""
    wanted = serve_argv(settings)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if [a.decode(errors="replace") for a in argv] == wanted:
            return int(entry.name)
    return None


def probe(settings: Settings, timeout: float = 2.0) -> dict[str, Any] | None:
    """GET /global/health once, with our password: the answer, or None when nothing healthy answers.

    A daemon that answers 401 to our password is not ours (or lost its password file): DaemonError.
    """
    try:
        response = httpx.get(f"{settings.oc_base_url}/global/health", timeout=timeout, auth=auth.daemon_auth(settings))
        if response.status_code == 401:
            raise DaemonError(
                f"a daemon on {settings.oc_base_url} refuses the password in {settings.oc_password_file}; "
                "stop it (`mise run oc:daemon:down`, or by its pid) and start it again"
            )
        body = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if response.status_code == 200 and isinstance(body, dict) and body.get("healthy") else None


def wait_healthy(settings: Settings, timeout: float = START_TIMEOUT, proc: Proc | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise DaemonError(f"opencode exited during start; see {proc.log}")
        found = probe(settings)
        if found is not None:
            return found
        time.sleep(0.1)
    raise DaemonError(f"{settings.oc_base_url}/global/health did not answer within {timeout}s")


def _model_healthy(settings: Settings) -> bool:
    try:
        return httpx.get(f"{model_url(settings)}/_health", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _prepare_model_dir(settings: Settings) -> None:
    """The model's state dir (its account's, 0700) with a fresh `/_log` token (0600) in it."""
    p = paths(settings)
    private_dir(p.model_dir).chmod(0o700)
    p.model_token.unlink(missing_ok=True)
    write_private(p.model_token, secrets.token_urlsafe(32))
    who = jail.account(settings)
    if who is not None:
        jail.hand_over(p.model_dir, who)


def up_fixture_model(settings: Settings) -> str:
    if _model_healthy(settings):
        try:
            open_log = httpx.get(f"{model_url(settings)}/_log", params={"since": 10**9}, timeout=5).status_code
        except httpx.HTTPError:
            open_log = 0
        if open_log == 200:
            # Started by older code (or by hand): root, the worker's environment, every prompt open.
            raise DaemonError(
                f"the fixture model on {model_url(settings)} serves its request log to anyone: stop it "
                "(`mise run oc:daemon:down`, or by its pid) and run `mise run oc:daemon:up` again"
            )
        return f"fixture model already answers on {model_url(settings)}"
    try:
        jail.ensure_user(settings)
        _prepare_model_dir(settings)
        proc = fixture_model_proc(settings)
    except (jail.JailError, OSError, subprocess.CalledProcessError) as exc:
        raise DaemonError(f"cannot lock the fixture model down: {exc}") from exc
    pid = proc.start()
    _started[proc.pidfile] = proc
    deadline = time.monotonic() + 20
    while not _model_healthy(settings):
        if not proc.alive() or time.monotonic() > deadline:
            raise DaemonError(f"the fixture model did not start; see {proc.log}")
        time.sleep(0.05)
    proc.remember_tree()
    return f"fixture model pid {pid} on {model_url(settings)}, requests in {paths(settings).model_requests}"


def client_env(settings: Settings) -> dict[str, str]:
    """What a worker process needs in its environment to reach this daemon."""
    return {
        "OC_BASE_URL": settings.oc_base_url,
        "OC_SERVER_PORT": str(settings.oc_server_port),
        "FIXTURE_MODEL_PORT": str(settings.fixture_model_port),
        "INTENTD_OC_PASSWORD_FILE": str(settings.oc_password_file),
        # The daemon can reach only this root: the worker must make its workspaces there.
        "INTENTD_WORKSPACES": str(settings.workspaces_dir),
    }


def up(settings: Settings) -> str:
    """Start the fixture model and the daemon unless they already answer (idempotent)."""
    model = up_fixture_model(settings)
    found = probe(settings)
    if found is not None:
        if httpx.get(f"{settings.oc_base_url}/global/health", timeout=5).status_code != 401:
            # Started by older code (or by hand): no password, the worker's environment, maybe root.
            raise DaemonError(
                f"the daemon on {settings.oc_base_url} answers without a password: stop it "
                "(`mise run oc:daemon:down`, or by its pid) and run `mise run oc:daemon:up` again"
            )
        return f"{model}; opencode {found.get('version')} already answers on {settings.oc_base_url}"
    t0 = time.monotonic()
    try:
        jail.ensure_user(settings)
        jail.prepare_dirs(settings, paths(settings).home, config_path(settings))
        proc = daemon_proc(settings, auth.new_password(settings))
    except (jail.JailError, OSError, subprocess.CalledProcessError) as exc:
        raise DaemonError(f"cannot lock the daemon down: {exc}") from exc
    pid = proc.start()
    _started[proc.pidfile] = proc
    health = wait_healthy(settings, proc=proc)
    # The jail's pid 1 and `opencode serve` by pid and start time: `down` reaches them even when the
    # bwrap we started is gone (killed, or exited) and they were re-parented.
    proc.remember_tree()
    elapsed = time.monotonic() - t0
    return (
        f"{model}; opencode {health.get('version')} pid {pid} on {settings.oc_base_url}, "
        f"healthy after {elapsed:.2f}s, log {proc.log}"
    )


def health(settings: Settings, timeout: float = 30.0) -> dict[str, Any]:
    """Wait for /global/health and check the version is the pinned one."""
    found = wait_healthy(settings, timeout=timeout)
    if found.get("version") != pinned_version():
        raise DaemonError(f"opencode answers version {found.get('version')}, the pin is {pinned_version()}")
    return found


def down(settings: Settings) -> str:
    """Stop the daemon and the fixture model that `up` started (by PID; nothing else), and check
    their ports are free: DaemonError when something still listens after ours were stopped."""
    out = []
    stopped = (
        (daemon_proc_for_stop(settings), settings.oc_server_port),
        (model_proc_for_stop(settings), settings.fixture_model_port),
    )
    for proc, port in stopped:
        ours = proc.pid is not None
        was = proc.alive()
        proc.kill(wait=STOP_TIMEOUT)
        deadline = time.monotonic() + 5  # the kernel closes a dead listener's socket a moment later
        while ours and port_bound(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        if port_bound(port):
            holders = port_listeners(port)
            if ours:
                raise DaemonError(
                    f"{proc.name}: every process we started is gone, yet port {port} is still bound "
                    f"(pids {holders}); not ours to kill: stop it by hand"
                )
            out.append(f"{proc.name}: not ours, yet port {port} is bound (pids {holders})")
            continue
        out.append(f"{proc.name}: {'stopped' if was else 'not running'}")
    return ", ".join(out)


def daemon_proc_for_stop(settings: Settings) -> Proc:
    # Stopping must work even when the npm package has been removed since `up`.
    p = paths(settings)
    return _started.pop(p.daemon_pid, None) or Proc("opencode", [], {}, p.daemon_log, p.daemon_pid)


def model_proc_for_stop(settings: Settings) -> Proc:
    p = paths(settings)
    return _started.pop(p.model_pid, None) or fixture_model_proc(settings)


def main(argv: list[str]) -> int:
    restrict_umask()
    settings = get_settings()
    action = argv[0] if argv else "health"
    try:
        if action == "up":
            print(up(settings))
        elif action == "down":
            print(down(settings))
        elif action == "health":
            print(json.dumps(health(settings)))
        elif action == "user":
            jail.ensure_user(settings)
            print(f"oc daemon: account {settings.oc_user!r} ready")
        else:
            print(f"unknown action {action!r} (up, down, health, user)", file=sys.stderr)
            return 2
    except (DaemonError, jail.JailError) as exc:
        print(f"oc daemon: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    # Run the imported module's main, so `_started` is the one other modules see too.
    from intentd.oc import daemon as _module

    raise SystemExit(_module.main(sys.argv[1:]))
