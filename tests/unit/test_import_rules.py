"""The layout rules of DESIGN.md ("Code layout"), checked on every module under dynod/.

Read from the source with ast (nothing is imported): no import cycle between dynod
modules; the layer directions; no function-local import of a dynod module; each OS
library imported by its one module in system/; the generated gRPC code (dynod.v1) only in
api/ and cli/; no module over 600 lines; no process-wide instance (a ``global``
statement, or module-level state: an empty container or a lock filled and taken at run
time). Imports under ``if TYPE_CHECKING:`` count: a
layer a module may not use at run time is one it should not need for its types either.

A failing rule prints the offending import (file and line) and the rule. The tests after
``test_dynod_follows_the_import_rules`` run the checker on small fake trees, so that it is
shown able to fail.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 600

# Each OS library and the one module that may import it (DESIGN.md: one typed chokepoint
# per OS interface).
OS_LIBRARIES = {
    "pystemd": "dynod.system.units",
    "pyroute2": "dynod.system.netns",
    "subprocess": "dynod.system.processes",
    "ctypes": "dynod.system.libc",
}
GENERATED = "dynod.v1"
# Layers (the package under dynod/) whose imports of dynod are limited to a few layers.
ONLY = {
    "system": frozenset({"system", "errors", "paths", "settings"}),
    "model": frozenset({"model", "errors"}),
    "store": frozenset({"store", "model", "errors"}),
    # The add-on servers, a subsystem beside runtime: given to the control plane and the
    # runtime as a model.addons.AddonServices by the composition root.
    "addons": frozenset({"addons", "model", "errors", "system"}),
}
FORBIDDEN = {
    "build": frozenset({"runtime", "addons"}),
    "runtime": frozenset({"build", "control", "addons"}),
    "control": frozenset({"addons"}),
}
# The layers only the composition root (and they themselves) may import.
TOP = frozenset({"api", "cli"})
ROOT_MODULE = "dynod.__main__"
# Made with no arguments at module level, these are state, not constants.
STATE_TYPES = frozenset({"set", "dict", "list", "defaultdict", "OrderedDict", "deque",
                         "Lock", "RLock", "Event", "Condition", "Semaphore",
                         "BoundedSemaphore"})

# The one exception, exact (module, what, rule), never a pattern; a stale entry fails
# the test too, so the list cannot outlive what it excuses.
ALLOWED: frozenset[tuple[str, str, str]] = frozenset({
    # pystemd's introspected Manager interface, loaded once per process (~40 ms each time
    # otherwise): a cache inside the OS module, not an object other parts find each other
    # through; every call on it opens its own bus.
    ("dynod.system.units", "_MANAGER", "process-wide"),
    ("dynod.system.units", "_MANAGER_LOCK", "process-wide"),
})


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. dynod.build.pipeline
    target: str  # what it imports: a dynod module, or a top-level library name
    line: int
    local: bool  # inside a function


@dataclass(frozen=True)
class Violation:
    module: str
    target: str
    rule: str  # the kind, for ALLOWED: layer, cycle, function-local, os-library, ...
    text: str  # what to print: where, what, and the rule broken

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.module, self.target, self.rule)


def find_modules(root: Path) -> dict[str, Path]:
    """Every module under root/dynod by dotted name (packages by their own name), but
    the generated code."""
    found = {}
    for path in sorted((root / "dynod").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[:2] == ("dynod", "v1"):
            continue
        name = ".".join(parts).removesuffix(".__init__")
        found[name] = path
    return found


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.is_package = is_package
        self.depth = 0
        # (module named, names imported from it or None for ``import x``, line, local)
        self.found: list[tuple[str, list[str] | None, int, bool]] = []

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    # ast.NodeVisitor's method names.
    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function
    visit_Lambda = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, None, node.lineno, self.depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.module.split(".")
            keep = len(parts) - node.level + (1 if self.is_package else 0)
            base = ".".join([*parts[:keep], *([base] if base else [])])
        names = [alias.name for alias in node.names]
        self.found.append((base, names, node.lineno, self.depth > 0))


def _targets(modules: dict[str, Path], base: str, names: list[str] | None) -> list[str]:
    """What one import statement names: ``from dynod.build import pipeline`` the module
    dynod.build.pipeline, ``from dynod.errors import NotFound`` dynod.errors."""
    if names is None:
        return [base]
    submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
    return [*submodules, *([base] if len(submodules) < len(names) else [])]


def read_imports(modules: dict[str, Path]) -> list[Import]:
    """Each module's imports of dynod modules, of dynod.v1 and of top-level libraries."""
    out: list[Import] = []
    for name, path in modules.items():
        visitor = _Imports(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), str(path)))
        seen = set()
        for base, names, line, local in visitor.found:
            for dotted in _targets(modules, base, names):
                if dotted == GENERATED or dotted.startswith(GENERATED + "."):
                    target = GENERATED
                elif dotted in modules:
                    target = dotted
                elif dotted.split(".")[0] == "dynod":
                    # import dynod.x.y where only dynod.x is a module
                    target = max((m for m in modules if dotted.startswith(m + ".")),
                                 key=len, default="dynod")
                else:
                    target = dotted.split(".")[0]
                if target != name and (target, line) not in seen:
                    seen.add((target, line))
                    out.append(Import(name, target, line, local))
    return out


def layer(module: str) -> str:
    """The package under dynod/ (``build``), or the top-level module's name (``errors``,
    ``__main__``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _where(modules: dict[str, Path], root: Path, imp: Import) -> str:
    return f"{modules[imp.module].relative_to(root)}:{imp.line}: {imp.module} imports {imp.target}"


def _cycles(modules: dict[str, Path], imports: list[Import]) -> list[list[Import]]:
    """One concrete cycle (its imports in order) per strongly connected component."""
    edges: dict[str, dict[str, Import]] = {m: {} for m in modules}
    for imp in imports:
        if imp.target in modules:
            edges[imp.module].setdefault(imp.target, imp)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            connect(v)
    cycles = []
    for component in components:
        start = min(component)
        # Breadth-first from start back to start inside the component: the shortest cycle.
        paths: dict[str, list[Import]] = {start: []}
        queue = [start]
        found: list[Import] | None = None
        while queue and found is None:
            v = queue.pop(0)
            for w, imp in sorted(edges[v].items()):
                if w == start:
                    found = [*paths[v], imp]
                    break
                if w in component and w not in paths:
                    paths[w] = [*paths[v], imp]
                    queue.append(w)
        assert found is not None
        cycles.append(found)
    return cycles


def _is_state(value: ast.expr) -> bool:
    if isinstance(value, ast.List | ast.Set):
        return not value.elts
    if isinstance(value, ast.Dict):
        return not value.keys
    if isinstance(value, ast.Call) and not value.args and not value.keywords:
        func = value.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) else "")
        return name in STATE_TYPES
    return False


def process_wide(modules: dict[str, Path], root: Path) -> list[Violation]:
    """Names a module keeps for the whole process: rebound with ``global``, or module
    state made empty at import to be filled (or a lock to be taken) at run time."""
    out = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        found: list[tuple[str, int]] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                found += [(n, node.lineno) for n in node.names]
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None \
                    and _is_state(node.value):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                found += [(t.id, node.lineno) for t in targets if isinstance(t, ast.Name)]
        for var, line in found:
            out.append(Violation(name, var, "process-wide", (
                f"{path.relative_to(root)}:{line}: {name} keeps {var} for the whole "
                "process: no module keeps a process-wide instance (the composition root "
                "makes it and hands it to who needs it)")))
    return out


def check(root: Path) -> list[Violation]:
    """Every rule broken in root/dynod, one Violation per offending import."""
    modules = find_modules(root)
    imports = read_imports(modules)
    out: list[Violation] = []

    def broken(imp: Import, rule: str, text: str) -> None:
        out.append(Violation(imp.module, imp.target, rule,
                             f"{_where(modules, root, imp)}: {text}"))

    for imp in imports:
        source, target = layer(imp.module), layer(imp.target)
        if imp.target in OS_LIBRARIES:
            if imp.module != OS_LIBRARIES[imp.target]:
                broken(imp, "os-library", f"only {OS_LIBRARIES[imp.target]} may import "
                       f"{imp.target} (one module per OS interface)")
            continue
        if imp.target == GENERATED:
            if source not in TOP:
                broken(imp, "generated", "only api/ and cli/ import the generated gRPC code")
            continue
        if imp.target not in modules:
            continue  # a library
        if imp.local:
            broken(imp, "function-local", "no function-local imports of dynod modules "
                   "(import at the top; a cycle it hides is a layout defect)")
        # api/ (the servicers) and cli/ (a gRPC client) do not import each other either.
        if target in TOP and source != target and imp.module != ROOT_MODULE:
            broken(imp, "layer", f"nothing imports dynod.{target} but {ROOT_MODULE} "
                   f"(and {target}/ itself)")
        # The package dynod itself holds only __version__: anyone may read it.
        if source in ONLY and target not in ONLY[source] and imp.target != "dynod":
            allowed = ", ".join(sorted(ONLY[source]))
            broken(imp, "layer", f"{source}/ imports nothing of dynod but {allowed}")
        if target in FORBIDDEN.get(source, ()):
            broken(imp, "layer", f"{source}/ never imports {target}/")
    for cycle in _cycles(modules, imports):
        names = " -> ".join([cycle[0].module, *(imp.target for imp in cycle)])
        lines = "; ".join(_where(modules, root, imp) for imp in cycle)
        out.append(Violation(cycle[0].module, cycle[0].target, "cycle",
                             f"import cycle {names} ({lines})"))
    out += process_wide(modules, root)
    for name, path in modules.items():
        count = len(path.read_text().splitlines())
        if count > MAX_LINES:
            out.append(Violation(name, "", "size", f"{path.relative_to(root)}: {count} lines; "
                                 f"split it (modules stay under {MAX_LINES} lines)"))
    return out


def test_dynod_follows_the_import_rules() -> None:
    violations = check(ROOT)
    new = [v.text for v in violations if v.key not in ALLOWED]
    stale = sorted(ALLOWED - {v.key for v in violations})
    assert not new, "import rules broken:\n" + "\n".join(new)
    assert not stale, ("allowed violations that no longer occur; delete them from ALLOWED:\n"
                       + "\n".join(map(str, stale)))


def test_the_checker_reads_every_module() -> None:
    modules = find_modules(ROOT)
    assert "dynod.__main__" in modules
    assert "dynod.build.pipeline" in modules
    assert not any(name.startswith(GENERATED) for name in modules)
    imports = read_imports(modules)
    assert "dynod.api.server" in {i.target for i in imports if i.module == "dynod.__main__"}


# --- the checker on fake trees ------------------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in {"dynod/__init__.py": "", "dynod/errors.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            if parent.parts and not (root / parent / "__init__.py").exists():
                (root / parent / "__init__.py").write_text("")
        path.write_text(text)
    return root


def _texts(violations: list[Violation]) -> Iterator[str]:
    for v in violations:
        yield v.text


def test_a_clean_tree_passes(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dynod/model/apps.py": "from dynod.errors import NotFound\n",
        "dynod/store/sqlite.py": "from dynod.model import apps\n",
        "dynod/build/pipeline.py": "from dynod.store import sqlite\n",
        "dynod/system/processes.py": "import subprocess\n",
        "dynod/api/builds.py": ("from dynod.v1 import builds_pb2\n"
                                "from dynod.build import pipeline\n"),
        "dynod/__main__.py": "from dynod.api import builds\n",
    })
    assert check(root) == []


def test_a_forbidden_layer_is_reported_with_its_line(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dynod/runtime/supervisor.py": "",
        "dynod/build/pipeline.py": "import os\n\nfrom dynod.runtime import supervisor\n",
    })
    (found,) = check(root)
    assert found.rule == "layer"
    assert found.text == ("dynod/build/pipeline.py:3: dynod.build.pipeline imports "
                          "dynod.runtime.supervisor: build/ never imports runtime/")


def test_only_the_root_imports_api(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dynod/api/server.py": "",
        "dynod/control/apps.py": "import dynod.api.server\n",
        "dynod/__main__.py": "from dynod.api.server import start_api\n",
    })
    texts = list(_texts(check(root)))
    assert texts == ["dynod/control/apps.py:1: dynod.control.apps imports dynod.api.server: "
                     "nothing imports dynod.api but dynod.__main__ (and api/ itself)"]


def test_api_and_cli_do_not_import_each_other(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dynod/api/apps.py": "from dynod.cli import gitpush\n",
        "dynod/cli/gitpush.py": "",
    })
    texts = list(_texts(check(root)))
    assert texts == ["dynod/api/apps.py:1: dynod.api.apps imports dynod.cli.gitpush: "
                     "nothing imports dynod.cli but dynod.__main__ (and cli/ itself)"]


def test_system_and_model_import_only_below_them(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dynod/model/sizes.py": "from dynod.store import sqlite\n",
        "dynod/store/sqlite.py": "",
        "dynod/system/units.py": "from dynod.model.sizes import Size\n",
    })
    found = {(v.module, v.target, v.rule) for v in check(root)}
    assert found == {("dynod.model.sizes", "dynod.store.sqlite", "layer"),
                     ("dynod.system.units", "dynod.model.sizes", "layer")}


def test_a_cycle_is_reported_with_every_import(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dynod/control/apps.py": "from dynod.control import releases\n",
        "dynod/control/releases.py": "\nfrom dynod.control.slugs import Slug\n",
        "dynod/control/slugs.py": "from . import apps\n",
    })
    (found,) = check(root)
    assert found.rule == "cycle"
    assert found.text == (
        "import cycle dynod.control.apps -> dynod.control.releases -> dynod.control.slugs -> "
        "dynod.control.apps (dynod/control/apps.py:1: dynod.control.apps imports "
        "dynod.control.releases; dynod/control/releases.py:2: dynod.control.releases imports "
        "dynod.control.slugs; dynod/control/slugs.py:1: dynod.control.slugs imports "
        "dynod.control.apps)")


def test_a_function_local_import_is_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dynod/cli/deploy.py": "",
        "dynod/cli/gitpush.py": ("import os\n\n\ndef shell() -> None:\n"
                                 "    from dynod.cli import deploy\n    import json\n"),
    })
    (found,) = check(root)
    assert (found.rule, found.target) == ("function-local", "dynod.cli.deploy")
    assert found.text.startswith("dynod/cli/gitpush.py:5: dynod.cli.gitpush imports "
                                 "dynod.cli.deploy: no function-local imports")


def test_an_os_library_outside_its_module_is_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dynod/system/processes.py": "import subprocess\n",
        "dynod/build/stacks.py": "def f() -> None:\n    import subprocess\n",
        "dynod/system/mounts.py": "from ctypes import CDLL\n",
        "dynod/system/libc.py": "import ctypes.util\n",
    })
    found = sorted(v.text for v in check(root))
    assert found == [
        "dynod/build/stacks.py:2: dynod.build.stacks imports subprocess: only "
        "dynod.system.processes may import subprocess (one module per OS interface)",
        "dynod/system/mounts.py:1: dynod.system.mounts imports ctypes: only "
        "dynod.system.libc may import ctypes (one module per OS interface)",
    ]


def test_generated_code_only_in_api_and_cli(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dynod/v1/apps_pb2.py": "",
        "dynod/control/apps.py": "from dynod.v1 import apps_pb2\n",
        "dynod/cli/apps.py": "from dynod.v1.apps_pb2 import App\n",
    })
    assert [(v.module, v.rule) for v in check(root)] == [("dynod.control.apps", "generated")]


def test_a_process_wide_instance_is_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dynod/build/pipeline.py": (
            "import threading\n\n"
            "TYPES = {'web': 1}\nORDER = ('a', 'b')\n_running: set[str] = set()\n"
            "_lock = threading.Lock()\n_installed = None\n\n\n"
            "def install(x: object) -> None:\n    global _installed\n    _installed = x\n"),
    })
    assert sorted((v.target, v.text.split(":")[1]) for v in check(root)) == [
        ("_installed", "11"), ("_lock", "6"), ("_running", "5")]


def test_addons_import_only_model_errors_and_system(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "dynod/addons/manager.py": ("from dynod.model import addons\n"
                                    "from dynod.system import processes\n"
                                    "from dynod.store import sqlite\n"),
        "dynod/model/addons.py": "",
        "dynod/system/processes.py": "",
        "dynod/store/sqlite.py": "",
        "dynod/control/addons.py": "from dynod.addons import manager\n",
    })
    found = sorted(v.text for v in check(root))
    assert found == [
        "dynod/addons/manager.py:3: dynod.addons.manager imports dynod.store.sqlite: "
        "addons/ imports nothing of dynod but addons, errors, model, system",
        "dynod/control/addons.py:1: dynod.control.addons imports dynod.addons.manager: "
        "control/ never imports addons/",
    ]


def test_a_long_module_is_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"dynod/router/haproxy.py": "pass\n" * (MAX_LINES + 1)})
    assert [v.text for v in check(root)] == [
        f"dynod/router/haproxy.py: {MAX_LINES + 1} lines; split it (modules stay under "
        f"{MAX_LINES} lines)"]
