"""The stack-sample share (benchmarks/gpu/pyspy_share.py) on planted stacks: vLLM's work under the plugin's
wrapper is vLLM's, the plugin's own frames (and what they call outside vLLM) are the plugin's."""
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
    assert s["threads"][main] == {"samples": 4, "plugin_samples": 1, "plugin_pct": 25.0}
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
