"""What a dyno sees of cgroups (issue 20 item 3): only its own. From app alpha's web
dyno, a one-off dyno (``dynoctl run``, at two sizes) and its build (a buildpack's
bin/compile), /sys/fs/cgroup holds no other unit's cgroup (neither app bravo's running
dyno nor dynod's slices), /proc/self/cgroup says "/" as in a container, and the memory
limit reads where runtimes look for it (cgroup v2 ``memory.max``, v1
``memory.limit_in_bytes``), equal to the unit's ``MemoryMax=`` as systemd shows it on
the host.
"""

from __future__ import annotations

import re
import shlex

import pytest

from tests.integration.test_builds import push, setup_push, sh
from tests.integration.test_dynos import all_up, dynoctl
from tests.sandbox.machine import Machine

pytestmark = pytest.mark.integration

BUILDPACK = "/opt/cgview-bp"
# What a process sees: its cgroups, the top of /sys/fs/cgroup, anything of dynod's in the
# tree (its slices, other apps' dyno units), and its memory limit (v2, else v1).
VIEW = r"""#!/bin/sh
echo "view-cgroup=$(tr '\n' ' ' </proc/self/cgroup)"
echo "view-top=$(ls /sys/fs/cgroup | tr '\n' ' ')"
echo "view-dynod=$(find /sys/fs/cgroup -name 'dynod*' 2>/dev/null | head -n 5 | tr '\n' ' ')"
limit=$(cat /sys/fs/cgroup/memory.max 2>/dev/null ||
	cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null)
echo "view-limit=${limit:-none}"
"""
COMPILE = '#!/bin/sh\nsh "$1/view.sh"\n'
PROCFILE = "web: sh view.sh > /tmp/view.txt && cd /tmp && exec python3 -m http.server $PORT\n"
MIB = 1 << 20


def make_app(m: Machine, app: str) -> None:
    src = f"/tmp/src-{app}"
    sh(m, f"mkdir -p {src} && printf %s {shlex.quote(VIEW)} > {src}/view.sh && "
          f"printf %s {shlex.quote(PROCFILE)} > {src}/Procfile")
    setup_push(m, app, src)
    dynoctl(m, "buildpacks:set", "-a", app, BUILDPACK)


def view(text: str, where: str) -> dict[str, str]:
    found = dict(re.findall(r"view-(\w+)=(.*?) *$", text, re.MULTILINE))
    assert set(found) == {"cgroup", "top", "dynod", "limit"}, f"no view from the {where}:\n{text}"
    return found


def test_a_dyno_sees_only_its_own_cgroup_and_its_memory_limit(stack_machine: Machine) -> None:
    m = stack_machine
    sh(m, f"mkdir -p {BUILDPACK}/bin && printf '#!/bin/sh\\necho CgView\\n' > "
          f"{BUILDPACK}/bin/detect && printf %s {shlex.quote(COMPILE)} > {BUILDPACK}/bin/compile"
          f" && chmod +x {BUILDPACK}/bin/*")
    # Another app's dyno runs: its cgroup is there on the host for a dyno to find.
    make_app(m, "bravo")
    push(m, "bravo")
    all_up(m, "bravo", 1)
    host = sh(m, "ls -d /sys/fs/cgroup/memory/dynod.slice/dynod-bravo.slice/*.service "
                 "/sys/fs/cgroup/dynod.slice/dynod-bravo.slice/*.service 2>/dev/null", ok=False)
    assert "dynod-bravo-web" in host[1], host

    make_app(m, "alpha")
    got = {"build": view(push(m, "alpha"), "build")}
    web = all_up(m, "alpha", 1)[0]
    got["web"] = view(sh(m, f"curl -sS --max-time 30 http://{web['address']}:5000/view.txt")[1],
                      "web dyno")
    for size in ("standard-1x", "standard-2x"):
        out = m.exec(["dynoctl", "run", "-a", "alpha", "-s", size, "--no-tty", "sh view.sh"],
                     check=False, timeout=120)
        got[f"run {size}"] = view(out.stdout + out.stderr, f"one-off dyno ({size})")
    unit = sh(m, "systemctl list-units --plain --no-legend 'dynod-alpha-web*' | cut -d' ' -f1")[1]
    web_max = sh(m, f"systemctl show -p MemoryMax --value {unit.split()[0]}")[1].strip()

    # Heroku's sizes: the kill limit is twice the size's RAM (R15); builds get 2G.
    assert web_max == str(2 * 512 * MIB), web_max
    expected = {"build": str(2048 * MIB), "web": web_max,
                "run standard-1x": str(2 * 512 * MIB), "run standard-2x": str(2 * 1024 * MIB)}
    for where, seen in got.items():
        print(f"{where}: {seen}")
        assert seen["limit"] == expected[where], (where, seen)
        assert seen["dynod"] == "", (where, seen)  # no slice, no other unit in sight
        assert "dynod" not in seen["cgroup"] and "/" in seen["cgroup"], (where, seen)
        assert all(p.endswith(":/") for p in seen["cgroup"].split()), (where, seen)
        assert seen["top"], (where, seen)  # the hierarchies are there, not an empty tree
