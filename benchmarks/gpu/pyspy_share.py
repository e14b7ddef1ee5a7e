"""The plugin's share of each sampled process's CPU, from py-spy's raw stacks (``pyspy_share.sh`` writes them).

    python3 benchmarks/gpu/pyspy_share.py DIR [--top 12] [--json FILE]

Each ``<role>_<pid>.txt`` in DIR holds py-spy's collapsed stacks (``frame;frame;... count``, outermost
first; idle samples left out, and those whose innermost frame is a wait: ``WAITS``, so every sample is CPU). A sample is the plugin's own work when a frame of
``vllm_w2ext`` is on its stack and no frame of vLLM or torch lies inside (deeper than) the innermost such
frame: a hook's ``pre`` and ``post`` and everything they call outside vLLM count; vLLM's method running
under our wrapper (``hooked`` -> ``EngineCore.step`` -> ...) does not. A plugin frame that calls back into
vLLM (none on the step path does) would be counted as vLLM's: the share is a lower bound by that much.
For an export process every sample is the plugin's; its samples per second are the CPU it takes.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

THEIRS = re.compile(r"(^|[ (/])(vllm|torch)/")     # a frame in vLLM's or torch's files ("vllm_w2ext/" is not)
# Innermost frames of a thread that waits: py-spy's --nonblocking idle test misses some of these (a Python
# wait in a lock), so they are left out of every count, as the idle samples are.
WAITS = ("Event.wait", "Condition.wait", "Queue.get", "SimpleQueue.get", "select", "poll", "sleep", "accept")


def waiting(frames: list[str]) -> bool:
    return frames[-1].split(" (")[0] in WAITS


def read(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            out.append((stack.split(";"), int(n)))
    return out


def is_plugin(frames: list[str]) -> bool:
    ours = [i for i, f in enumerate(frames) if "vllm_w2ext" in f]
    return bool(ours) and not any(THEIRS.search(f) for f in frames[ours[-1] + 1:])


def share(stacks: list[tuple[list[str], int]], top: int = 12) -> dict:
    """Samples, the plugin's samples and where they are (the innermost plugin frame with one frame either
    side); with py-spy's ``--threads`` (a ``thread (0x..)`` outermost frame), the same per thread too."""
    total = plugin = 0
    engine_core = False
    where: collections.Counter = collections.Counter()
    threads: dict = collections.defaultdict(lambda: [0, 0])
    for frames, n in stacks:
        if waiting(frames):
            continue
        total += n
        engine_core = engine_core or any("run_busy_loop" in f and "v1/engine/core.py" in f for f in frames)
        thread = frames[0] if frames[0].startswith("thread ") else ""
        threads[thread][0] += n
        if is_plugin(frames):
            plugin += n
            threads[thread][1] += n
            last = max(i for i, f in enumerate(frames) if "vllm_w2ext" in f)
            where[" > ".join(f.split(" (")[0] for f in frames[max(last - 1, 0):last + 2])] += n
    out = {"engine_core": engine_core, "samples": total, "plugin_samples": plugin, "plugin_pct": _pct(plugin, total), "top": where.most_common(top)}
    if len(threads) > 1 or "" not in threads:
        out["threads"] = {t: {"samples": a, "plugin_samples": b, "plugin_pct": _pct(b, a)}
                          for t, (a, b) in sorted(threads.items(), key=lambda kv: -kv[1][0])}
    return out


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 3) if whole else None


def _proc(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, comm, command line) of a live process, from /proc."""
    try:
        base = Path(f"/proc/{pid}")
        cmd = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        comm = (base / "comm").read_text().strip()
        ppid = next(int(x.split()[1]) for x in (base / "status").read_text().splitlines() if x.startswith("PPid:"))
        return ppid, comm, cmd
    except (OSError, StopIteration, ValueError):
        return None


def tree(root: int, procs: dict[int, tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """The descendants of ``root`` worth sampling, as (pid, role, comm): ``front`` (the engine driver: vLLM's
    front end), ``export-of-<role>`` (an export process, named after the process it serves, its parent),
    and every other Python descendant of the front end by its comm (the EngineCore: ``VLLM::EngineCor``
    where vLLM could retitle it, else ``python3``; the analysis tells it by its frames)."""
    kids: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (ppid, _, _) in procs.items():
        kids[ppid].append(pid)
    role: dict[int, str] = {}
    out = []
    todo = sorted(kids[root])
    while todo:
        pid = todo.pop(0)
        ppid, comm, cmd = procs[pid]
        if "export_child" in cmd:
            r = f"export-of-{role.get(ppid, 'unknown')}"
        elif "engine_driver" in cmd and ppid == root:
            r = "front"
        elif "resource_tracker" in cmd or not cmd:
            r = ""
        elif "EngineCor" in comm or "EngineCore" in cmd:
            r = "engine"
        elif "VLLM::Worker" in comm or "VLLM::Worker" in cmd:
            r = "worker"
        else:
            r = "child-" + re.sub(r"[^A-Za-z0-9]+", "-", comm).strip("-")
        role[pid] = r or "skip"
        if r and r != "skip" and (ppid != root or r == "front"):
            out.append((pid, r, comm))
        todo.extend(sorted(kids[pid]))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, nargs="?")
    ap.add_argument("--tree", type=int, default=None, metavar="PID",
                    help="print 'pid role comm' for each process under PID worth sampling (pyspy_share.sh)")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if a.tree is not None:
        procs = {int(d.name): p for d in Path("/proc").iterdir() if d.name.isdigit() and (p := _proc(int(d.name)))}
        for pid, role, comm in tree(a.tree, procs):
            print(pid, role, comm)
        return 0
    doc = {}
    for p in sorted(a.dir.glob("*_*.txt")):
        s = doc[p.stem] = share(read(p), a.top)
        print(f"{p.stem}{' (EngineCore busy loop)' if s['engine_core'] else ''}: {s['samples']} samples, plugin {s['plugin_samples']} = {s['plugin_pct']} %")
        for t, v in list(s.get("threads", {}).items())[:4]:
            print(f"  {t}: {v['samples']} samples, plugin {v['plugin_samples']} = {v['plugin_pct']} %")
        for k, v in s["top"]:
            print(f"    {v:6d}  {k}")
    (a.json or a.dir / "share.json").write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
