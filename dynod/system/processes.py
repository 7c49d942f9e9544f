"""The only place dynod starts subprocesses: argv lists, never a shell."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path


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
    input: str | None = None,
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


def stream(
    argv: Sequence[str],
    on_line: Callable[[str], None],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> int:
    """Run argv with stdin closed, stdout and stderr merged and passed line by line
    (without the newline) to ``on_line`` as they come; return the exit status.

    Raises CommandFailed if argv cannot be started or runs past ``timeout`` seconds (then
    it is killed). A non-zero exit is returned, not raised: callers such as buildpack
    detection treat it as an answer.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        raise CommandFailed(argv, None, str(exc)) from exc
    timer = None
    if deadline is not None:
        timer = threading.Timer(max(0.0, deadline - time.monotonic()), proc.kill)
        timer.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            on_line(raw.decode("utf-8", "replace").rstrip("\n"))
        status = proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if deadline is not None and time.monotonic() >= deadline and status < 0:
        raise CommandFailed(argv, None, f"killed after {timeout:.0f} s")
    return status


class Lines:
    """The stdout of a long-running argv, line by line, until :meth:`close` (which may be
    called from another thread, e.g. when a gRPC stream is cancelled) or its exit."""

    def __init__(self, argv: Sequence[str]) -> None:
        try:
            self._proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise CommandFailed(argv, None, str(exc)) from exc
        self.argv = list(argv)

    def __iter__(self) -> Iterator[str]:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            yield raw.decode("utf-8", "replace").rstrip("\n")

    def close(self) -> int | None:
        """Kill it if still running; its exit status (None if it was killed)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
            return None
        return self._proc.returncode

    def stderr(self) -> str:
        assert self._proc.stderr is not None
        return self._proc.stderr.read().decode("utf-8", "replace")


def replace_process(argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
    """Replace this process with argv (execvp): for the git user's forced command, which
    hands its ssh channel to git-receive-pack. Returns only by raising CommandFailed."""
    try:
        if env is None:
            os.execvp(argv[0], list(argv))  # noqa: S606 - argv, never a shell
        else:
            os.execvpe(argv[0], list(argv), dict(env))  # noqa: S606
    except OSError as exc:
        raise CommandFailed(argv, None, str(exc)) from exc


def run_files(
    argv: Sequence[str],
    *,
    stdin_path: str | None = None,
    stdout_path: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """Run argv with stdin read from ``stdin_path`` and stdout written to ``stdout_path``
    (each a regular file, so a tool that seeks, such as ``pg_dump -Fc`` writing its table
    of contents, can; the caller opens them, so the tool needs no access of its own).
    Returns stderr. Raises CommandFailed on a non-zero exit or after ``timeout``."""
    with contextlib.ExitStack() as files:
        stdin = (files.enter_context(Path(stdin_path).open("rb")) if stdin_path is not None
                 else subprocess.DEVNULL)
        stdout = (files.enter_context(Path(stdout_path).open("wb")) if stdout_path is not None
                  else subprocess.DEVNULL)
        try:
            proc = subprocess.run(list(argv), stdin=stdin, stdout=stdout,
                                  stderr=subprocess.PIPE, env=None if env is None else dict(env),
                                  timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CommandFailed(argv, None, str(exc)) from exc
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise CommandFailed(argv, proc.returncode, stderr)
    return stderr


class Session:
    """A line-oriented conversation with a long-running argv (``psql`` holding a
    transaction open while another tool uses its snapshot): :meth:`send` text, read the
    answer with :meth:`read_until`. Close it (or use ``with``) to end the process."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        try:
            self._proc = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, env=None if env is None else dict(env), text=True)
        except OSError as exc:
            raise CommandFailed(argv, None, str(exc)) from exc
        self.argv = list(argv)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def send(self, text: str) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(text)
            self._proc.stdin.flush()
        except OSError as exc:
            raise self._failed(str(exc)) from exc

    def read_until(self, marker: str) -> list[str]:
        """The lines before the line ``marker``. Raises CommandFailed (with stderr) if
        the process ends first."""
        assert self._proc.stdout is not None
        lines: list[str] = []
        for raw in self._proc.stdout:
            line = raw.rstrip("\n")
            if line == marker:
                return lines
            lines.append(line)
        raise self._failed("")

    def _failed(self, why: str) -> CommandFailed:
        self.close()
        assert self._proc.stderr is not None
        return CommandFailed(self.argv, self._proc.returncode, self._proc.stderr.read() or why)

    def close(self) -> int | None:
        """Close its stdin and wait (kill it after 10 s); its exit status."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            return self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.wait()
