"""A real etcd (Debian's etcd-server) on 127.0.0.1 for tests and benchmarks: random
ports, a temporary data dir, killed and removed whatever happens."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Etcd:
    endpoint: str  # host:port of the client URL
    data_dir: Path


@contextlib.contextmanager
def running_etcd(timeout: float = 60.0) -> Iterator[Etcd]:
    """Start etcd, wait until it answers /health, yield it; kill it on the way out."""
    etcd = shutil.which("etcd") or "/usr/bin/etcd"
    data = Path(tempfile.mkdtemp(prefix="dynod-etcd-"))
    client, peer = _free_port(), _free_port()
    log = (data.parent / f"{data.name}.log").open("wb")
    proc = subprocess.Popen(
        [etcd, "--name", "test", "--data-dir", str(data / "member"),
         "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"test=http://127.0.0.1:{peer}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{client}/health",
                                            timeout=2) as r:
                    if b'"true"' in r.read():
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd did not answer within {timeout:.0f}s; see {log.name}")
            time.sleep(0.1)
        yield Etcd(f"127.0.0.1:{client}", data)
    finally:
        proc.kill()
        proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)
        Path(log.name).unlink(missing_ok=True)
