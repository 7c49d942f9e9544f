"""Slugs fetched on demand: a machine of a cluster about to start a dyno of a slug it
does not store asks the other machines for it, by checksum, and keeps the first copy
whose size and checksum are right (:func:`dynod.slug.blobs.write_blob` checks both
before anything is kept). A peer is trusted to answer, never to be right: a copy that
is cut short or altered is refused and the next machine is asked.

The transport is injected (:class:`SlugPeers`, the peer API's client in ``api/``): the
runtime, which starts the dynos, knows nothing of gRPC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from dynod.errors import InvalidArgument, NotFound, Unavailable
from dynod.slug.blobs import write_blob


class SlugPeers(Protocol):
    """The other machines that may store a slug, and a download from one of them."""

    def peers(self) -> list[str]:
        """The other machines' names, in the order to ask them."""
        ...

    def download(self, peer: str, checksum: str) -> tuple[int, Iterator[bytes]]:
        """The tarball's size as ``peer`` stores it and its bytes. Raises NotFound (it
        does not store it), Unavailable (unreachable, or the transfer broke; raised
        by the iterator too)."""
        ...


def fetch_slug(slugs_dir: Path, checksum: str, source: SlugPeers,
               on_message: Callable[[str], None] | None = None) -> Path:
    """Store slug ``checksum`` from the first peer that has a good copy; return its
    path. ``on_message`` hears each copy refused and the one kept.

    Raises NotFound, naming the slug, each machine asked and what it answered, when
    no peer gives a good copy."""
    def say(message: str) -> None:
        if on_message is not None:
            on_message(message)

    answers: list[str] = []
    for peer in source.peers():
        try:
            size, chunks = source.download(peer, checksum)
            path = write_blob(slugs_dir, chunks, checksum, size)
        except InvalidArgument as exc:
            # Cut short, or not the bytes the checksum names: never kept.
            say(f"Slug {checksum} from {peer} refused: {exc.message}")
            answers.append(f"{peer}: a bad copy")
            continue
        except (NotFound, Unavailable) as exc:
            answers.append(f"{peer}: {exc.message}")
            continue
        say(f"Slug {checksum} fetched from {peer} ({size} bytes, checksum verified)")
        return path
    asked = "; ".join(answers) if answers else "no other machine is in the cluster"
    raise NotFound(f"slug {checksum} is stored on no machine of the cluster that answered "
                   f"({asked}); deploy the app again (git push, or dynoctl "
                   "releases:rollback to a release whose slug a machine has)")
