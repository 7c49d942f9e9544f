"""A DNS server that loses queries the way a rate-limited upstream does: every query
(by id, name and type) is dropped the first DROP times it arrives and answered after
that: A queries with ANSWER, anything else with no records. UDP only, for tests.

    python3 lossy_dns.py ADDRESS [DROP]
"""

from __future__ import annotations

import socket
import sys
from collections import Counter

ANSWER = bytes([192, 0, 2, 10])


def question_end(packet: bytes) -> int:
    """The offset just past the first question (name, type, class)."""
    i = 12
    while packet[i]:
        i += 1 + packet[i]
    return i + 5


def answer(query: bytes) -> bytes:
    end = question_end(query)
    qtype = int.from_bytes(query[end - 4:end - 2], "big")
    flags = b"\x81\x80"  # a response, recursion desired and available, no error
    records = b""
    if qtype == 1:
        records = (b"\xc0\x0c" + b"\x00\x01\x00\x01" + (60).to_bytes(4, "big") +
                   len(ANSWER).to_bytes(2, "big") + ANSWER)
    counts = b"\x00\x01" + (b"\x00\x01" if records else b"\x00\x00") + b"\x00\x00\x00\x00"
    return query[:2] + flags + counts + query[12:end] + records


def main() -> None:
    drop = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((sys.argv[1], 53))
    seen: Counter[bytes] = Counter()
    while True:
        query, peer = sock.recvfrom(4096)
        try:
            key = query[:2] + query[12:question_end(query)]
        except IndexError:
            continue
        seen[key] += 1
        if seen[key] > drop:
            sock.sendto(answer(query), peer)


if __name__ == "__main__":
    main()
