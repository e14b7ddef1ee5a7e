"""What py-spy's readings of the plugin's work per step are worth, on a planted case whose answer is known: short plugin
calls of a measured cost inside a vLLM stand-in's steps, read the way ``gpu/pyspy_share.py`` reads vLLM's processes.

    python benchmarks/pyspy_known_cost.py --spy PATH/TO/py-spy [--seconds 10] [--rates 100,400] [--calls 8]
                                          [--threads 40]

The child process has two planted modules on its path:
- ``vllm/planted_steps.py`` stands for vLLM: each step runs ``--calls`` chunks of its own work, a fixed count of
  loop turns (CPU work, not a clock: a process stopped by the sampler does the same work per step), each after a
  call of the plugin's ``hook()``; beside its main thread, ``--threads`` idle ones (py-spy stops and reads every
  thread of the process for each stack, and vLLM's processes hold dozens).
- ``vllm_w2ext/planted_cost.py`` stands for the plugin: ``hook()``, a fixed count of loop turns too.

The known answer: before any sampler is attached, the child times its steps and its ``hook()`` calls (``perf_counter``
around each call) for ``--calibrate`` seconds: the plugin's µs per step and the step's wall time, unsampled. It then
logs (time, steps) every 50 steps until it ends.

For each sampling mode (py-spy stopping the process for each stack at each of ``--rates``, and ``--nonblocking`` at
the highest rate) py-spy samples the child for ``--seconds``, and each thread's CPU time is read right before and
after (``pyspy_share.thread_cpu_ns``). The plugin's µs per step is then read three ways:
- ``window step``: plugin samples / ticks x the window's own step, from the child's log (``pyspy_share.per_step_us``,
  what ``pyspy_share.py`` did for every window before the forty-fourth session). The ticks are the main thread's
  samples (it is on a CPU at every tick); ``rate_ticks`` is rate x seconds, ``pyspy_share.ticks_ok``'s count, which
  is too many where the sampler fell behind its rate;
- ``unslowed step``: the same share x the step's wall time outside the window, from the child's log around it
  (what ``pyspy_share.pace_around`` reads from the scrapes);
- ``thread CPU``: the thread's share of its samples x its CPU time in the window over the window's steps
  (``pyspy_share.cpu_per_step_us``); ``thread CPU less stops`` takes off first what the stops cost each thread
  (the idle threads' median CPU in the window, ``pyspy_share.stop_cost_ns``), as ``pyspy_share.py`` does.
Each is printed against the known answer, with the window's slowdown (its step against the unslowed one).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "gpu"))
import pyspy_share  # noqa: E402  (benchmarks/gpu/, beside this file's own folder)

CORE = '''import json
import sys
import time

from vllm_w2ext.planted_cost import hook

CALLS, WORK = {calls}, {work}


def work():
    for _ in range(WORK):
        pass


def step(timed):
    ns = 0
    for _ in range(CALLS):
        if timed:
            t = time.perf_counter_ns()
            hook()
            ns += time.perf_counter_ns() - t
        else:
            hook()
        work()
    return ns


def main(calibrate_s, ready, log_path, threads):
    import threading
    idle = threading.Event()
    for _ in range(threads):                  # vLLM's processes hold dozens of threads; py-spy stops each
        threading.Thread(target=idle.wait, daemon=True).start()
    t0, steps, plugin_ns = time.perf_counter(), 0, 0
    while time.perf_counter() - t0 < calibrate_s:
        plugin_ns += step(True)
        steps += 1
    wall = time.perf_counter() - t0
    with open(ready, "w") as f:
        json.dump({{"plugin_us_per_step": plugin_ns / steps / 1e3, "step_s": wall / steps, "steps": steps}}, f)
    log, steps = [], 0
    while True:
        for _ in range(50):
            step(False)
        steps += 50
        log.append((time.time(), steps))
        if __import__("os").path.exists(log_path + ".stop"):
            break
    with open(log_path, "w") as f:
        json.dump(log, f)


if __name__ == "__main__":
    main(float(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))
'''
HOOK = '''def hook():
    for _ in range({turns}):
        pass
'''


def pace(log: list, t0: float, t1: float) -> float | None:
    """Seconds per step between t0 and t1 from the child's (time, steps) log, linear between entries."""
    n = pyspy_share.steps_between(log, t0, t1)
    return (t1 - t0) / n if n else None


def run_mode(spy: str, root: Path, a, rate: int, flags: list[str]) -> dict:
    ready, log_path = root / "ready.json", root / "log.json"
    for p in (ready, log_path, Path(str(log_path) + ".stop")):
        p.unlink(missing_ok=True)
    child = subprocess.Popen([sys.executable, "-m", "vllm.planted_steps", str(a.calibrate), str(ready), str(log_path),
                              str(a.threads)], cwd=root, env={"PYTHONPATH": str(root)})
    while not ready.exists() and child.poll() is None:
        time.sleep(0.05)
    time.sleep(0.2)
    known = json.loads(ready.read_text())
    time.sleep(a.gap)                               # unsampled steps before the window: the unslowed pace
    out = root / f"stacks_{rate}{'_'.join(flags)}.txt"
    cpu0 = pyspy_share.thread_cpu_ns([child.pid])
    start = time.time()
    said = subprocess.run([spy, "record", *flags, "--threads", "-r", str(rate), "-d", str(int(a.seconds)), "--pid",
                           str(child.pid), "-f", "raw", "-o", str(out)], check=True, capture_output=True, text=True)
    end = time.time()
    cpu1 = pyspy_share.thread_cpu_ns([child.pid])
    time.sleep(a.gap)                               # and after it
    Path(str(log_path) + ".stop").write_text("")
    child.wait()
    log = [tuple(x) for x in json.loads(log_path.read_text())]
    s = pyspy_share.share(pyspy_share.read(out))
    main_key, main = max(s["threads"].items(), key=lambda kv: kv[1]["samples"])
    window_step = pace(log, start, end)
    margin = 0.5
    before = pace(log, start - a.gap + margin, start - margin)
    after = pace(log, end + margin, end + a.gap - margin)
    unslowed = (before + after) / 2 if before and after else before or after
    steps = (end - start) / window_step
    cpu = pyspy_share.cpu_in_window(cpu0, cpu1)[str(child.pid)]
    errors, _ = pyspy_share.spy_counts(said.stdout + said.stderr)
    # the ticks that gave a stack: the main thread is on a CPU at every one (it never waits), so its samples are
    # the count even where the sampler fell behind its rate (rate x seconds is then too many: ``rate_ticks``)
    ticks = main["samples"]
    rate_ticks = pyspy_share.ticks_ok({"start": start, "end": end, "rate": rate}, "child", errors, main["samples"])
    return {"mode": " ".join(flags) or "stopped", "rate": rate, "ticks": ticks, "rate_ticks": round(rate_ticks), "window_s": round(end - start, 2), "known_us_per_step": round(known["plugin_us_per_step"], 2),
            "calibrated_step_ms": round(known["step_s"] * 1e3, 4), "samples": main["samples"],
            "plugin_samples": main["plugin_samples"], "plugin_pct": main["plugin_pct"],
            "known_pct": round(100 * known["plugin_us_per_step"] / (known["step_s"] * 1e6), 3),
            "window_step_ms": round(window_step * 1e3, 4), "unslowed_step_ms": round(unslowed * 1e3, 4),
            "slowdown": round(window_step / unslowed, 3),
            "read_us_per_step": {
                "window step": pyspy_share.per_step_us(main["plugin_samples"], ticks, window_step),
                "unslowed step": pyspy_share.per_step_us(main["plugin_samples"], ticks, unslowed),
                "thread CPU": pyspy_share.cpu_per_step_us({main_key: main}, cpu, steps).get(main_key),
                "thread CPU less stops": pyspy_share.cpu_per_step_us(
                    {main_key: main}, cpu, steps, pyspy_share.stop_cost_ns(s["threads"], cpu)).get(main_key)},
            "stop_cost_ms": round(pyspy_share.stop_cost_ns(s["threads"], cpu) / 1e6, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spy", required=True)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rates", default="100,400")
    ap.add_argument("--calls", type=int, default=8, help="plugin calls per step")
    ap.add_argument("--hook-turns", type=int, default=60, help="loop turns of one plugin call")
    ap.add_argument("--work-turns", type=int, default=4000, help="loop turns of vLLM's work after each call")
    ap.add_argument("--threads", type=int, default=40, help="idle threads in the child (vLLM's processes have dozens)")
    ap.add_argument("--calibrate", type=float, default=3.0)
    ap.add_argument("--gap", type=float, default=3.0, help="unsampled seconds before and after each window")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    rates = [int(r) for r in a.rates.split(",")]
    print(f"python {sys.version.split()[0]}; {a.calls} plugin calls of {a.hook_turns} loop turns per step, "
          f"{a.work_turns} turns of vLLM's work after each, {a.threads} idle threads; {a.seconds:.0f} s windows")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for pkg, name, text in (("vllm", "planted_steps.py", CORE.format(calls=a.calls, work=a.work_turns)),
                                ("vllm_w2ext", "planted_cost.py", HOOK.format(turns=a.hook_turns))):
            (root / pkg).mkdir()
            (root / pkg / "__init__.py").write_text("")
            (root / pkg / name).write_text(text)
        for rate, flags in [*((r, []) for r in rates), (max(rates), ["--nonblocking"])]:
            r = run_mode(a.spy, root, a, rate, flags)
            rows.append(r)
            reads = ", ".join(f"{k} {v}" for k, v in r["read_us_per_step"].items())
            print(f"{r['mode']} at {rate} Hz: known {r['known_us_per_step']} us per step ({r['known_pct']} % of "
                  f"a {r['calibrated_step_ms']} ms step); read {r['plugin_samples']} of {r['samples']} samples = "
                  f"{r['plugin_pct']} % ({r['ticks']} ticks, rate x seconds {r['rate_ticks']}); window step "
                  f"{r['window_step_ms']} ms against {r['unslowed_step_ms']} "
                  f"unslowed (x{r['slowdown']}); us per step read: {reads}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
