"""toggle_counters.py (benchmarks/gpu) reads the plugin's self-cost counters from a run's last full scrape, per
executed EngineCore step (planted: an earlier scrape with other values, a later one taken as the engine shut down
that lost its steps, steps that did not execute, and a worker role that only some runs have)."""
import gzip

import pytest

from gpu_scripts import load

counters = load("toggle_counters")


def _scrape(t: float, hooks_ec: float, hooks_fe: float, export_ec: float, steps: int, worker: bool,
            hold_ec: float | None = None) -> str:
    lab = 'engine="0",pp_rank="na",rank="na",tp_rank="na"'
    lines = [f"# SCRAPE {t}",
             f'vllm_w2ext_hook_self_seconds_total{{{lab},role="engine_core"}} {hooks_ec}',
             f'vllm_w2ext_hook_self_seconds_total{{{lab},role="frontend"}} {hooks_fe}',
             f'vllm_w2ext_export_thread_cpu_seconds_total{{{lab},role="engine_core"}} {export_ec}',
             f'vllm_w2ext_export_thread_cpu_seconds_total{{{lab},role="frontend"}} 0.002',
             f'vllm_w2ext_engine_steps_total{{{lab},executed="true",role="engine_core"}} {steps}',
             f'vllm_w2ext_engine_steps_total{{{lab},executed="false",role="engine_core"}} 500',
             f'vllm_w2ext_engine_steps_created{{{lab},executed="true",role="engine_core"}} 1.7e9']
    if worker:
        lines.append(f'vllm_w2ext_hook_self_seconds_total{{{lab},role="worker"}} 0.004')
    if hold_ec is not None:      # runs from before the export thread's GIL hold was measured have no such series
        lines.append(f'vllm_w2ext_export_thread_gil_hold_seconds_total{{{lab},role="engine_core"}} {hold_ec}')
    return "\n".join(lines) + "\n"


def test_last_full_scrape_per_executed_step(tmp_path, capsys):
    a, b = tmp_path / "toggle_a_1.prom.gz", tmp_path / "toggle_b_1.prom.gz"
    with gzip.open(a, "wt") as f:       # an early scrape, the full one, and one taken as the engine shut down
        f.write(_scrape(1.0, 0.5, 0.5, 0.5, 10, False) + _scrape(2.0, 0.015, 0.009, 0.006, 1000, False)
                + _scrape(3.0, 0.0, 0.0, 0.0, 0, False))
    with gzip.open(b, "wt") as f:
        f.write(_scrape(2.0, 0.030, 0.010, 0.020, 2000, True, hold_ec=0.016))
    got = {name: (steps, {k: round(v, 6) for k, v in us.items()}) for name, steps, us in counters.rows([a, b])}
    assert got["toggle_a_1"] == (1000, {"engine_core hooks": 15.0, "engine_core export thread": 6.0,
                                        "frontend hooks": 9.0, "frontend export thread": 2.0})
    assert got["toggle_b_1"][0] == 2000
    assert got["toggle_b_1"][1]["engine_core hooks"] == 15.0 and got["toggle_b_1"][1]["worker hooks"] == 2.0
    assert got["toggle_b_1"][1]["engine_core export thread GIL hold"] == 8.0
    counters.main([str(a), str(b)])
    out = capsys.readouterr().out.splitlines()
    hold = "export thread GIL hold"
    assert out[0].split(" | ")[2:] == ["engine_core hooks", "engine_core export thread", f"engine_core {hold}",
                                       "worker hooks", "worker export thread", f"worker {hold}",
                                       "frontend hooks", "frontend export thread", f"frontend {hold} |"]
    assert out[2].endswith("| 15.0 | 6.0 | - | - | - | - | 9.0 | 2.0 | - |")
    assert out[3].endswith("| 15.0 | 10.0 | 8.0 | 2.0 | 0.0 | 0.0 | 5.0 | 1.0 | 0.0 |")


def test_toggle_summary_reads_the_same_scrape(tmp_path):
    """toggle_summary.py's per-step self-cost reads the run's last full scrape too (not a later incomplete one)."""
    summary = load("toggle_summary")
    a = tmp_path / "toggle_a_1.prom.gz"
    with gzip.open(a, "wt") as f:
        f.write(_scrape(1.0, 0.5, 0.5, 0.5, 10, False) + _scrape(2.0, 0.015, 0.009, 0.006, 1000, False)
                + _scrape(3.0, 0.0, 0.0, 0.0, 0, False))
    got = summary.self_cost_per_step(a)
    assert got["engine_steps"] == 1000
    assert got["hook_self_us_per_step"] == {"engine_core": 15.0, "frontend": 9.0}


def test_final_snapshots_read_as_one_full_scrape(tmp_path, monkeypatch):
    """A run's metrics folder as its processes leave it (each export process's snapshot, written by the plugin's own
    ``write_snapshot``, a half-written ``.tmp`` beside them) packs into one scrape that reads the whole run, where the
    endpoint's last answered scrape held part of it, once a snapshot still being written has landed; the folder goes,
    and an empty one packs nothing."""
    import os

    from vllm_w2ext.telemetry.metrics import write_snapshot
    orun = load("overhead_run")
    lab = 'engine="0",pp_rank="na",rank="na",tp_rank="na"'
    engine = "\n".join([f'vllm_w2ext_hook_self_seconds_total{{{lab},role="engine_core"}} 0.030',
                        f'vllm_w2ext_export_thread_cpu_seconds_total{{{lab},role="engine_core"}} 0.012',
                        f'vllm_w2ext_engine_steps_total{{{lab},executed="true",role="engine_core"}} 2000']) + "\n"
    front = "\n".join(["# HELP vllm_w2ext_hook_self_seconds hooks", "# TYPE vllm_w2ext_hook_self_seconds counter",
                       f'vllm_w2ext_hook_self_seconds_total{{{lab},role="frontend"}} 0.010',
                       f'vllm_w2ext_export_thread_cpu_seconds_total{{{lab},role="frontend"}} 0.004']) + "\n"
    folder = tmp_path / "toggle_x_1.metrics"
    folder.mkdir()
    for pid, text in ((102, front), (101, engine)):
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)   # the file is named after the writing process
        write_snapshot(str(folder), text.encode())
    (folder / "103.prom.tmp").write_text("vllm_w2ext_hook_self_seconds_total{role=\"engine_core\"} 99\n")
    scrapes = tmp_path / "toggle_x_1.prom.gz"     # the endpoint answered once, early in the run
    with gzip.open(scrapes, "wt") as f:
        f.write(_scrape(1.0, 0.003, 0.001, 0.001, 200, False))
    final = tmp_path / "toggle_x_1.final.prom.gz"
    waits = []

    def wait(s):                                   # an export process still writing its last snapshot during the
        if not waits:                              # first quiet interval: waited for, read once it is quiet
            write_snapshot(str(folder), engine.replace(" 2000", " 3000").encode())
        waits.append(s)
    monkeypatch.setattr(orun, "_sleep", wait)
    assert orun.pack_final_snapshots(folder, final, quiet_s=1.0) and not folder.exists()
    assert waits == [1.0, 1.0]
    monkeypatch.undo()
    got = {name: (steps, {k: round(v, 6) for k, v in us.items()}) for name, steps, us in counters.rows([scrapes, final])}
    assert got["toggle_x_1"][0] == 200
    assert got["toggle_x_1.final"] == (3000, {"engine_core hooks": 10.0, "engine_core export thread": 4.0,
                                              "frontend hooks": 3.333333, "frontend export thread": 1.333333})
    empty = tmp_path / "empty.metrics"
    empty.mkdir()
    assert not orun.pack_final_snapshots(empty, tmp_path / "empty.final.prom.gz", quiet_s=0.01)
    assert not (tmp_path / "empty.final.prom.gz").exists() and not empty.exists()
    monkeypatch.setattr(orun, "_sleep", lambda s: pytest.fail("waited for a folder that is not there"))
    assert not orun.pack_final_snapshots(tmp_path / "missing", tmp_path / "missing.final.prom.gz")
