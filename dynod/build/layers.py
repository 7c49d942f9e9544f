"""Language layers: the runtimes most apps do not need, kept out of the base stack.

The base stack (``stacks.COMMON_PACKAGES``) has Python, Node.js, the compilers and the
add-on clients. Ruby, the JVM, PHP and Go are layers: each is the upper directory of an
overlay over the base in which apt installed the layer's packages, kept beside the stack
as ``<state_dir>/stacks/<stack>+<layer>``. A layer is made the first time a build needs
it (its language's files are in the source) and then used by that build and by every
dyno of the slug it makes, as a lower layer between the slug and the base. A machine
pays for a language only once something is written in it: the base stack is about half
the size and build time of a stack with every runtime (closing note of issue 14).

Like a stack, a layer carries a marker with its key (the base's key and its packages),
is built in a temporary directory and renamed into place, and can be kept in the stack
cache. A layer whose base was rebuilt is out of date and is rebuilt with it.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dynod.build import stacks
from dynod.errors import FailedPrecondition, InvalidArgument, Unavailable
from dynod.paths import stacks_dir


@dataclass(frozen=True)
class Layer:
    name: str
    packages: tuple[str, ...]
    runtimes: str  # what `dynoctl stacks` says it holds
    buildpacks: tuple[str, ...]  # the built-in buildpacks that need it


# Stacked in this order over the base (first is topmost).
LAYERS: Mapping[str, Layer] = {
    # Ruby for the ruby buildpack: the interpreter, headers for gems with C extensions,
    # Bundler and Rake, and libxslt (with libxml2) that Nokogiri, in every Rails app,
    # links against when it is built on the machine.
    "ruby": Layer("ruby", ("ruby", "ruby-dev", "bundler", "rake", "libxslt1.1"),
                  "Ruby, Bundler, Rake", ("ruby",)),
    # The JVM for the java, gradle, scala and clojure buildpacks: the JDK (21), Debian's
    # Maven with the plugins its default lifecycle and Heroku's dependency:list need, kept
    # offline in /usr/share/maven-repo (maven-debian-helper), and Leiningen for Clojure.
    "jvm": Layer("jvm", ("default-jdk-headless", "maven", "maven-debian-helper",
                         "libmaven-install-plugin-java", "libmaven-dependency-plugin-java",
                         "leiningen"),
                 "OpenJDK, Maven, Leiningen", ("java", "gradle", "scala", "clojure")),
    # PHP for the php buildpack: the CLI, PHP-FPM and nginx behind heroku-php-nginx,
    # Composer, and the extensions Laravel and Symfony need.
    "php": Layer("php", ("php-cli", "php-fpm", "php-mbstring", "php-xml", "php-curl",
                         "php-zip", "php-sqlite3", "php-pgsql", "php-intl", "php-bcmath",
                         "composer", "nginx"),
                 "PHP, PHP-FPM, Composer, nginx", ("php",)),
    # Go for the go buildpack (its binaries need no runtime; the toolchain is for builds).
    "go": Layer("go", ("golang-go",), "Go", ("go",)),
}
MARKER_DIR = "etc/dynod-layers"

# What each built-in buildpack's bin/detect looks for, as names in the source's top
# directory (a unit test runs the detect scripts against the same trees).
_DETECT: Mapping[str, tuple[str, ...]] = {
    "ruby": ("Gemfile",),
    "java": tuple(f"pom.{ext}" for ext in
                  ("xml", "atom", "clj", "groovy", "rb", "scala", "yaml", "yml")),
    "gradle": ("gradlew", "build.gradle", "build.gradle.kts", "settings.gradle",
               "settings.gradle.kts"),
    "scala": (".sbtrc", "project/build.properties"),
    "clojure": ("project.clj",),
    "php": ("composer.json", "index.php"),
    "go": ("go.mod", "Godeps/Godeps.json", "vendor/vendor.json", "glide.yaml", "Gopkg.lock"),
}


def _detects(buildpack: str, files: Collection[str]) -> bool:
    if any(name in files for name in _DETECT.get(buildpack, ())):
        return True
    if buildpack == "scala":
        return any((n.endswith(".sbt") and "/" not in n)
                   or (n.startswith("project/") and n.endswith(".scala") and n.count("/") == 1)
                   for n in files)
    return False


def layers_for(files: Collection[str], buildpacks: Sequence[str] = ()) -> tuple[str, ...]:
    """The layers a build of a source with ``files`` (paths relative to its top, files
    only) needs: those of every built-in buildpack that detects it, and of the built-ins
    named in ``buildpacks`` (the app's set list). In stacking order."""
    wanted = {name for name, layer in LAYERS.items()
              if any(bp in buildpacks or _detects(bp, files) for bp in layer.buildpacks)}
    return tuple(name for name in LAYERS if name in wanted)


def source_files(tar: Path) -> set[str]:
    """The regular files and links of a source archive, as paths relative to its top
    (two levels deep: all detection looks at). Raises InvalidArgument (not a tar)."""
    out: set[str] = set()
    try:
        with tarfile.open(tar) as archive:
            for member in archive:
                if not (member.isfile() or member.issym() or member.islnk()):
                    continue
                name = member.name.removeprefix("./").lstrip("/")
                if name and name.count("/") <= 1:
                    out.add(name)
    except (tarfile.TarError, OSError) as exc:
        raise InvalidArgument(f"the source archive cannot be read: {exc}") from exc
    return out


def get_layer(name: str) -> Layer:
    try:
        return LAYERS[name]
    except KeyError:
        raise InvalidArgument(
            f'layer "{name}" does not exist; layers: {", ".join(LAYERS)}') from None


def layer_root(state_dir: Path, stack: str, layer: str) -> Path:
    return stacks_dir(state_dir) / f"{stack}+{layer}"


def layer_key(defn: stacks.StackDefinition, layer: Layer) -> str:
    canonical = json.dumps({"base": stacks.cache_key(defn), "name": layer.name,
                            "packages": list(layer.packages)}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _marker(root: Path, layer: Layer) -> Path:
    return root / MARKER_DIR / f"{layer.name}.json"


def is_current(root: Path, defn: stacks.StackDefinition, layer: Layer) -> bool:
    try:
        doc = json.loads(_marker(root, layer).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("key") == layer_key(defn, layer)


def lowers(state_dir: Path, stack: str, layers: Iterable[str]) -> tuple[Path, ...]:
    """The lower directories of a build or dyno root on ``stack`` with ``layers``, top
    first, base last. Raises NotFound (stack) and FailedPrecondition when the stack or
    a layer is not built or out of date."""
    base = stacks.require_stack(state_dir, stack)
    defn = stacks.get_stack(stack)
    out: list[Path] = []
    for name in layers:
        layer = get_layer(name)
        root = layer_root(state_dir, stack, name)
        if not is_current(root, defn, layer):
            raise FailedPrecondition(
                f'the {name} layer of stack "{stack}" is not built; push the app again '
                f"to build it, or `dynoctl stacks:build {stack} --layer {name}`")
        out.append(root)
    return (*out, base)


def install_script(base: Path, upper: Path, work: Path, merged: Path,
                   packages: Sequence[str]) -> str:
    """The shell script, run in a mount and PID namespace of its own, that mounts an
    overlay of ``upper`` over ``base`` and installs ``packages`` into it with apt; the
    mounts go away with the namespace."""
    q = shlex.quote
    options = f"lowerdir={base},upperdir={upper},workdir={work}"
    chroot = (f"chroot {q(str(merged))} env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8")
    policy = f"{q(str(merged))}/{stacks.POLICY_RC_D}"
    return "\n".join([
        "set -eu",
        f"mount -t overlay overlay -o {q(options)} {q(str(merged))}",
        f"mount -t proc proc {q(str(merged))}/proc",
        # No server among the packages (nginx, php-fpm) starts while apt runs.
        f"printf '#!/bin/sh\\nexit 101\\n' > {policy}",
        f"chmod 755 {policy}",
        # As for the stack (stacks.install_argvs): testing's Release expires in a week.
        f"{chroot} apt-get update -q -o Acquire::Check-Valid-Until=false",
        f"{chroot} apt-get install -q -y --no-install-recommends {' '.join(map(q, packages))}",
        f"{chroot} apt-get clean",
        f"rm -f {policy}",
    ])


def build_layer(
    defn: stacks.StackDefinition,
    name: str,
    state_dir: Path,
    *,
    cache: Path | None = None,
    on_line: Callable[[str], None] = lambda _line: None,
    runner: stacks.Runner = stacks.default_runner,
) -> Path:
    """Make layer ``name`` of stack ``defn`` unless it is current; return its root. The
    stack itself must be built (``stacks.build_stack``). Raises Unavailable when apt
    fails (the archive cannot be reached) and leaves nothing behind but the previous
    layer, if any."""
    layer = get_layer(name)
    final = layer_root(state_dir, defn.name, name)
    if is_current(final, defn, layer):
        return final
    base = stacks.require_stack(state_dir, defn.name)
    entry = None if cache is None else cache / f"{defn.name}+{name}-{layer_key(defn, layer)}"
    upper = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=stacks_dir(state_dir)))
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.work-", dir=stacks_dir(state_dir)))
    try:
        upper.chmod(0o755)
        if entry is not None and is_current(entry, defn, layer):
            on_line(f"-----> Using cached {name} layer {entry}")
            stacks.copy_tree(entry, upper, runner, on_line)
        else:
            count = len(layer.packages)
            on_line(f"-----> Installing the {name} layer of {defn.name} "
                    f"({layer.runtimes}: {count} package{'s' if count > 1 else ''} with apt)")
            (scratch / "work").mkdir()
            (scratch / "merged").mkdir()
            script = install_script(base, upper, scratch / "work", scratch / "merged",
                                    layer.packages)
            status = runner(["unshare", "--mount", "--pid", "--fork", "--propagation",
                             "private", "sh", "-c", script], on_line)
            if status != 0:
                raise Unavailable(
                    f'the {name} layer of stack "{defn.name}": apt failed (exit {status}); '
                    "see its output above")
            stacks.prune(upper)
            marker = _marker(upper, layer)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"key": layer_key(defn, layer), "stack": defn.name,
                                          "layer": name, "packages": list(layer.packages),
                                          "built_at": round(time.time())}, indent=2) + "\n")
            if entry is not None:
                stacks.store_in_cache(upper, entry, runner, on_line)
        stacks.replace_dir(upper, final)
    except BaseException:
        shutil.rmtree(upper, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def built_layers(state_dir: Path, stack: str) -> tuple[str, ...]:
    """The layers of ``stack`` that are built and current."""
    defn = stacks.get_stack(stack)
    return tuple(n for n, layer in LAYERS.items()
                 if is_current(layer_root(state_dir, stack, n), defn, layer))

