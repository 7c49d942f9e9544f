"""git push: the git user's forced command and the repositories' pre-receive hook.

``python -m dynod.cli.gitpush shell KEY_ID`` is the forced command of every key in the git
user's authorized_keys (``keys.render_authorized_keys``). It accepts only
``git-receive-pack``/``git-upload-pack`` of ``<app>.git`` for an existing app, makes
``<state_dir>/repos/<app>.git`` on first push, and hands the ssh channel to git.

``python -m dynod.cli.gitpush pre-receive`` is that repository's hook: for a push to
``main`` or ``master`` it archives the pushed commit, streams it to the daemon's build
API and the build output back (git shows it as ``remote:`` lines). A failed build
exits non-zero, so git answers ``pre-receive hook declined`` and the branch is not
moved: pushing the same commit again builds again, and a commit that built is
"Everything up-to-date".
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

from dynod.build.gitrepos import (
    hook_script,
    repos_dir,
)
from dynod.build.source import MAX_SOURCE_BYTES
from dynod.cli import deploy
from dynod.cli.client import CliError
from dynod.model.apps import NAME_RE
from dynod.model.keys import KEY_ID_RE
from dynod.settings import DEFAULT_CONFIG, load_settings
from dynod.system import processes

DEPLOY_REFS = ("refs/heads/main", "refs/heads/master")
ZERO = "0" * 40
SERVICES = ("git-receive-pack", "git-upload-pack")
# Below this much free space on the disk holding the repositories, a push is refused
# before git starts: git's own "unable to write loose object file" names neither the
# disk nor the fix.
MIN_FREE_BYTES = 1 << 20












def parse_original_command(command: str) -> tuple[str, str]:
    """(service, app) from ``SSH_ORIGINAL_COMMAND``, e.g. ``git-receive-pack 'shop.git'``.
    Raises ValueError with the message to show."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = []
    if len(words) == 3 and words[0] == "git" and f"git-{words[1]}" in SERVICES:
        words = [f"git-{words[1]}", words[2]]
    if len(words) != 2 or words[0] not in SERVICES:
        raise ValueError("this account only takes git pushes: "
                         "`git push dynod main` (interactive logins are not allowed)")
    name = re.sub(r"\.git$", "", words[1].rstrip("/").rsplit("/", 1)[-1])
    if not NAME_RE.match(name):
        raise ValueError(f"{words[1]!r} is not an app's repository; use <app>.git")
    return words[0], name


def _fail(message: str) -> int:
    print(f" !     {message}", file=sys.stderr, flush=True)
    return 1


def disk_full(path: Path) -> str:
    """What to tell the pusher when the disk holding ``path`` is (nearly) full, else ""."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    if free >= MIN_FREE_BYTES:
        return ""
    return (f"No space left on device: the disk holding dynod's state ({path}) has "
            f"{free // 1024} KiB free; free space on it and push again: nothing was changed, "
            "the running release keeps serving")


def shell(key_id: str) -> int:
    if not KEY_ID_RE.match(key_id):
        return _fail("this key's entry is broken; re-add it with `dynoctl keys:add`")
    try:
        service, app = parse_original_command(os.environ.get("SSH_ORIGINAL_COMMAND", ""))
    except ValueError as exc:
        return _fail(str(exc))
    try:
        deploy.may_push(key_id, app)  # a user's key: only their apps, changing nothing
        if not deploy.app_exists(app):
            return _fail(f'No such app as {app}. Create it with `dynoctl apps:create {app}`.')
    except CliError as exc:
        return _fail(str(exc))
    settings = load_settings(DEFAULT_CONFIG)
    repo = repos_dir(settings.state_dir) / f"{app}.git"
    if service == "git-receive-pack" and (full := disk_full(settings.state_dir)):
        return _fail(full)
    if not (repo / "HEAD").is_file():
        if service == "git-upload-pack":
            return _fail(f"app {app} has no code yet; push to it first")
        processes.output(["git", "init", "--quiet", "--bare", str(repo)])
        processes.output(["git", "-C", str(repo), "symbolic-ref", "HEAD", "refs/heads/main"])
    hook = repo / "hooks" / "pre-receive"
    hook.parent.mkdir(exist_ok=True)
    if not hook.is_file() or hook.read_text() != hook_script():
        tmp = hook.with_suffix(".tmp")
        tmp.write_text(hook_script())
        tmp.chmod(0o755)
        tmp.replace(hook)
    env = {**os.environ, "DYNOD_KEY_ID": key_id, "DYNOD_APP": app}
    processes.replace_process([service, str(repo)], env)
    return 1  # pragma: no cover - replace_process does not return


def _ref_name(ref: str) -> str:
    """``feature`` for a branch, ``tag v1`` for a tag (git's own short names)."""
    if ref.startswith("refs/tags/"):
        return f"tag {ref.removeprefix('refs/tags/')}"
    return ref.removeprefix("refs/heads/")


def source_size(commit: str) -> int:
    """The bytes of every file in ``commit``'s tree (what ``git archive`` would write),
    from the objects' headers: no checkout, no path names (which need not be UTF-8)."""
    listing = processes.output(["git", "ls-tree", "-r", "-z",
                                "--format=%(objecttype) %(objectsize)", commit], timeout=600)
    return sum(int(size) for kind, _, size in
               (entry.partition(" ") for entry in listing.split("\0") if entry)
               if kind == "blob")


def _too_large(size: int) -> str | None:
    # Heroku: the uncompressed checkout may be at most 1 GB (limits article). Checked
    # before the archive is written, so a 2 GB file costs no 2 GB tar and upload.
    if size <= MAX_SOURCE_BYTES:
        return None
    return (f"Your app's source is {size / 2**30:.1f}G uncompressed, over the "
            f"{MAX_SOURCE_BYTES // 2**30}G limit; remove large files from the commit "
            "(`git rm --cached FILE`, add it to .gitignore) and push again.")


def pre_receive(stdin_text: str) -> int:
    app = os.environ.get("DYNOD_APP") or Path.cwd().name.removesuffix(".git")
    key_id = os.environ.get("DYNOD_KEY_ID", "")
    status = 0
    for line in stdin_text.splitlines():
        try:
            _old, new, ref = line.split()
        except ValueError:
            continue
        if ref not in DEPLOY_REFS:
            print(f"Pushed to {_ref_name(ref)}, which is not built; push to "
                  "main or master to deploy.", flush=True)
            continue
        if new == ZERO:
            print(f" !     Deleting {ref.removeprefix('refs/heads/')} is not allowed.",
                  flush=True)
            status = 1
            continue
        try:
            too_large = _too_large(source_size(new))
        except processes.CommandFailed as exc:
            too_large = str(exc)
        if too_large is not None:
            print(f" !     {too_large}", flush=True)
            print(" !     Push failed", flush=True)
            print(f"!\tPush rejected to {app}.", flush=True)
            print("", flush=True)
            status = 1
            continue
        fd, name = tempfile.mkstemp(prefix="dynod-push-", suffix=".tar")
        os.close(fd)
        archive = Path(name)
        try:
            processes.output(["git", "archive", "--format=tar", "-o", str(archive), new],
                             timeout=600)
            print("Compressing source files... done.", flush=True)
            build = deploy.stream_build(app, deploy.file_chunks(archive), commit=new,
                                        key_id=key_id,
                                        out=lambda text: print(text, flush=True))
        except (CliError, processes.CommandFailed) as exc:
            print(f" !     {exc}", flush=True)
            print(" !     Push failed", flush=True)
            build = None
        finally:
            with contextlib.suppress(OSError):
                archive.unlink()
        # A build that succeeded ends with the daemon's verdict on its release (Heroku's
        # "Verifying deploy... done." only once the new release serves).
        if build is None or build.status != "succeeded":
            print(f"!\tPush rejected to {app}.", flush=True)
            print("", flush=True)
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "shell":
        return shell(args[1])
    if args == ["pre-receive"]:
        return pre_receive(sys.stdin.read())
    print("usage: python -m dynod.cli.gitpush shell KEY_ID | pre-receive", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
