"""Drive ``dynoctl run -a APP bash`` through a real pseudo-terminal, inside a sandbox
machine, the way a person at a terminal would (run as a script; prints JSON).

    python3 pty_driver.py APP

Steps: the prompt appears; ``$DYNO``, ``pwd``, ``stty size`` before and after a
resize of the local terminal; Ctrl-C interrupts a foreground sleep; ``exit 3``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import struct
import sys
import termios
import time


class Session:
    def __init__(self, argv: list[str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:
            os.environ["TERM"] = "xterm"
            os.execvp(argv[0], argv)  # noqa: S606 - argv, no shell: dynoctl itself
        self.pid, self.fd = pid, fd
        self.transcript = b""
        self.seen = 0

    def resize(self, rows: int, cols: int) -> None:
        # The kernel sends SIGWINCH to dynoctl, the foreground of this terminal.
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match[bytes]:
        regex = re.compile(pattern.encode())
        deadline = time.monotonic() + timeout
        while True:
            m = regex.search(self.transcript, self.seen)
            if m:
                self.seen = m.end()
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{pattern!r} not seen")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    raise EOFError(f"{pattern!r} not seen before the end")
                self.transcript += data

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with_ready, _, _ = select.select([self.fd], [], [], 0.1)
            if with_ready:
                with contextlib.suppress(OSError):
                    self.transcript += os.read(self.fd, 4096)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        raise TimeoutError("dynoctl did not exit")


def main() -> int:
    app = sys.argv[1]
    out: dict[str, object] = {}
    s = Session(["dynoctl", "run", "-a", app, "bash"])
    s.resize(24, 80)
    try:
        out["banner"] = s.expect(r"Running bash on \S+ \S+\.\.\. up, run\.\d+ \([^)]+\)"
                                 ).group(0).decode()
        s.expect(r"\$ $|\$ ", timeout=30)
        out["prompt"] = True
        s.send("echo DYNO=$DYNO\r")
        out["dyno"] = s.expect(r"DYNO=(run\.\d+)").group(1).decode()
        s.send("echo P=$(pwd)\r")
        out["cwd"] = s.expect(r"P=(/\S*)").group(1).decode()
        s.send("echo S=$(stty size)\r")
        out["size"] = s.expect(r"S=(\d+ \d+)").group(1).decode()
        s.resize(40, 100)
        time.sleep(0.5)
        s.send("echo R=$(stty size)\r")
        out["resized"] = s.expect(r"R=(\d+ \d+)").group(1).decode()
        s.send("sleep 100\r")
        time.sleep(0.5)
        s.send("\x03")
        s.send("echo C=$?\r")
        out["ctrl_c"] = s.expect(r"C=(\d+)", timeout=10).group(1).decode()
        s.send("exit 3\r")
        out["exit"] = s.wait()
    except (TimeoutError, EOFError) as exc:
        out["error"] = str(exc)
    out["transcript"] = s.transcript.decode(errors="replace")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
