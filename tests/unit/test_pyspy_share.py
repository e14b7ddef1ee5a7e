"""The stack-sample share (benchmarks/gpu/pyspy_share.py) on planted stacks: vLLM's work under the plugin's
wrapper is vLLM's, the plugin's own frames (and what they call outside vLLM) are the plugin's."""
import json

from gpu_scripts import load

pyspy_share = load("pyspy_share")

WRAP = "hooked (vllm_w2ext/hooks/runner.py:173)"
STEP = "step_with_batch_queue (vllm/v1/engine/core.py:400)"


def test_planted_share():
    stacks = [
        (["<module> (<string>:1)", "run_busy_loop (vllm/v1/engine/core.py:900)", WRAP, STEP,
          "execute_model (vllm/v1/worker/gpu_model_runner.py:10)"], 90),                  # vLLM under our wrapper
        (["<module> (<string>:1)", "run_busy_loop (vllm/v1/engine/core.py:900)", WRAP,
          "_step_pre (vllm_w2ext/hooks/engine_core.py:150)", "time_ns (<built-in>)"], 6),  # our pre
        (["<module> (<string>:1)", WRAP, STEP, "_schedule_post (vllm_w2ext/hooks/engine_core.py:190)",
          "Queue.put (queue.py:140)"], 4),                                                 # our post, nested
        (["Thread._bootstrap (threading.py:1002)", "busy (torch/cuda/streams.py:1)"], 10),  # no plugin frame
        (["Thread.run (threading.py:1)", "Pipeline._run (vllm_w2ext/telemetry/pipeline.py:89)",
          "Event.wait (threading.py:600)"], 50),                                           # a wait: not CPU
    ]
    s = pyspy_share.share(stacks)
    assert s["samples"] == 110 and s["plugin_samples"] == 10 and s["engine_core"]
    assert abs(s["plugin_pct"] - 100 * 10 / 110) < 1e-3
    assert dict(s["top"])["hooked > _step_pre > time_ns"] == 6
    assert "threads" not in s


def test_read_collapsed(tmp_path):
    p = tmp_path / "engine_1.txt"
    p.write_text(f"a (x.py:1);{WRAP} 3\nb (vllm/y.py:2) 5\n")
    assert pyspy_share.read(p) == [(["a (x.py:1)", WRAP], 3), (["b (vllm/y.py:2)"], 5)]


def test_per_thread():
    main, other = "thread (0x1)", "thread (0x2)"
    s = pyspy_share.share([([main, WRAP, "_step_pre (vllm_w2ext/hooks/engine_core.py:150)"], 1),
                           ([main, WRAP, STEP], 3), ([other, "busy_loop (vllm/v1/engine/core.py:5)"], 4)])
    assert s["threads"][main] == {"samples": 4, "plugin_samples": 1, "plugin_pct": 25.0, "handoff_samples": 0,
                                  "torn_samples": 0}
    assert s["threads"][other]["plugin_samples"] == 0 and s["plugin_pct"] == 12.5


def test_process_tree_roles():
    """The run's tree: overhead_run (1) -> engine driver (2, the front end) -> its export process (3) and the
    EngineCore (4, not retitled) -> its export process (5); a resource tracker and the run's own receiver
    helper are left out."""
    procs = {1: (0, "python3", "python3 overhead_run.py"),
             2: (1, "python3", "python3 -m vllm_w2ext.lab.engine_driver spec.json"),
             3: (2, "python3", "python3 -m vllm_w2ext.export_child"),
             4: (2, "python3", "python3 -c from multiprocessing.spawn import spawn_main; spawn_main()"),
             5: (4, "python3", "python3 -m vllm_w2ext.export_child"),
             6: (2, "python3", "python3 -c from multiprocessing.resource_tracker import main;main(8)"),
             7: (1, "sleep", "sleep 1"),
             8: (2, "VLLM::EngineCor", "VLLM::EngineCore"),
             9: (8, "VLLM::Worker", "VLLM::Worker")}
    got = {pid: role for pid, role, _ in pyspy_share.tree(1, procs)}
    assert got == {2: "front", 3: "export-of-front", 4: "child-python3", 5: "export-of-child-python3", 8: "engine",
                   9: "worker"}


def test_handoff_is_vllms():
    """A sample whose innermost frame is the wrapper's call into vLLM's method (CPython frees the returning
    frame's locals after moving back to the caller) is vLLM's work, counted apart; the wrapper's own lines,
    and the lab's engine driver (the application, not the plugin), are told apart the same way."""
    lines = pyspy_share.handoff_lines("def hooked(instance):\n    pre()\n    result = fn(instance, *args, **kwargs)\n")
    assert lines == {3}
    call = "hooked (vllm_w2ext/hooks/runner.py:3)"
    own = "hooked (vllm_w2ext/hooks/runner.py:2)"
    loop = "run_busy_loop (vllm/v1/engine/core.py:900)"
    stacks = [([loop, call], 7), ([loop, own], 2), ([loop, call, STEP], 30),
              (["<module> (vllm_w2ext/lab/engine_driver.py:139)", "main (vllm_w2ext/lab/engine_driver.py:118)"], 5)]
    s = pyspy_share.share(stacks, lines=lines)
    assert (s["samples"], s["plugin_samples"], s["handoff_samples"]) == (44, 2, 7)
    # the real runner: every line that calls the wrapped method is a hand-off line, and only those
    src = pyspy_share.RUNNER.read_text().splitlines()
    assert pyspy_share.HANDOFF_LINES and all("fn(instance" in src[n - 1] or "wrapped(*args" in src[n - 1]
                                            for n in pyspy_share.HANDOFF_LINES)


def test_front_handoffs():
    """A hook's front (hooks/runner.py: code made from the method's signature) calls vLLM's method on the lines
    FRONT_HANDOFF_LINES of FRONT_FILE: a sample there is vLLM's; its other lines are the plugin's. Each line is
    checked on a real front: vLLM's method raising is seen there in each of the front's five ways through (off,
    pre failed, pre recorded nothing, recorded, a bounds hook's)."""
    import traceback

    from vllm_w2ext.hooks.runner import FRONT_FILE, FRONT_HANDOFF_LINES, HookRunner, python_front
    from vllm_w2ext.hooks.bounds import buffer as bounds_buffer
    from vllm_w2ext.hooks.spec import Hook

    def method(self, so):
        raise KeyError(so)

    def line_of(runner, front):
        runner.left = -1                  # not the timed call
        try:
            front(object(), 1)
        except KeyError as e:
            return [f.lineno for f in traceback.extract_tb(e.__traceback__) if f.filename == FRONT_FILE]

    def failing_pre(o, a, k):
        raise RuntimeError("pre")

    class Quiet(HookRunner):                 # a fault switches the hook off, without reporting it anywhere
        __slots__ = ()

        def fail(self, exc):
            self._set(True, self.paused, self.gated)

    seen = set()
    for pre, off, bounds in ((lambda o, a, k: 1, True, None), (failing_pre, False, None),
                             (lambda o, a, k: None, False, None), (lambda o, a, k: 1, False, None),
                             (lambda o, a, k: 1, False, bounds_buffer())):
        r = Quiet(Hook("t.m", "m", "C.m", pre, lambda s, res, err: None, bounds=bounds))
        if bounds is not None:
            r.set_bounds(True, True)         # timed in its clock's windows (bounds.Mode): its front's own way
        front = python_front(r.bind(method))    # the lines are the Python front's (a C front has none)
        assert front.__code__.co_filename == FRONT_FILE
        if off:
            r.pause(False)
        seen.update(line_of(r, front))
        assert bounds is None or len(bounds) == 1          # the bounds front's way through: it noted the call
    assert seen == set(FRONT_HANDOFF_LINES)
    loop = "run_busy_loop (vllm/v1/engine/core.py:900)"
    # the rule reads the runner's own constants (from the sampled tree's copy, as the runner lines are)
    assert pyspy_share.FRONT_FRAMES == tuple(f"({FRONT_FILE}:{n})" for n in FRONT_HANDOFF_LINES)
    assert pyspy_share.front_frames("def hooked(instance):\n    return fn(instance, *args, **kwargs)\n") == ()
    # a runner of before the fourteenth session: one hand-off line, gated fronts only
    assert pyspy_share.front_frames('FRONT_FILE = "<g>"\nFRONT_HANDOFF_LINE = 4\n') == ("(<g>:4)",)
    stacks = [([loop, f"front ({FRONT_FILE}:{FRONT_HANDOFF_LINES[-1]})"], 3), ([loop, f"front ({FRONT_FILE}:2)"], 1)]
    s = pyspy_share.share(stacks, lines=frozenset())
    assert (s["plugin_samples"], s["handoff_samples"]) == (1, 3)


def _run(lat_done, thr_done, steps_at_lat, scrape_t, steps_final):
    return {"started": 0.0, "run": "l4_p1_plugin",
            "tasks": [{"kind": "latency", "output_len": 128}, {"kind": "throughput"}],
            "results": {"latency": {"value": 0.256, "done_t": lat_done}, "throughput": {"done_t": thr_done}},
            "self_cost": {"final": {"engine_steps": {"engine_core": steps_final}}, "at_latency_done_t": scrape_t,
                          "at_latency_done": {"engine_steps": {"engine_core": steps_at_lat}}}}


def test_step_seconds_by_window():
    """A window inside the latency task: avg latency / output length (0.256 / 128 = 2 ms); after it: the
    throughput task's time over its steps, less the latency steps run after the lagging scrape (0.5 s at
    500 steps per second = 250); a window across the boundary: its seconds over its steps, 5,000 latency steps
    (10 s at 2 ms) and a quarter of the throughput task's 2,000 (the window holds 10 of its 40 s): 500."""
    run = _run(lat_done=100.0, thr_done=140.0, steps_at_lat=1000, scrape_t=99.5, steps_final=3250)
    assert pyspy_share.step_seconds(run, {"start": 60.0, "end": 80.0}) == (0.002, "latency")
    sec, phase = pyspy_share.step_seconds(run, {"start": 110.0, "end": 125.0})
    assert phase == "throughput" and abs(sec - 40.0 / 2000) < 1e-12
    sec, phase = pyspy_share.step_seconds(run, {"start": 90.0, "end": 110.0})
    assert phase == "mixed (50 % latency)" and abs(sec - 20.0 / (5000 + 500)) < 1e-12
    assert pyspy_share.step_seconds({**run, "self_cost": {}}, {"start": 90.0, "end": 110.0}) is None


def test_per_step_conversion():
    """400 Hz for 20 s less 2,000 failed ticks = 6,000 ticks; 60 plugin samples of them x a 2 ms step = 20 µs;
    a process that exited early is counted to its own end, and never below its busiest thread's samples."""
    w = {"start": 0.0, "end": 20.0, "rate": 400, "ends": {"engine_1": 20.0, "front_2": 10.0}}
    ticks = pyspy_share.ticks_ok(w, "engine_1", 2000, 5800)
    assert ticks == 6000 and pyspy_share.per_step_us(60, ticks, 0.002) == 20.0
    assert pyspy_share.ticks_ok(w, "front_2", 0, 100) == 4000
    assert pyspy_share.ticks_ok(w, "front_2", 3000, 2500) == 2500


def test_reads_gzipped_stacks(tmp_path):
    import gzip
    p = tmp_path / "engine_1.txt.gz"
    p.write_bytes(gzip.compress(f"a (x.py:1);{WRAP} 3\n".encode()))
    assert pyspy_share.read(p) == [(["a (x.py:1)", WRAP], 3)]


def test_handoff_lines_come_from_the_sampled_runner(tmp_path, monkeypatch):
    """A folder carries the runner it sampled (pyspy_share.sh copies hooks/runner.py into it): its hand-off
    lines are that file's, not this tree's, whose lines any later edit moves."""
    (tmp_path / "runner.py.txt").write_text("def hooked(instance):\n    return fn(instance, *args, **kwargs)\n")
    frame = "hooked (vllm_w2ext/hooks/runner.py:2)"
    (tmp_path / "front_1.txt").write_text(f"main (x.py:1);{frame} 5\nmain (x.py:1);other (vllm_w2ext/y.py:3) 2\n")
    monkeypatch.setattr("sys.argv", ["pyspy_share.py", str(tmp_path)])
    assert pyspy_share.main() == 0
    doc = json.loads((tmp_path / "share.json").read_text())
    assert doc["handoff_lines"] == [2] and doc["handoff_lines_from"] == f"{tmp_path.name}/runner.py.txt"
    assert (doc["front_1"]["handoff_samples"], doc["front_1"]["plugin_samples"]) == (5, 2)


def test_torn_stacks_are_not_the_plugins():
    """Planted: vLLM's thread putting the step's outputs on a queue, read by py-spy with the next hook's frame
    already in its caller's slot (over the put at a line that names no put) is torn. A hook's frame under
    put_nowait was read first and is the plugin's (py-spy reads the innermost frame first). The export thread's
    reader putting a frame on its queue at a line that does name it is the plugin's. Without the sampled tree's
    lines nothing is called torn."""
    loop = "EngineCoreProc._process_engine_step (vllm/v1/engine/core.py:1403)"
    over = [loop, "_step_pre (vllm_w2ext/hooks/engine_core.py:263)", "Queue.put (queue.py:133)",
            "Condition.notify (threading.py:410)"]
    under = [loop, "Queue.put_nowait (queue.py:191)", "_worker_bounds (vllm_w2ext/hooks/engine_core.py:228)"]
    reader = ["Thread.run (threading.py:1010)", "_reader (vllm_w2ext/telemetry/export_process.py:50)",
              "Queue.put (queue.py:133)"]
    own = [loop, "_step_post (vllm_w2ext/hooks/engine_core.py:300)"]
    text = {("vllm_w2ext/hooks/engine_core.py", 263): "        r = S.current = [Span.STEP, ENGINE, span_bits(128)]",
            ("vllm_w2ext/telemetry/export_process.py", 50): "            q.put(frame)"}
    stacks = [(over, 20), (under, 11), (reader, 5), (own, 7)]
    s = pyspy_share.share(stacks, source=lambda f, n: text.get((f, n)))
    assert (s["plugin_samples"], s["torn_samples"]) == (23, 20)
    assert pyspy_share.share(stacks)["plugin_samples"] == 43          # no lines: as before
    unknown = pyspy_share.share([(over, 3)], source=lambda f, n: None)  # a line it cannot read: not torn
    assert (unknown["plugin_samples"], unknown["torn_samples"]) == (3, 0)


def test_source_lines(tmp_path):
    (tmp_path / "vllm_w2ext").mkdir()
    (tmp_path / "vllm_w2ext" / "a.py").write_text("x = 1\nq.put(y)\n")
    line = pyspy_share.source_lines(tmp_path)
    assert line("vllm_w2ext/a.py", 2) == "q.put(y)"
    assert line("vllm_w2ext/a.py", 9) is None and line("vllm_w2ext/b.py", 1) is None


def _scrape(t: float, steps: float, reqs_sum: float, reqs_count: float) -> str:
    lab = 'engine="0",role="engine_core"'
    return (f"# SCRAPE {t}\n"
            f'vllm_w2ext_engine_steps_total{{{lab},executed="true"}} {steps}\n'
            f'vllm_w2ext_engine_steps_total{{{lab},executed="false"}} 7\n'
            f"vllm_w2ext_batch_requests_sum{{{lab}}} {reqs_sum}\n"
            f"vllm_w2ext_batch_requests_count{{{lab}}} {reqs_count}\n")


def test_window_steps_planted(tmp_path):
    """A window from t=10.25 to 12.5 over scrapes 1 s apart: 40 steps a second of 100 requests each from t=10 on
    (before that 10 a second of 1). Its own steps: 90 in 2.25 s, read between the scrapes around its ends."""
    import gzip
    rows = [(9, 100, 100, 100), (10, 110, 110, 110), (11, 150, 4110, 150), (12, 190, 8110, 190),
            (13, 230, 12110, 230)]
    path = tmp_path / "run.prom.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(_scrape(*r) for r in rows))
    sec, reqs = pyspy_share.window_steps(path, {"start": 10.25, "end": 12.5})
    assert abs(sec - 2.25 / 90) < 1e-9 and abs(reqs - 100) < 1e-9
    # a window past the last scrape: no reading (the caller falls back to the run's average step)
    assert pyspy_share.window_steps(path, {"start": 12.5, "end": 14}) is None
    assert pyspy_share.at([(0, 0.0), (2, 10.0)], 0.5) == (2.5,)


def test_a_stopped_windows_unslowed_step_is_read_around_it(tmp_path):
    """Planted: a latency task at 2 ms a step (500 a second) from t=0 to 40, slowed to 5 ms a step (200 a second)
    by the stopping sampler in the window t=15 to 25. The steps just outside it, 2 s away from each end (the scrape
    interval around an end mixes both paces) and not past the latency task's end, give 2 ms."""
    import gzip
    rows, steps = [], 0
    for t in range(0, 41):
        rows.append((t, steps, steps, steps))
        steps += 200 if 15 <= t < 25 else 500
    path = tmp_path / "run.prom.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(_scrape(*r) for r in rows))
    w = {"start": 15.0, "end": 25.0}
    sec, _ = pyspy_share.window_steps(path, w)
    assert abs(sec - 0.005) < 1e-12                      # the window's own steps: slowed
    assert abs(pyspy_share.pace_around(path, w, until=40.0) - 0.002) < 1e-12
    assert abs(pyspy_share.pace_around(path, w, until=28.0) - 0.002) < 1e-12   # after: only t=27 to 28
    assert pyspy_share.pace_around(path, {"start": 1.0, "end": 39.0}, until=40.0) is None   # no room either side
    # 80 plugin samples of 8,000 ticks (1 %) x the unslowed 2 ms: 20 µs a step, where the slowed step read 50
    assert pyspy_share.per_step_us(80, 8000, 0.002) == 20.0 and pyspy_share.per_step_us(80, 8000, sec) == 50.0


def test_thread_cpu_gives_per_step_figures_a_stopping_sampler_cannot_inflate():
    """Planted: in a window of 1,000 steps the main thread was on a CPU 2.5 s (the sampler's stops are not CPU) and
    1.5 % of its samples were the plugin's: 37.5 µs a step; the export thread's 0.05 s, all the plugin's: 50 µs.
    A thread without a CPU reading is left out, and the readings of this process are real (/proc)."""
    threads = {"thread (7): MainThread": {"samples": 4000, "plugin_samples": 60},
               "thread (9): w2ext-export": {"samples": 20, "plugin_samples": 20},
               "thread (11): other": {"samples": 5, "plugin_samples": 0}}
    start = {"7": {"7": 10**9, "9": 0, "11": 5}}
    ends = {"7": {"7": 10**9 + 2_500_000_000, "9": 50_000_000, "12": 1}}
    cpu = pyspy_share.cpu_in_window(start, ends)
    assert cpu == {"7": {"7": 2_500_000_000, "9": 50_000_000}}
    assert pyspy_share.cpu_per_step_us(threads, cpu["7"], 1000) == {"thread (7): MainThread": 37.5,
                                                                     "thread (9): w2ext-export": 50.0}
    # the sampler's stops cost every thread some CPU (the kernel wakes each one): the median over the threads it never
    # found on a CPU, here 20 ms, comes off each thread first (the export thread's 50 ms: 30 of it its own, 30 µs a step)
    idle = {"7": 2_500_000_000, "9": 50_000_000, "21": 20_000_000, "22": 19_000_000, "23": 21_000_000}
    stop = pyspy_share.stop_cost_ns(threads, idle)
    assert stop == 20_000_000 and pyspy_share.stop_cost_ns(threads, cpu["7"]) == 0
    assert pyspy_share.cpu_per_step_us(threads, idle, 1000, stop) == {"thread (7): MainThread": 37.2,
                                                                      "thread (9): w2ext-export": 30.0}
    import os
    import threading
    me = pyspy_share.thread_cpu_ns([os.getpid(), 2**22 + 7])    # a pid that does not run: left out
    assert list(me) == [str(os.getpid())] and me[str(os.getpid())][str(threading.get_native_id())] > 0


def test_self_cost_counters_are_read_per_step_where_the_samples_are(tmp_path):
    """Planted: 500 steps a second, 200 inside the window t=15 to 25; the EngineCore's hooks grow by 25 µs a step
    outside the window and 60 inside it (the stops land in timed hook calls too), its export thread by 5 µs a step;
    the front end's hooks by 10. Read outside the window (the spans ``pace_around`` reads) and inside it."""
    import gzip
    lab = 'engine="0",pp_rank="na",rank="na",tp_rank="na"'
    text, steps, hooks, export, front = [], 0, 0.0, 0.0, 0.0
    for t in range(0, 41):
        text.append(f"# SCRAPE {t}\n"
                    f'vllm_w2ext_engine_steps_total{{{lab},role="engine_core",executed="true"}} {steps}\n'
                    f'vllm_w2ext_hook_self_seconds_total{{{lab},role="engine_core"}} {hooks}\n'
                    f'vllm_w2ext_hook_cpu_seconds_total{{{lab},role="engine_core"}} {hooks}\n'
                    f'vllm_w2ext_export_thread_cpu_seconds_total{{{lab},role="engine_core"}} {export}\n'
                    f'vllm_w2ext_hook_self_seconds_total{{{lab},role="frontend"}} {front}\n')
        n = 200 if 15 <= t < 25 else 500
        steps += n
        hooks += n * (60e-6 if 15 <= t < 25 else 25e-6)
        export += n * 5e-6
        front += n * 10e-6
    path = tmp_path / "run.prom.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(text))
    w = {"start": 15.0, "end": 25.0}
    out = pyspy_share.counters_per_step(path, pyspy_share.around(w, 40.0))
    assert out == {"engine_core": {"hooks_self": 25.0, "hooks_cpu": 25.0, "hooks_direct": 0.0,
                                   "export_thread_cpu": 5.0},
                   "frontend": {"hooks_self": 10.0, "hooks_cpu": 0.0, "hooks_direct": 0.0, "export_thread_cpu": 0.0}}
    inside = pyspy_share.counters_per_step(path, [(15.0, 25.0)])
    assert inside["engine_core"]["hooks_self"] == 60.0 and inside["frontend"]["hooks_self"] == 10.0
    assert pyspy_share.counters_per_step(path, [(50.0, 60.0)]) == {}          # past the scrapes: nothing read
