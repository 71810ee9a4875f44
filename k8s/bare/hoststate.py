"""What the bare cluster could leave on the host, recorded before `up` and checked after `down`:

    python hoststate.py snapshot FILE             before the node starts
    python hoststate.py check FILE STATE_DIR      after it stopped: exit 1 and list what is left

Compared: the host's mounts, network namespaces (`ip netns` and /run/netns), iptables and
nftables rulesets (counters ignored), cgroup folders and the fixed paths the node mounts
over. Beside the snapshot, no process may still use the state folder (cmdline or cwd) or
sit in a network namespace other processes of the machine did not already use.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

FIXED_PATHS = ("/run/containerd", "/run/netns", "/var/lib/kubelet", "/var/lib/cni")


def _run(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _rules(text: str) -> list[str]:
    """Ruleset lines without comments and packet/byte counters."""
    lines = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        line = re.sub(r"\[\d+:\d+\]", "[0:0]", line)
        line = re.sub(r"counter packets \d+ bytes \d+", "counter", line)
        lines.append(line)
    return lines


def _cgroup_dirs() -> list[str]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fstype = fields[fields.index("-") + 1]
        if fstype in ("cgroup", "cgroup2"):
            root = Path(fields[4])
            found += [str(p) for p in root.iterdir() if p.is_dir()]
    return sorted(found)


def _netns_of_processes() -> set[str]:
    spaces = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            spaces.add(os.readlink(f"/proc/{pid}/ns/net"))
        except OSError:
            continue
    return spaces


def snapshot() -> dict:
    mounts = [" ".join(line.split()[3:5]) for line in
              Path("/proc/self/mountinfo").read_text().splitlines()]
    return {
        "mounts": sorted(mounts),
        "netns": sorted(_run("ip", "netns", "list").split()),
        "run_netns": sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else None,
        "iptables": _rules(_run("iptables-save")),
        "ip6tables": _rules(_run("ip6tables-save")),
        "nftables": _rules(_run("nft", "list", "ruleset")),
        "cgroups": _cgroup_dirs(),
        "paths": {p: os.path.exists(p) for p in FIXED_PATHS},
        "process_netns": sorted(_netns_of_processes()),
    }


def _processes_using(cache: str) -> list[str]:
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cache in cmdline or cwd.startswith(cache):
            left.append(f"pid {pid}: {cmdline.strip()[:160]}")
    return left


def leftovers(before: dict, after: dict, cache: str) -> list[str]:
    found = []
    for key in ("mounts", "netns", "iptables", "ip6tables", "nftables", "cgroups"):
        added = sorted(set(after[key]) - set(before[key]))
        found += [f"{key}: {item}" for item in added]
    if after["run_netns"] != before["run_netns"]:
        found.append(f"/run/netns: {before['run_netns']} before, {after['run_netns']} now")
    found += [f"path left: {p}" for p, there in after["paths"].items()
              if there and not before["paths"].get(p)]
    # a network namespace still held by a process that was not there before
    new_spaces = set(after["process_netns"]) - set(before["process_netns"])
    found += [f"network namespace {ns} still in use" for ns in sorted(new_spaces)]
    found += _processes_using(cache)
    return found


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "snapshot":
        Path(argv[2]).write_text(json.dumps(snapshot(), indent=1))
        return 0
    if len(argv) == 4 and argv[1] == "check":
        before = json.loads(Path(argv[2]).read_text())
        found = leftovers(before, snapshot(), argv[3])
        for item in found:
            print(f"left behind: {item}", file=sys.stderr)
        return 1 if found else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
