"""The plugin's share of each sampled process's CPU, from py-spy's raw stacks (``pyspy_share.sh`` writes them).

    python3 benchmarks/gpu/pyspy_share.py DIR [--top 12] [--json FILE]

Each ``<role>_<pid>.txt`` in DIR holds py-spy's collapsed stacks (``frame;frame;... count``, outermost
first; idle samples left out, and those whose innermost frame is a wait: ``WAITS``, so every sample is CPU). A sample is the plugin's own work when a frame of
``vllm_w2ext`` is on its stack and no frame of vLLM or torch lies inside (deeper than) the innermost such
frame: a hook's ``pre`` and ``post`` and everything they call outside vLLM count; vLLM's method running
under our wrapper (``hooked`` -> ``EngineCore.step`` -> ...) does not. A plugin frame that calls back into
vLLM (none on the step path does) would be counted as vLLM's: the share is a lower bound by that much.
For an export process every sample is the plugin's; its samples per second are the CPU it takes.

A hand-off is not the plugin's either: a sample whose innermost frame is a hook wrapper at the line that
calls vLLM's method (``fn(instance, *args, **kwargs)``: ``handoff_lines`` of the sampled tree's
``hooks/runner.py``, which pyspy_share.sh copies into DIR as runner.py.txt (or one in DIR's parent);
this tree's if there is none). CPython moves its current
frame back to the caller before it frees a returning frame's locals, so vLLM's own work of tearing down
its method's frame (its scheduler output, its batch) is sampled in the caller, which under a hook is the
wrapper's call line; stock vLLM pays it in its own caller. Counted apart (``handoff_samples``): on the
H200, 4-layer model, batch 1, they were ~60 % of what the first version of this rule called the plugin's.

A torn stack is not the plugin's either (``torn``, counted apart as ``torn_samples``). py-spy ``--nonblocking``
reads a running thread's frames innermost first, each caller after it, so a caller's slot may already hold a later
call. On the EngineCore's thread, vLLM puts the step's outputs on a queue right after the step, and the next step's
first hook reuses that slot. So a sample may show a plugin frame directly over a frame of the standard library's
``queue`` module, at a line that does not name the queue's method: 20 of 66 plugin samples on the main thread of a
4-layer engine at batch 1 (``results/h100/issue19_current``). The line's text comes from the sampled tree
(``--source``, default this tree: pyspy_share.sh runs this on the device, in the tree it sampled); a line it cannot
read is not called torn. The converse, a plugin frame under a queue frame (11 samples there), is the plugin's: its
frame was read first. The first version of this rule took those out too.
On a planted case, ``--nonblocking`` read a short, frequent plugin call's share 4-10x too low, against sampling
with the process stopped (``benchmarks/pyspy_torn_check.py``, ``results/cpu/pyspy_torn_check``). pyspy_share.sh now
stops the process for each stack, which reads consistent stacks: none of them is torn.

With the run's record and the sampling window (``window.json``, written by pyspy_share.sh), each share is
also put in µs per engine step: plugin samples / py-spy's good ticks (rate x the sampled seconds, less the
failed ticks, ``Errors:`` in ``<name>.spy.log``; ``ticks_ok``) x the wall time of one step in that window (a latency window: avg latency / output length; a throughput
window: the throughput phase's time / its engine steps, from the plugin's metrics; a window across the latency
task's end: its seconds over the steps of both it holds, ``step_seconds``). Where the run's scrape file lies in DIR
(``*.prom.gz``, pyspy_share.sh copies it there), the window's own steps are read from it instead
(``window_steps``): its seconds over the executed steps inside it, and the requests per step there.

A sampler that stops the process for each stack slows it: stopping and resuming every thread of a fully traced
EngineCore took its batch-1 step from ~1.6 to ~4-6 ms at 400 Hz on an H100 host (``results/h100/issue19_c0b6aa4``),
and a stand-in with 40 idle threads ~10x on the 2-core CPU machine (``benchmarks/pyspy_known_cost.py``). Ticks x the
window's step then overstates the plugin's work by that factor (the stopped time is nobody's CPU). Two conversions
do better, each checked against the planted case's known answer (``results/cpu/pyspy_known_cost``: ticks x the
unslowed step read 0.75-1.06 of it; thread CPU 0.82-1.00 where the sampler slowed the process ~2x and 1.13-1.62
where it slowed it ~10x, as a running thread pays more for each stop than the idle threads whose median is taken
off):
- thread CPU (where window.json holds each thread's CPU time in the window, which pyspy_share.sh records since the
  forty-fourth session): each thread's share of its own samples x its CPU time in the window, less what the stops
  cost every thread (``stop_cost_ns``), over the window's steps (``cpu_per_step_us``). It also counts a thread that is
  all the plugin's (the export thread) by its CPU rather than by its few samples;
- ticks x the unslowed step (``--stopped`` for a window.json without the key): the share of the ticks x the step's
  wall time outside the window, from the scrapes around a latency window (``pace_around``) or ``--step-ms``.
``--ticks`` reads a window by ticks even where it has thread CPU readings, to compare the two.
"""
from __future__ import annotations

import argparse
import collections
import functools
import gzip
import json
import re
import sys
from pathlib import Path

THEIRS = re.compile(r"(^|[ (/])(vllm|torch)/")     # a frame in vLLM's or torch's files ("vllm_w2ext/" is not)
# Innermost frames of a thread that waits: py-spy's --nonblocking idle test misses some of these (a Python
# wait in a lock), so they are left out of every count, as the idle samples are.
WAITS = ("Event.wait", "Condition.wait", "Queue.get", "SimpleQueue.get", "select", "poll", "sleep", "accept",
         "Popen.wait", "Popen._wait", "Popen._try_wait", "Thread.join", "Thread._wait_for_tstate_lock")
RUNNER_REL = "vllm_w2ext/hooks/runner.py"
ROOT = Path(__file__).resolve().parents[2]      # this tree
PACE_SPAN_S = 10.0      # seconds each side of a stopped window read for the step time the sampler did not slow,
PACE_GAP_S = 2.0        # this far from its ends (two scrape intervals)
STACKS_FILE = re.compile(r".+_\d+\.txt(\.gz)?$")   # a process's stacks, "<role>_<pid>.txt[.gz]" (not share_*.txt)
THREAD_KEY = re.compile(r"thread \((\d+)\)")     # a py-spy thread's key in ``share``: "thread (TID): name"
RUNNER = ROOT / RUNNER_REL
RUNNER_FRAME = re.compile(r"\(" + re.escape(RUNNER_REL) + r":(\d+)\)$")   # a frame of the runner, its line


def handoff_lines(source: str) -> frozenset[int]:
    """The lines of the hook runner that call the wrapped vLLM method (the sampled run's tree is this one)."""
    return frozenset(i for i, line in enumerate(source.splitlines(), 1)
                     if "fn(instance, *args, **kwargs)" in line or "wrapped(*args, **kwargs)" in line)


def front_frames(source: str) -> tuple[str, ...]:
    """How a hook's front looks at its calls into vLLM's method, ``(FILE:LINE)`` each, from the runner's own
    ``FRONT_FILE`` and ``FRONT_HANDOFF_LINES`` (a runner of before the fourteenth session: gated hooks only,
    ``FRONT_HANDOFF_LINE``, one line); () for a runner that makes no fronts."""
    f = re.search(r'^FRONT_FILE = "([^"]+)"', source, re.M)
    many = re.search(r"^FRONT_HANDOFF_LINES = \(([\d, ]+)\)", source, re.M)
    one = re.search(r"^FRONT_HANDOFF_LINE = (\d+)", source, re.M)
    lines = [int(x) for x in many.group(1).split(",") if x.strip()] if many else [int(one.group(1))] if one else []
    return tuple(f"({f.group(1)}:{n})" for n in lines) if f else ()


RUNNER_SOURCE = RUNNER.read_text() if RUNNER.exists() else ""
HANDOFF_LINES = handoff_lines(RUNNER_SOURCE)
FRONT_FRAMES = front_frames(RUNNER_SOURCE)
SAMPLED_RUNNER = "runner.py.txt"     # the sampled tree's hooks/runner.py, kept with its stacks (pyspy_share.sh)


def is_handoff(frames: list[str], lines: frozenset[int] = HANDOFF_LINES,
               fronts: tuple[str, ...] = FRONT_FRAMES) -> bool:
    m = RUNNER_FRAME.search(frames[-1])
    return (bool(m) and int(m.group(1)) in lines) or frames[-1].endswith(fronts)


def waiting(frames: list[str]) -> bool:
    return frames[-1].split(" (")[0] in WAITS


def read(path: Path) -> list[tuple[list[str], int]]:
    out = []
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            out.append((stack.split(";"), int(n)))
    return out


def _ours(frame: str) -> bool:
    """A frame of the plugin; the lab's engine driver (``vllm_w2ext/lab/``) is the application that drives
    vLLM in these runs, as a user's script would, and is not the plugin."""
    return "vllm_w2ext" in frame and "vllm_w2ext/lab/" not in frame


QUEUE_FRAME = re.compile(r"\((?:[^()]*/)?queue\.py:\d+\)$")     # a frame of the standard library's queue module
FRAME_AT = re.compile(r"^(?P<fn>.+) \((?P<file>[^()]+):(?P<line>\d+)\)$")


def source_lines(root: Path):
    """``line(file, n)``: the text of a plugin file's line n in the tree at ``root``, or None."""
    cache: dict = {}

    def line(file: str, n: int) -> str | None:
        if file not in cache:
            path = root / file
            cache[file] = path.read_text().splitlines() if path.is_file() else None
        text = cache[file]
        return text[n - 1] if text is not None and 0 < n <= len(text) else None
    return line


def torn(frames: list[str], line) -> bool:
    """A plugin frame directly over a queue frame at a line that does not name the queue's method (``line``:
    ``source_lines``). py-spy reads the innermost frame first and each caller after it (``get_stack_trace``: the
    frame, then ``frame.back()``), so an outer frame can be newer than the ones inside it, never older: the queue
    call was running when the sample began, and the plugin frame over it is what that slot held by the time it was
    read. A plugin frame *under* a queue frame is the other way round, and is the plugin's: the plugin's frame was
    running first, and the queue call reused its caller's slot afterwards."""
    for a, b in zip(frames, frames[1:]):
        if _ours(a) and QUEUE_FRAME.search(b) and (m := FRAME_AT.match(a)):
            text = line(m["file"], int(m["line"]))
            method = b.split(" (")[0].rsplit(".", 1)[-1]
            if text is not None and not re.search(rf"\b{re.escape(method)}\b", text):
                return True
    return False


def _plugin_frame(frames: list[str]) -> int | None:
    """The index of the innermost plugin frame when no frame of vLLM or torch lies deeper, else None."""
    last = next((i for i in range(len(frames) - 1, -1, -1) if _ours(frames[i])), None)
    if last is None or any(THEIRS.search(f) for f in frames[last + 1:]):
        return None
    return last


def share(stacks: list[tuple[list[str], int]], top: int = 12, lines: frozenset[int] = HANDOFF_LINES,
          fronts: tuple[str, ...] = FRONT_FRAMES, source=None) -> dict:
    """Samples, the plugin's samples and where they are (the innermost plugin frame with one frame either
    side); with py-spy's ``--threads`` (a ``thread (0x..)`` outermost frame), the same per thread too.
    ``source``: ``source_lines`` of the sampled tree, to tell torn stacks (None: none is)."""
    total = plugin = handoff = torn_n = 0
    engine_core = False
    where: collections.Counter = collections.Counter()
    threads: dict = collections.defaultdict(lambda: [0, 0, 0, 0])
    for frames, n in stacks:
        if waiting(frames):
            continue
        total += n
        engine_core = engine_core or any("run_busy_loop" in f and "v1/engine/core.py" in f for f in frames)
        thread = frames[0] if frames[0].startswith("thread ") else ""
        threads[thread][0] += n
        if is_handoff(frames, lines, fronts):
            handoff += n
            threads[thread][2] += n
        elif (last := _plugin_frame(frames)) is not None and source is not None and torn(frames, source):
            torn_n += n
            threads[thread][3] += n
        elif last is not None:
            plugin += n
            threads[thread][1] += n
            where[" > ".join(f.split(" (")[0] for f in frames[max(last - 1, 0):last + 2])] += n
    out = {"engine_core": engine_core, "samples": total, "plugin_samples": plugin, "plugin_pct": _pct(plugin, total),
           "handoff_samples": handoff, "torn_samples": torn_n, "top": where.most_common(top)}
    if len(threads) > 1 or "" not in threads:
        out["threads"] = {t: {"samples": a, "plugin_samples": b, "plugin_pct": _pct(b, a), "handoff_samples": c,
                              "torn_samples": d}
                          for t, (a, b, c, d) in sorted(threads.items(), key=lambda kv: -kv[1][0])}
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
    ap.add_argument("--source", type=Path, default=ROOT,
                    help="the sampled tree's root, for the lines torn stacks are told by (default: this tree)")
    ap.add_argument("--cpu", type=int, nargs="+", metavar="PID",
                    help="print each thread's CPU time so far of these processes as JSON (pyspy_share.sh)")
    ap.add_argument("--stopped", action="store_true",
                    help="the window was sampled with the process stopped for each stack (window.json says so "
                         "where pyspy_share.sh wrote it after the forty-fourth session)")
    ap.add_argument("--step-ms", type=float, default=None,
                    help="a stopped window without thread CPU readings: the engine step's wall time where no "
                         "sampler stopped the process (default: the scrapes around a latency window, pace_around)")
    ap.add_argument("--ticks", action="store_true",
                    help="convert by ticks even where window.json holds thread CPU readings (to compare the two)")
    a = ap.parse_args()
    if a.cpu:
        print(json.dumps(thread_cpu_ns(a.cpu)))
        return 0
    if a.tree is not None:
        procs = {int(d.name): p for d in Path("/proc").iterdir() if d.name.isdigit() and (p := _proc(int(d.name)))}
        for pid, role, comm in tree(a.tree, procs):
            print(pid, role, comm)
        return 0
    window = json.loads((a.dir / "window.json").read_text()) if (a.dir / "window.json").exists() else None
    run = run_record(a.dir, window)
    scrape = min(a.dir.glob("*.prom.gz"), default=None)
    inside = window_steps(scrape, window) if scrape and window else None
    step = (inside[0], "window") if inside else step_seconds(run, window) if run and window else None
    # the hand-off lines of the runner that was sampled (pyspy_share.sh keeps a copy beside the stacks; runs
    # of one tree may share one in the folder above): any edit to hooks/runner.py since moves them
    sampled = next((d / SAMPLED_RUNNER for d in (a.dir, a.dir.parent) if (d / SAMPLED_RUNNER).exists()), None)
    source = sampled.read_text() if sampled else RUNNER_SOURCE
    lines, fronts = handoff_lines(source), front_frames(source)
    src = source_lines(a.source)
    shares = {p.name.split(".txt")[0]: share(read(p), a.top, lines, fronts, src)
              for p in sorted(a.dir.iterdir()) if STACKS_FILE.match(p.name)}
    if step and not any(s["engine_core"] for s in shares.values()):
        # no sample of the EngineCore's busy loop: the engine was not stepping yet (a cold machine compiles
        # kernels well into the first latency iterations), so a step rate would not describe the samples
        print("no EngineCore busy loop in the samples: the window is not steady stepping; no per-step figures")
        step = None
    stopped = a.stopped or bool(window and window.get("stopped"))
    cpu = {} if a.ticks else (window or {}).get("cpu") or {}
    # the latency task's end where the window lies inside that task (the scrapes around it are then its steps)
    lat_done = ((run or {}).get("results", {}).get("latency") or {}).get("done_t")
    latency_until = lat_done if window and lat_done and window["end"] <= lat_done else None
    unslowed = None                                # a stopped window's reference step (no thread CPU readings)
    if step and stopped and not cpu:
        if a.step_ms:
            unslowed = (a.step_ms / 1e3, "--step-ms")
        elif scrape and latency_until:
            pace = pace_around(scrape, window, latency_until)
            unslowed = (pace, "the scrapes around the window") if pace else None
    conversion = ("thread CPU" if cpu else "ticks x the unslowed step" if unslowed else
                  "ticks x the window's step, SLOWED by the stopping sampler: too high" if stopped else "ticks x the window's step")
    doc: dict = {"window": window, "run": run and run["run"], "stopped": stopped, "conversion": conversion,
                 "unslowed_step": unslowed and {"seconds": unslowed[0], "from": unslowed[1]},
                 "step": step and {"seconds": step[0], "phase": step[1],
                                   "requests_per_step": inside[1] if inside else None},
                 "handoff_lines": sorted(lines), "front_handoff": list(fronts),
                 "handoff_lines_from": str(sampled.relative_to(a.dir.parent)) if sampled else "this tree",
                 "torn_lines_from": "this tree" if a.source == ROOT else "--source"}
    for name, s in shares.items():
        doc[name] = s
        spy = a.dir / f"{name}.spy.log"
        s["spy_errors"], s["spy_samples"] = spy_counts(spy.read_text() if spy.exists() else "")
        if step and cpu:                           # each thread's share of its samples x its CPU per step
            steps = (window.get("ends", {}).get(name, window["end"]) - window["start"]) / step[0]
            threads, ns = s.get("threads", {}), cpu.get(name.rsplit("_", 1)[-1], {})
            stop_ns = stop_cost_ns(threads, ns)
            s["stop_cost_ms"] = round(stop_ns / 1e6, 1)
            per = cpu_per_step_us(threads, ns, steps, stop_ns)
            for key, v in threads.items():
                v["us_per_step"] = per.get(key)
            s["us_per_step"] = round(sum(per.values()), 2)
        elif step:
            busiest = max((v["samples"] for v in s.get("threads", {}).values()), default=s["samples"])
            ticks = ticks_ok(window, name, s["spy_errors"], busiest)
            ref = unslowed[0] if unslowed else step[0]
            s["us_per_step"] = per_step_us(s["plugin_samples"], ticks, ref)
            s["handoff_us_per_step"] = per_step_us(s["handoff_samples"], ticks, ref)
            for v in s.get("threads", {}).values():
                v["us_per_step"] = per_step_us(v["plugin_samples"], ticks, ref)
        per = f", {s['us_per_step']} us per {step[1]} step" if step else ""
        print(f"{name}{' (EngineCore busy loop)' if s['engine_core'] else ''}: {s['samples']} samples, plugin "
              f"{s['plugin_samples']} = {s['plugin_pct']} %{per}; hand-offs {s['handoff_samples']}; torn "
              f"{s['torn_samples']}; py-spy errors {s['spy_errors']}"
              + (f"; the stops cost each thread {s['stop_cost_ms']} ms of CPU" if "stop_cost_ms" in s else ""))
        for t, v in list(s.get("threads", {}).items())[:4]:
            print(f"  {t}: {v['samples']} samples, plugin {v['plugin_samples']} = {v['plugin_pct']} %"
                  + (f", {v['us_per_step']} us per step" if step else ""))
        for k, v in s["top"]:
            print(f"    {v:6d}  {k}")
    if step:
        doc["vllm_processes_us_per_step"] = round(sum(v["us_per_step"] for k, v in shares.items()
                                                      if not k.startswith("export-of")), 2)
        where = "the window's own steps" if inside else f"{step[1]} window"
        reqs = f", {inside[1]:.0f} requests per step" if inside and inside[1] is not None else ""
        ref = f"; unslowed step {unslowed[0] * 1e3:.3f} ms from {unslowed[1]}" if unslowed else ""
        print(f"vLLM's processes together: {doc['vllm_processes_us_per_step']} us of plugin work per engine step"
              f" ({where}, {step[0] * 1e3:.3f} ms per step{reqs}; {conversion}{ref})")
    if scrape and window:
        # target 3: the plugin's own counters beside the samples; outside a latency window (no sampler slowing the
        # process, the reference the samples' ticks x unslowed step reads against), and inside the window
        doc["self_cost_counters"] = {
            "outside": counters_per_step(scrape, around(window, latency_until)) if latency_until else None,
            "inside": counters_per_step(scrape, [(window["start"], window["end"])])}
        for where, c in doc["self_cost_counters"].items():
            if c:
                print(f"the plugin's own counters {where} the window, us per engine step: " + "; ".join(
                    f"{role} " + ", ".join(f"{k} {v}" for k, v in cs.items()) for role, cs in c.items()))
    (a.json or a.dir / "share.json").write_text(json.dumps(doc, indent=1))
    return 0


def spy_counts(log: str) -> tuple[int | None, int | None]:
    """(errors, samples) from py-spy's closing line ``... Samples: N Errors: M``."""
    m = re.search(r"Samples: (\d+) Errors: (\d+)", log)
    return (int(m.group(2)), int(m.group(1))) if m else (None, None)


def run_record(d: Path, window: dict | None) -> dict | None:
    """The record of the run the window sampled: overhead_run's ``*_plugin.json`` in D that started last before
    the window (a reused run folder can leave older records beside it)."""
    recs = [json.loads(p.read_text()) for p in d.glob("*_plugin.json")]
    if window:
        recs = [r for r in recs if r.get("started", 0) <= window["start"]]
    return max(recs, key=lambda r: r.get("started", 0), default=None)


def step_seconds(run: dict, window: dict) -> tuple[float, str] | None:
    """Wall seconds of one engine step in the window: a latency window (inside the latency task) takes the
    average latency over the output length; a throughput window (after the latency task) the throughput
    task's time over its engine steps (the plugin's counter at the end less the count at the latency task's
    end, whose last scrape lags: the latency steps after that scrape are taken off at the latency step rate).
    A window across the latency task's end (a faster host than ``WAIT_S`` was set for) takes its seconds over
    the steps it holds: the latency steps up to that end at the latency rate, then the throughput task's in
    proportion to the part of it inside the window; the phase names the window's latency share, as its
    per-step figures average a batch-1 step with the throughput task's larger ones."""
    res, lat_task = run.get("results", {}), next((t for t in run.get("tasks", []) if t["kind"] == "latency"), None)
    lat, thr = res.get("latency"), res.get("throughput")
    if not lat or not lat_task:
        return None
    lat_step, lat_done = lat["value"] / lat_task["output_len"], lat["done_t"]
    start, end = window["start"], window["end"]
    if end <= lat_done:
        return lat_step, "latency"
    sc = run.get("self_cost") or {}
    if not thr or "at_latency_done" not in sc or thr["done_t"] <= lat_done:
        return None
    thr_steps = (sum(sc["final"].get("engine_steps", {}).values()) - sum(sc["at_latency_done"].get("engine_steps", {}).values())
                 - max(lat_done - sc["at_latency_done_t"], 0) / lat_step)
    if thr_steps <= 0:
        return None
    if start >= lat_done:
        return (thr["done_t"] - lat_done) / thr_steps, "throughput"
    lat_part = (lat_done - start) / lat_step
    thr_part = thr_steps * (min(end, thr["done_t"]) - lat_done) / (thr["done_t"] - lat_done)
    return (end - start) / (lat_part + thr_part), f"mixed ({100 * (lat_done - start) / (end - start):.0f} % latency)"


@functools.lru_cache(maxsize=4)
def scrape_points(scrape: Path) -> list[tuple]:
    """[(time, executed steps, requests-per-step histogram's sum, its count)] of each scrape of the run's file, read
    once per file (``window_steps`` and ``pace_around`` both read it; the list is not to be changed)."""
    sys.path.insert(0, str(ROOT))
    from vllm_w2ext.analysis.metrics.scrapes import (BATCH_REQUESTS, STEPS, read_scrapes, run_scrapes,
                                                     series_samples, total)
    names = (STEPS, BATCH_REQUESTS + "_sum", BATCH_REQUESTS + "_count")
    points = []
    for t, text in run_scrapes(read_scrapes(str(scrape))):
        ss = series_samples(text, names)
        points.append((t, total(ss, STEPS, executed="true"), total(ss, names[1]), total(ss, names[2])))
    return points


def window_steps(scrape: Path, window: dict) -> tuple[float, float | None] | None:
    """(wall seconds per engine step, requests per step) inside the window, from the run's scrape file: the
    executed-step counter and the requests-per-step histogram's sum and count, each read at the window's start and
    end by linear interpolation between the scrapes around it. None where the scrapes do not span the window or no
    step ran in it; requests None where the histogram counted none there."""
    points = scrape_points(scrape)
    start, end = (at(points, window[k]) for k in ("start", "end"))
    if start is None or end is None or end[0] <= start[0]:
        return None
    counted = end[2] - start[2]
    seconds = (window["end"] - window["start"]) / (end[0] - start[0])
    return seconds, (end[1] - start[1]) / counted if counted > 0 else None


def pace_around(scrape: Path, window: dict, until: float, span: float = PACE_SPAN_S,
                gap: float = PACE_GAP_S) -> float | None:
    """Wall seconds per engine step just outside the window, where no sampler stopped the process: ``span``
    seconds ending ``gap`` before its start and those starting ``gap`` after its end, up to ``until`` (the end of
    the task it samples, the latency task's for a latency window), from the run's scrape file (the gap keeps the
    scrape interval that straddles an end, read as linear, out); None where the scrapes hold neither span or no
    step ran in them. The reference step of a stopped window's latency task (``unslowed``)."""
    points = scrape_points(scrape)
    seconds = steps = 0.0
    for t0, t1 in around(window, until, span, gap):
        n = steps_between(points, t0, t1)
        if n:
            seconds += t1 - t0
            steps += n
    return seconds / steps if steps else None


# The plugin's own self-cost counters (issue #19's target 3), per role, read beside the samples
SELF_COST = (("hooks_self", "vllm_w2ext_hook_self_seconds_total"), ("hooks_cpu", "vllm_w2ext_hook_cpu_seconds_total"),
             ("hooks_direct", "vllm_w2ext_hook_direct_seconds_total"),
             ("export_thread_cpu", "vllm_w2ext_export_thread_cpu_seconds_total"))


@functools.lru_cache(maxsize=4)
def counter_points(scrape: Path) -> tuple[tuple[str, ...], list[tuple]]:
    """(keys, [(time, executed steps, counter per key...)]) of each scrape of the run's file: the keys are
    "role:counter" of ``SELF_COST`` for every role the file names (not to be changed: cached)."""
    sys.path.insert(0, str(ROOT))
    from vllm_w2ext.analysis.metrics.scrapes import STEPS, read_scrapes, run_scrapes, series_samples, total
    names = (STEPS, *(m for _, m in SELF_COST))
    scrapes = [(t, series_samples(text, names)) for t, text in run_scrapes(read_scrapes(str(scrape)))]
    roles = sorted({lab.get("role", "") for _, ss in scrapes for n, lab, _ in ss if n != STEPS})
    keys = tuple(f"{r}:{k}" for r in roles for k, _ in SELF_COST)
    return keys, [(t, total(ss, STEPS, executed="true"),
                   *(total(ss, m, role=r) for r in roles for _, m in SELF_COST)) for t, ss in scrapes]


def counters_per_step(scrape: Path, spans) -> dict:
    """{role: {counter: us per executed engine step}} of the plugin's self-cost counters over ``spans`` ([(t0, t1)],
    pooled), read as ``at`` reads the step counter; {} where no span holds a step. The counters come from the
    processes' metric snapshots (every ~1 s), so a span's ends lag by up to a snapshot interval."""
    keys, points = counter_points(scrape)
    steps, grown = 0.0, [0.0] * len(keys)
    for t0, t1 in spans:
        a, b = at(points, t0), at(points, t1)
        if t1 <= t0 or a is None or b is None or b[0] <= a[0]:
            continue
        steps += b[0] - a[0]
        grown = [g + (y - x) for g, x, y in zip(grown, a[1:], b[1:])]
    out: dict = {}
    for key, g in zip(keys, grown):
        if steps:
            role, name = key.split(":", 1)
            out.setdefault(role, {})[name] = round(g / steps * 1e6, 2)
    return out


def around(window: dict, until: float, span: float = PACE_SPAN_S, gap: float = PACE_GAP_S) -> list[tuple]:
    """The spans just outside a window that ``pace_around`` reads: ``span`` seconds ending ``gap`` before its start
    and those starting ``gap`` after its end, up to ``until``."""
    start, end = window["start"] - gap, window["end"] + gap
    return [(start - span, start), (end, min(end + span, until))]


def steps_between(points: list[tuple], t0: float, t1: float) -> float | None:
    """The first counter of ``points`` ([(time, counter, ...)], ``at``) from ``t0`` to ``t1``; None where the points do
    not cover both, ``t1`` is not after ``t0`` or the counter did not grow."""
    a, b = at(points, t0), at(points, t1)
    return b[0] - a[0] if t1 > t0 and a is not None and b is not None and b[0] > a[0] else None


def at(points: list[tuple], t: float) -> tuple | None:
    """The counters of ``points`` ([(time, counter, ...)] in time order) at time ``t``, linear between the two
    points around it; None outside them."""
    for (t0, *c0), (t1, *c1) in zip(points, points[1:]):
        if t0 <= t <= t1:
            f = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
            return tuple(a + f * (b - a) for a, b in zip(c0, c1))
    return None


def ticks_ok(window: dict, name: str, errors: int | None, busiest: int) -> float:
    """py-spy's ticks in the window that gave a stack: rate x the process's sampled seconds (to its own end,
    ``window["ends"]``, where it exited early), less the failed ones (``Errors``, one per failed tick), and
    never fewer than the busiest thread's samples (one per tick at most): where a window's end is only
    known roughly, the EngineCore's main thread, on CPU ~97 % of the ticks in its busy loop, is the clock. A sampler
    that stops the process for each stack can fall behind its rate (many threads to stop, few cores: on the
    planted case of ``benchmarks/pyspy_known_cost.py``, 6,000 stacks in a 31 s run of a 15 s window at 400 Hz); then
    rate x seconds is too many, and only the thread CPU conversion (``cpu_per_step_us``) holds. py-spy's own
    ``Samples`` count is of the stacks it kept, idle ones left out: not its ticks."""
    end = window.get("ends", {}).get(name, window["end"])
    return max(window["rate"] * (end - window["start"]) - (errors or 0), busiest)


def per_step_us(plugin_samples: int, ticks: float, step_s: float) -> float | None:
    """The plugin's wall time per engine step on the sampled thread(s): its share of the ticks x one step."""
    return round(1e6 * plugin_samples / ticks * step_s, 2) if ticks > 0 else None


def thread_cpu_ns(pids) -> dict:
    """{pid: {tid: ns}}: each thread's time on a CPU so far, the first field of /proc/PID/task/TID/schedstat
    (nanoseconds; a stopped thread's time does not grow), for the processes of ``pids`` that still run."""
    out: dict = {}
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for t in tasks:
            try:
                out.setdefault(str(pid), {})[t.name] = int((t / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return out


def cpu_in_window(start: dict, ends: dict) -> dict:
    """{pid: {tid: ns}} of each thread's CPU between the two snapshots of ``thread_cpu_ns`` (``ends``: each
    process's own, taken when its sampler stopped); threads present in both."""
    return {pid: {tid: ns - start[pid][tid] for tid, ns in threads.items() if tid in start.get(pid, {})}
            for pid, threads in ends.items()}


def stop_cost_ns(threads: dict, cpu_ns: dict) -> int:
    """The CPU time the sampler's stops cost each thread in the window: the median over the threads it never found
    on a CPU (no sample; ``threads`` as ``share`` keys them). Stopping a process and letting it go on wakes every
    thread in the kernel: on an H100 host, every idle thread of a fully traced EngineCore had 60-80 ms of CPU in a
    20 s window at 400 Hz (``results/h100/issue19_c0b6aa4``), ~8 µs a stop. 0 where every thread was sampled."""
    seen = {m.group(1) for k in threads if (m := THREAD_KEY.match(k))}
    idle = sorted(ns for tid, ns in cpu_ns.items() if tid not in seen)
    return idle[len(idle) // 2] if idle else 0


def cpu_per_step_us(threads: dict, cpu_ns: dict, steps: float, stop_ns: int = 0) -> dict:
    """{thread key: µs per engine step}: each sampled thread's share of its own samples x its CPU time in the window,
    less what the sampler's stops cost it (``stop_ns``, ``stop_cost_ns``), over the window's steps (``threads``:
    ``share``'s per-thread counts, keyed ``thread (TID): name``; ``cpu_ns``: {tid: ns}, ``cpu_in_window``). A stopped
    thread's CPU does not grow, and the share is of the samples it was on a CPU in; what the stops still cost a
    running thread beyond the idle threads' median stays in (the planted case read 0.82-1.00 of its answer at a x2
    slowdown, 1.13-1.62 at x10). Threads with no CPU reading are left out."""
    out = {}
    for key, v in threads.items():
        m = THREAD_KEY.match(key)
        ns = cpu_ns.get(m.group(1)) if m else None
        if ns is not None and v["samples"] and steps > 0:
            out[key] = round(v["plugin_samples"] / v["samples"] * max(ns - stop_ns, 0) / 1e3 / steps, 2)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
