"""Where pushed code arrives: the git user, its repositories and the commands sshd and
git run for it (the forced command and the pre-receive hook, both dynod.cli.gitpush).

The daemon keeps these in step with its state at start; the CLI side runs them."""

from __future__ import annotations

import os
import pwd
import shlex
import sys
from pathlib import Path

GIT_USER = "dynod"


def shell_command() -> list[str]:
    """The forced command (without the key id), this interpreter running this module."""
    return [sys.executable, "-m", "dynod.cli.gitpush", "shell"]


def hook_script() -> str:
    return ("#!/bin/sh\n# Written by dynod: builds pushes to main or master.\n"
            f"exec {shlex.quote(sys.executable)} -m dynod.cli.gitpush pre-receive\n")


def repos_dir(state_dir: Path) -> Path:
    return state_dir / "repos"


def git_user_home(default: Path) -> Path:
    try:
        return Path(pwd.getpwnam(GIT_USER).pw_dir)
    except KeyError:
        return default


def ensure_layout(state_dir: Path) -> None:
    """The repositories' directory, owned by the git user (the daemon runs as root)."""
    repos = repos_dir(state_dir)
    repos.mkdir(mode=0o750, parents=True, exist_ok=True)
    try:
        user = pwd.getpwnam(GIT_USER)
    except KeyError:
        return
    os.chown(repos, user.pw_uid, user.pw_gid)


