"""How every host-side git of ours runs: no configuration but the repository's own, and nothing run.

The workspace's private git dir (workflow/workspace.py) and delivery into an operator's repository
(delivery.py) both run git on content they do not trust. The environment keeps system and global
configuration out; the command-line settings outrank any repository configuration, so no hook,
fsmonitor, attributes file or non-file transport runs whatever a config file says. It runs no git
itself: importable by the shim and the worker alike.
"""

from __future__ import annotations

GIT_ENV = {
    "GIT_AUTHOR_NAME": "intentd",
    "GIT_AUTHOR_EMAIL": "intentd@localhost",
    "GIT_COMMITTER_NAME": "intentd",
    "GIT_COMMITTER_EMAIL": "intentd@localhost",
    # Only the repository's own config (in the private git dir) is read: never /etc/gitconfig,
    # ~/.gitconfig or $XDG_CONFIG_HOME/git/*.
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_ATTR_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_OPTIONAL_LOCKS": "0",
    "HOME": "/nonexistent",
    "XDG_CONFIG_HOME": "/nonexistent",
    "PATH": "/usr/bin:/bin",
    "LC_ALL": "C",
}
# Command-line config outranks the repository's: whatever a config file says, none of these runs.
HARDENING = (
    "core.fsmonitor=false",
    "core.hooksPath=/dev/null",
    "core.attributesFile=/dev/null",
    "core.untrackedCache=false",
    "core.bare=false",
    "submodule.recurse=false",
    "protocol.allow=never",
    "protocol.file.allow=always",
)


def config_args(*extra: str) -> list[str]:
    """`-c key=value` for every hardening setting, then `extra`."""
    return [arg for item in (*HARDENING, *extra) for arg in ("-c", item)]
