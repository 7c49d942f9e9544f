"""git push -> released for each language's example app, cold and warm, beside a plain
``git push`` of the same repository; and what each language costs on disk.

On one sandbox machine with the default stack (built once on the host, cached), with
real git over real ssh to 127.0.0.1, for each app of ``examples/``:

* baseline: ``git push`` of the same repository to a bare repository over the same ssh
  (what git alone costs: everything above it is the build and the release);
* cold: the first push, the app's build cache empty (``builds:cache:purge`` before
  every round after the first);
* warm: a second push with a trivial change (a new file), dependencies unchanged;
* the slug's size, the app's build cache on disk, and once the ``du`` of every stack
  root the machine has (whatever the stacks are made of), beside all the slugs.

    .venv/bin/python -m benchmarks.languages [-n 1] [--langs flask,go] [--json FILE]

``--quick`` (scale < 1) pushes a subset (QUICK); ``-n`` or ``--langs`` pushes what
they say. The per-language table is printed before the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TypedDict

from benchmarks.builds import setup_ssh, sh
from benchmarks.common import Figure, Summary, write
from tests.sandbox.machine import PROJECT, Machine

# language -> (its example in examples/, the app's name)
LANGUAGES = {"python": ("flask", "flask"), "node": ("express", "express"),
             "ruby": ("ruby", "sinatra"), "rails": ("rails", "rails"),
             "go": ("go", "gohello"), "java": ("java-maven", "javamvn"),
             "clojure": ("clojure", "clj"), "php": ("php", "php"),
             "apt": ("aptfile", "aptapp")}
QUICK = ("python", "node", "ruby", "go", "php", "apt")
SLUGS = Path("/var/lib/dynod/slugs")  # a slug is <sha256>.tgz there
CACHE = Path("/var/lib/dynod/cache")
STACKS = Path("/var/lib/dynod/stacks")
MB = 1024 * 1024


def du(path: Path) -> int:
    """Bytes under ``path`` as du counts them (disk usage, hard links once)."""
    return int(sh(f"du -s -B1 {path} | cut -f1").split()[0])


def push(src: Path, remote: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = sh(f"git push -q {remote} HEAD:main 2>&1", src)
    took = time.perf_counter() - t0
    if remote == "dynod" and "Released v" not in out:
        raise RuntimeError(f"{src.name}: the push released nothing:\n{out}")
    return took, out


def commit(src: Path, text: str) -> None:
    sh(f"printf %s '{text}' > BENCHMARK && git add -A && "
       "git -c user.email=b@e -c user.name=b commit -qm 'a trivial change'", src)


class AppResult(TypedDict):
    lang: str
    app: str
    source: int  # bytes, the checkout without .git
    slug: int
    cache: int
    git: list[float]  # seconds
    cold: list[float]
    warm: list[float]


class Result(TypedDict):
    apps: list[AppResult]
    stacks: dict[str, int]  # bytes per stack root
    slugs: int


def measure(lang: str, rounds: int) -> AppResult:
    app, name = LANGUAGES[lang]
    print(f"   {lang} ({app}) ...", file=sys.stderr, flush=True)
    src = Path("/tmp/bench") / name
    sh(f"rm -rf {src} && mkdir -p {src.parent} && cp -r {PROJECT / 'examples' / app} {src}"
       f" && cd {src} && git init -q -b main && git add -A && "
       f"git -c user.email=b@e -c user.name=b commit -qm init && dynoctl apps:create {name}")
    source = du(src) - du(src / ".git")
    git, cold, warm = [], [], []
    slug = 0
    for i in range(rounds):
        sh("rm -rf /tmp/bare.git && git init -q --bare /tmp/bare.git")
        git.append(push(src, "root@127.0.0.1:/tmp/bare.git")[0])
        if i:
            sh(f"dynoctl builds:cache:purge -a {name}")
            commit(src, f"cold {i}\n")
        cold.append(push(src, "dynod")[0])
        if i == 0:
            slug = max(SLUGS.glob("*.tgz"), key=lambda p: p.stat().st_mtime).stat().st_size
        commit(src, f"warm {i}\n")
        warm.append(push(src, "dynod")[0])
    cache = du(CACHE / name)
    # Its dynos would only add noise to the next language's builds.
    sh(f"dynoctl ps:scale web=0 -a {name}")
    return AppResult(lang=lang, app=app, source=source, slug=slug, cache=cache, git=git,
                     cold=cold, warm=warm)


def inner(langs: list[str], rounds: int) -> Result:
    setup_ssh()
    apps = [measure(lang, rounds) for lang in langs]
    stacks = {p.name: du(p) for p in sorted(STACKS.iterdir()) if p.is_dir()}
    slugs = sum(p.stat().st_size for p in SLUGS.glob("*.tgz"))
    return Result(apps=apps, stacks=stacks, slugs=slugs)


def report(result: Result) -> str:
    """The per-language table: medians of the pushes, sizes in MB."""
    head = (f"{'language':<9} {'app':<11} {'git push':>9} {'cold':>8} {'warm':>8} "
            f"{'source':>8} {'slug':>8} {'cache':>8}")
    lines = [head, "-" * len(head)]
    for a in result["apps"]:
        git, cold, warm = (Summary.of(a[k], "s").median for k in ("git", "cold", "warm"))
        lines.append(
            f"{a['lang']:<9} {a['app']:<11} {git:>8.2f}s {cold:>7.2f}s {warm:>7.2f}s "
            f"{a['source'] / MB:>7.1f}M {a['slug'] / MB:>7.1f}M {a['cache'] / MB:>7.1f}M")
    lines.append("stacks on disk (du): " + ", ".join(
        f"{k} {v / MB:.0f} MB" for k, v in result["stacks"].items()))
    return "\n".join(lines)


def megabytes(size: int) -> Summary:
    return Summary.of([size / MB], "MB")


def figures(result: Result) -> list[Figure]:
    out: list[Figure] = []
    floor = "git push to a bare repo, same ssh"
    for a in result["apps"]:
        base = Summary.of(a["git"], "s")
        lang, source = a["lang"], megabytes(a["source"])
        out += [
            Figure(f"{lang} push -> released, cold", Summary.of(a["cold"], "s"), floor, base),
            Figure(f"{lang} push -> released, warm", Summary.of(a["warm"], "s"), floor, base),
            Figure(f"{lang} slug size", megabytes(a["slug"]), "the app's source", source),
            Figure(f"{lang} build cache on disk", megabytes(a["cache"]), "the app's source",
                   source),
        ]
    for stack, size in result["stacks"].items():
        out.append(Figure(f"stack {stack} on disk (du)", megabytes(size),
                          "every slug of this run", megabytes(result["slugs"])))
    return out


def collect(scale: float = 1.0, n: int | None = None,
            langs: list[str] | None = None) -> list[Figure]:
    """scale 1: every language, 2 rounds; below 1: QUICK, 1 round. ``n`` or ``langs``
    given: every language (or ``langs``), ``n`` rounds (default 1)."""
    from tests.integration.conftest import built_stack, stack_bind  # noqa: PLC0415

    if langs is None:
        langs = list(QUICK) if scale < 1 and n is None else list(LANGUAGES)
    rounds = n or (2 if scale >= 1 else 1)
    with Machine(binds=[stack_bind(built_stack())]) as m:
        proc = m.run([str(PROJECT / ".venv/bin/python"), "-m", "benchmarks.languages",
                      "--inner", "-n", str(rounds), "--langs", ",".join(langs)],
                     check=True, timeout=3600)
    result: Result = json.loads(proc.stdout)
    print(report(result), flush=True)
    print(flush=True)
    return figures(result)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, help="rounds (default 2, 1 with --scale < 1)")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--langs", help=f"comma-separated, of {','.join(LANGUAGES)}")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    langs = args.langs.split(",") if args.langs else None
    unknown = sorted(set(langs or ()) - set(LANGUAGES))
    if unknown:
        parser.error(f"unknown language {', '.join(unknown)}: use {', '.join(LANGUAGES)}")
    if args.inner:
        print(json.dumps(inner(langs or list(LANGUAGES), args.n or 1)))
        return 0
    write(collect(args.scale, args.n, langs), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
