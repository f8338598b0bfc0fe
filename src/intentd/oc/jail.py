"""Where and as whom the OpenCode daemon runs: an unprivileged account, a bubblewrap jail, an allowlisted
environment, and the hand-over of a workspace to that account before the daemon works in it.

The daemon executes what a model asks of it, on files an untrusted repository supplies, so it sees
only: the read-only system (/usr, /etc, …), its binary, its state directory (HOME, config copy,
database) and the workspaces root; never /root, the checkout, .tmp/pg, password files or the
worker's environment. The network namespace stays shared: it listens on 127.0.0.1 and calls the
model. Pure except `ensure_user`, `prepare_dirs` and `hand_over`, which change the file system.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from intentd.config import Settings
from intentd.hardening import private_dir
from intentd.sandbox._bwrap import read_only_system

_SETPRIV = "/usr/bin/setpriv"
PATH = "/usr/local/bin:/usr/bin:/bin"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Never passed to the daemon, even when an operator names them in INTENTD_OC_PASS_ENV.
_FORBIDDEN_PREFIXES = ("DATABASE_URL", "DBOS", "PG", "INTENTD_", "OC_", "OPENCODE_", "LD_", "PYTHON")


# Per-directory work intentd never uses (bench:live measures it; Settings.oc_lean turns it off):
# the workspace file watcher, LSP downloads, ~/.claude prompts and skills, external skills.
LEAN_ENV = {
    "OPENCODE_EXPERIMENTAL_DISABLE_FILEWATCHER": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
}


# An empty models.dev database (root's file in the daemon's home). OpenCode parses its bundled
# models.dev snapshot anew for every new directory, i.e. every run's first prompt; when every enabled
# provider is described in our config (npm package and models, like the fixture model), nothing
# needs that database. Interleaved A/B on the live lane: compile call 0.73 -> 0.29 s, build call
# 0.46 -> 0.27 s (p50, 6 fresh workspaces each).
EMPTY_MODELS_DB = "models.json"


def models_db_unused(config: Path) -> bool:
    """True when every provider `config` enables is fully described in it (no models.dev entry used)."""
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    enabled = data.get("enabled_providers") if isinstance(data, dict) else None
    providers = data.get("provider") if isinstance(data, dict) else None
    if not isinstance(enabled, list) or not enabled or not isinstance(providers, dict):
        return False
    return all(
        isinstance(providers.get(name), dict) and providers[name].get("npm") and providers[name].get("models")
        for name in enabled
    )


class JailError(RuntimeError):
    """The daemon's account or jail cannot be set up."""


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int


def account(settings: Settings) -> Account | None:
    """The daemon's account when we can switch to it (we are root), else None: run as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(settings.oc_user)
    except KeyError as exc:
        raise JailError(f"the daemon's account {settings.oc_user!r} does not exist: run `mise run setup`") from exc
    if entry.pw_uid == 0:
        raise JailError(f"the daemon's account {settings.oc_user!r} is root")
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def ensure_user(settings: Settings) -> None:
    """Create the daemon's system account when missing (idempotent; root only)."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(settings.oc_user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
             "--shell", "/usr/sbin/nologin", settings.oc_user],
            check=True,
        )  # fmt: skip


def prepare_dirs(settings: Settings, home: Path, config: Path) -> Path:
    """The daemon's state dir (HOME, its own, 0700), the workspaces root (root:its group, 0710), its
    config copied in.

    The copy (not a bind of the operator's file) lets a 0600 config elsewhere be read by the account.
    """
    who = account(settings)
    private_dir(home).chmod(0o700)
    root = private_dir(settings.workspaces_dir)
    if who is None:
        root.chmod(0o700)
    else:
        hand_over(home, who)  # state left by an older daemon that ran as root
        # The workspaces root stays the worker's; the daemon's group may only walk through it: it can
        # neither list nor rename the runs' workspaces (named by random run ids), only enter the one
        # it is handed (`hand_over_workspace`). Nobody else may even walk through.
        os.chown(root, 0, who.gid)
        root.chmod(0o710)
    # Where opencode looks for config besides OPENCODE_CONFIG ($XDG_CONFIG_HOME/opencode, ~/.opencode):
    # emptied at each start, so nothing the agent may have written there outlives a restart. (opencode
    # writes in the first at start-up, so it cannot be read-only.)
    for directory in (home / ".config", home / ".opencode"):
        shutil.rmtree(directory, ignore_errors=True)
    copied = home / "opencode.json"
    copied.unlink(missing_ok=True)  # a new file, root's (copying onto the old one would keep its owner)
    shutil.copyfile(config, copied)
    copied.chmod(0o644)  # root's, and read-only in the jail: the daemon reads it, cannot change it
    models = home / EMPTY_MODELS_DB
    models.unlink(missing_ok=True)
    models.write_text("{}\n")
    models.chmod(0o644)
    return copied


def daemon_env(settings: Settings, home: Path, config: Path, password: str) -> dict[str, str]:
    """Everything the daemon's environment holds: no DATABASE_URL, DBOS_*, PG*, nor the worker's."""
    extra = settings.oc_pass_env
    forbidden = sorted(n for n in extra if n.upper().startswith(_FORBIDDEN_PREFIXES))
    if forbidden:
        raise JailError(f"INTENTD_OC_PASS_ENV names variables the daemon must never see: {forbidden}")
    return {
        **extra,
        "PATH": PATH,
        "LANG": "C.UTF-8",
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "XDG_STATE_HOME": str(home / ".local" / "state"),
        "TMPDIR": "/tmp",
        "OPENCODE_CONFIG": str(config),
        # A repository's opencode.json / .opencode/ (agents, plugins, MCP servers, permissions) and
        # its AGENTS.md are never loaded: the only config is ours.
        "OPENCODE_DISABLE_PROJECT_CONFIG": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_SERVER_PASSWORD": password,
        "FIXTURE_MODEL_PORT": str(settings.fixture_model_port),
        **(LEAN_ENV if settings.oc_lean else {}),
        **(
            {"OPENCODE_MODELS_PATH": str(home / EMPTY_MODELS_DB)}
            if settings.oc_lean and models_db_unused(config)
            else {}
        ),
    }


def jail_argv(settings: Settings, home: Path, binary: Path, serve: list[str]) -> list[str]:
    """bubblewrap around `binary serve…`, as the daemon's account with umask 077.

    As root, bubblewrap mounts with its own privileges (so the sources need not be reachable by the
    account) and `setpriv` inside switches to the account, which clears every capability; as an
    ordinary user, an unprivileged user namespace maps that user onto itself.
    """
    binds = [
        "--ro-bind", str(binary), str(binary),
        "--bind", str(home), str(home),
        "--ro-bind", str(home / "opencode.json"), str(home / "opencode.json"),
        "--bind", str(settings.workspaces_dir), str(settings.workspaces_dir),
    ]  # fmt: skip
    return _bwrap(settings, (binary, home, settings.workspaces_dir), binds, [str(binary), *serve])


def model_argv(settings: Settings, state: Path, python: list[Path], argv: list[str]) -> list[str]:
    """The fixture model in the same kind of jail, as the same account: it sees the system, the
    Python it runs on (`python`: the interpreter's prefix, the venv, the source tree; read-only) and
    its own state dir (request log, the `/_log` token), nothing else (no checkout, no .tmp/pg)."""
    binds: list[str] = []
    for tree in python:
        binds += ["--ro-bind", str(tree), str(tree)]
    binds += ["--bind", str(state), str(state)]
    return _bwrap(settings, (*python, state), binds, argv)


def model_env(state: Path) -> dict[str, str]:
    """The fixture model's whole environment: it needs its port and log path (argv), nothing secret."""
    return {
        "PATH": PATH,
        "LANG": "C.UTF-8",
        "HOME": str(state),
        "TMPDIR": "/tmp",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # its code is mounted read-only
    }


def _bwrap(settings: Settings, mounted: tuple[Path, ...], binds: list[str], command: list[str]) -> list[str]:
    bwrap = shutil.which("bwrap", path=PATH)
    if bwrap is None:
        raise JailError("bubblewrap (bwrap) is not installed; run `mise run setup`")
    who = account(settings)
    # No --die-with-parent: it ties the jail to the process that ran bwrap, so the daemon died with
    # `mise run oc:daemon:up` (and the demo's stack) as soon as that command returned. Stopping a jail
    # whose bwrap is gone is process.Proc's job: it kills the whole session and the recorded pids.
    args = [bwrap, "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if who is None:
        args += ["--unshare-user", "--cap-drop", "ALL"]
    else:
        args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    args += read_only_system(_SYSTEM_DIRS)
    # The private /tmp first: mounted after the parents below, it would hide those under /tmp (a
    # checkout in /tmp/…) and bubblewrap would remake them with our umask, closed to the account.
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    # The binds' parents, made here 0755: left to bubblewrap they would follow our umask (077) and
    # the account could not walk down to its own directories.
    for parent in sorted({str(a) for p in mounted for a in p.parents} - {"/"}):
        if not parent.startswith(("/usr/", "/etc/")):
            args += ["--perms", "0755", "--dir", parent]
    args += [
        *binds,
        "--remount-ro", "/",
        "--chdir", "/",  # not HOME: bubblewrap has dropped the capability to enter another's 0700 dir
        "--",
    ]  # fmt: skip
    if who is not None:
        args += [
            _SETPRIV,
            f"--reuid={who.uid}",
            f"--regid={who.gid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--no-new-privs",
            "--",
        ]
    return [*args, "/bin/sh", "-c", 'umask 077 && cd "$HOME" && exec "$@"', "jailed", *command]


def hand_over(directory: Path, who: Account) -> None:
    """Make `directory`'s tree the daemon's (so its build agent can edit what the worker created).

    Walks by file descriptor and never follows a symlink, so a link planted in the tree cannot turn
    the walk onto a file outside it. A top-level `.git` stays the worker's: host git's own data.
    """
    os.chown(directory, who.uid, who.gid, follow_symlinks=False)
    for top, dirs, files, fd in os.fwalk(directory, follow_symlinks=False):
        if top == str(directory):
            dirs[:] = [d for d in dirs if d != ".git"]  # in place: fwalk does not descend into it
            files = [f for f in files if f != ".git"]
        for name in (*dirs, *files):
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            # A second hard link may name a file outside the tree: leave it as it is.
            if st.st_uid == who.uid or (st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode)):
                continue
            os.chown(name, who.uid, who.gid, dir_fd=fd, follow_symlinks=False)


def hand_over_workspace(settings: Settings, directory: Path) -> None:
    """The wrapper's hook before the daemon works in `directory`: a no-op unless we are root, and only
    inside the workspaces root (a directory elsewhere is not the daemon's to have)."""
    who = account(settings)
    if who is None or not directory.is_dir():
        return
    root = settings.workspaces_dir.resolve()
    target = directory.resolve()
    if target == root or root not in target.parents:
        return
    hand_over(target, who)
