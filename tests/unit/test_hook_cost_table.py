"""hook_cost_table.py (benchmarks/gpu) reads a run's hooks per step from the steady decode window, and from all
steps for a ``--churn`` run, whose window still has requests joining and finishing (planted: the two figures differ,
and each run must take its own)."""
import json

from gpu_scripts import load

table = load("hook_cost_table")


def _run(churn: bool) -> dict:
    batch = {"batch": 512, "engine_steps": 100, "recorded_executions": 100, "wall_s": 1.0, "step_ms": 10.0,
             "us_per_step_by_role": {"engine": 30.0, "worker": 20.0, "front": 5.0},
             "steady_decode": {"steps": 40, "by_role": {"engine": 35.0, "worker": 25.0, "front": 6.0}},
             "export_thread_us_per_step": {"cpu": 10.0, "wait": 1.0, "parts": {"send": 6.0, "device": 4.0}}}
    return {"sample": 1, "churn": churn, "per_batch": [batch]}


def test_steady_window_unless_churn(tmp_path):
    for name, churn in (("steady_1", False), ("churn_1", True)):
        (tmp_path / f"{name}.json").write_text(json.dumps(_run(churn)))
    got = {r["run"]: r["ew"] for r in table.rows(tmp_path)}
    assert got == {"steady_1": 60.0, "churn_1": 50.0}
    parts = {line.split(" | ")[1]: line for line in table.part_rows(tmp_path, 200.0)}
    assert "| 60.00 | - | 70.00 |" in parts["steady_1"] and "| 50.00 | - | 60.00 |" in parts["churn_1"]
    assert "| 10.00 | - | 6.00 |" in parts["steady_1"]           # no GIL hold in this run's JSON
    run = _run(False)
    run["per_batch"][0]["export_thread_us_per_step"]["gil_hold"] = 7.5
    (tmp_path / "steady_1.json").write_text(json.dumps(run))
    held = {line.split(" | ")[1]: line for line in table.part_rows(tmp_path, 200.0)}
    assert "| 10.00 | 7.50 | 6.00 |" in held["steady_1"] and held["steady_1"].endswith("| 60.00 | - | 70.00 | 67.50 | 10.000 |")


def test_the_freed_end_events_beside_the_hooks(tmp_path):
    """A CUDA run's ``event_free`` (the worker's sample_tokens post freeing vLLM's end events): the steady window's
    figure for a steady run, all steps' for a churn run, inside the EngineCore + worker sum, not added to it."""
    for name, churn in (("steady_1", False), ("churn_1", True)):
        run = _run(churn)
        run["per_batch"][0]["event_free"] = {"us_per_step": 3.0, "steady_us_per_step": 4.0, "calls": 99, "events": 99}
        (tmp_path / f"{name}.json").write_text(json.dumps(run))
    parts = {line.split(" | ")[1]: line for line in table.part_rows(tmp_path, 200.0)}
    assert "| 60.00 | 4.00 | 70.00 |" in parts["steady_1"] and "| 50.00 | 3.00 | 60.00 |" in parts["churn_1"]


def test_the_send_by_its_parts_where_the_run_has_them(tmp_path):
    """A run whose export thread's send is split (``hook_cost_engine.py``'s ``send`` and ``send_parts``): its total
    in the send column and its parts beside it; a run from before the split: its ``send`` and "-"."""
    run = _run(False)
    run["per_batch"][0]["export_thread_us_per_step"] = {
        "cpu": 10.0, "wait": 1.0, "parts": {"take": 1.5, "encode": 3.0, "deliver": 0.5, "device": 4.0},
        "send_parts": ["take", "encode", "deliver"], "send": 5.0}
    (tmp_path / "split_1.json").write_text(json.dumps(run))
    (tmp_path / "old_1.json").write_text(json.dumps(_run(False)))
    rows = {line.split(" | ")[1]: line for line in table.part_rows(tmp_path, 200.0)}
    assert "| 10.00 | - | 5.00 | take 1.50 / encode 3.00 / deliver 0.50 | 4.00 |" in rows["split_1"]
    assert "| 10.00 | - | 6.00 | - | 4.00 |" in rows["old_1"]
