"""The only place dynod starts subprocesses: argv lists, never a shell."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence


class CommandFailed(Exception):
    """A command could not be started or exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        what = f"exit status {returncode}" if returncode is not None else "could not start"
        super().__init__(f"{argv[0]}: {what}: {stderr.strip()}")
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


def output(
    argv: Sequence[str],
    *,
    input: str | None = None,  # noqa: A002 - mirrors subprocess
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> str:
    """Run argv, return its stdout. Raises CommandFailed on a non-zero exit."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            env=None if env is None else dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandFailed(argv, None, str(exc)) from exc
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, proc.stderr)
    return proc.stdout
