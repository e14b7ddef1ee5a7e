"""benchmarks/gpu/overhead_summary.py (summary.json / summary.md of the issue #19 overhead A/B) and the
scrape reading of benchmarks/gpu/overhead_run.py, on hand-made run records: no vLLM, no torch."""
from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import pytest

from gpu_scripts import load


S = load("overhead_summary")
R = load("overhead_run")

LAT = "latency bs1 512/128 x20"
THR = "throughput random 256/256 x500"


def rec(key, model, layers, pair, arm, lat=None, thr=None, status="ok", finished=0.0, self_cost=None, position=1):
    results = {}
    if lat is not None:
        results["latency"] = {"workload": LAT, "value": lat, "unit": "s"}
    if thr is not None:
        results["throughput"] = {"workload": THR, "value": thr, "unit": "tok/s"}
    r = {"run": f"{key}_p{pair}_{arm}", "model_key": key, "model": model, "layers": layers, "pair": pair, "arm": arm,
         "position": position, "status": status, "finished": finished, "results": results,
         "engine": {"model": "<models>/x", "max_model_len": 4096, "load_format": "dummy"},
         "tasks": [{"kind": "latency", "warmup": 3, "iters": 20}, {"kind": "throughput"}]}
    if self_cost is not None:
        r["self_cost"] = self_cost
    return r


def write(root: Path, records: list[dict], env: dict | None = None) -> Path:
    (root / "runs").mkdir(parents=True, exist_ok=True)
    for r in records:
        (root / "runs" / f"{r['run']}.json").write_text(json.dumps(r))
    if env is not None:
        (root / "env").mkdir(exist_ok=True)
        (root / "env" / "env_a.json").write_text(json.dumps(env))
    return root


def records_8b_and_l4() -> list[dict]:
    out = []
    # 8B: three pairs; pair 2 runs plugin first (positions only, the values are what counts)
    for p, (sl, pl, st, pt) in {1: (0.650, 0.652, 29400.0, 29300.0), 2: (0.655, 0.654, 29450.0, 29440.0),
                                3: (0.648, 0.651, 29380.0, 29330.0)}.items():
        out.append(rec("8b", "Llama-3.1-8B-shaped", 32, p, "stock", sl, st))
        out.append(rec("8b", "Llama-3.1-8B-shaped", 32, p, "plugin", pl, pt))
    # 4-layer: pair 1 complete, pair 2 only stock (cut by the budget)
    out.append(rec("l4", "Llama-3.1-8B-shaped", 4, 1, "stock", 0.100, 90000.0))
    out.append(rec("l4", "Llama-3.1-8B-shaped", 4, 1, "plugin", 0.101, 89000.0))
    out.append(rec("l4", "Llama-3.1-8B-shaped", 4, 2, "stock", 0.099, 91000.0))
    return out


def test_summary_format_and_pair_order():
    got = S.summary(records_8b_and_l4())
    assert [list(x) for x in got] == [["model", "layers", "workload", "stock", "plugin"]] * 4
    # the 4-layer model first (MODEL_ORDER), latency before throughput; only the complete pair of l4
    assert [(x["layers"], x["workload"]) for x in got] == [(4, LAT), (4, THR), (32, LAT), (32, THR)]
    assert got[0] == {"model": "Llama-3.1-8B-shaped", "layers": 4, "workload": LAT, "stock": [0.100], "plugin": [0.101]}
    assert got[2]["stock"] == [0.650, 0.655, 0.648] and got[2]["plugin"] == [0.652, 0.654, 0.651]
    assert got[3]["stock"] == [29400.0, 29450.0, 29380.0] and got[3]["plugin"] == [29300.0, 29440.0, 29330.0]


def test_cost_signs_median_spread_and_limits():
    assert S.cost_pct("latency", 1.0, 1.01) == pytest.approx(1.0)        # slower latency: positive cost
    assert S.cost_pct("throughput", 100.0, 99.0) == pytest.approx(1.0)   # fewer tok/s: positive cost
    assert S.cost_pct("throughput", 100.0, 101.0) == pytest.approx(-1.0)
    g = {x["workload"] + str(x["layers"]): x for x in S.groups(records_8b_and_l4())}
    lat8 = S.stats(g[LAT + "32"])
    assert lat8["cost_pct_per_pair"] == pytest.approx([100 * 0.002 / 0.650, -100 * 0.001 / 0.655, 100 * 0.003 / 0.648])
    assert lat8["median_cost_pct"] == pytest.approx(100 * 0.002 / 0.650)
    assert lat8["stock_spread_pct"] == pytest.approx(100 * (0.655 - 0.648) / 0.650)
    assert lat8["limit_pct"] == 0.5
    assert S.stats(g[THR + "4"])["limit_pct"] == 1.0
    assert g[LAT + "4"]["incomplete"] == [2]


def test_load_dedups_runs_across_calls(tmp_path):
    a = records_8b_and_l4()
    failed = rec("8b", "Llama-3.1-8B-shaped", 32, 1, "plugin", status="failed", finished=50.0)
    older = rec("8b", "Llama-3.1-8B-shaped", 32, 2, "stock", 0.700, 20000.0, finished=1.0)
    newer = rec("8b", "Llama-3.1-8B-shaped", 32, 2, "stock", 0.655, 29450.0, finished=2.0)
    r1 = write(tmp_path / "call1", [x for x in a if x["run"] != "8b_p2_stock"] + [older])
    r2 = write(tmp_path / "call2", [failed, newer])       # a later failed retry must not replace the ok run
    records, _ = S.load([r1, r2])
    assert S.summary(records) == S.summary(a)


def test_main_on_tarball_collects_and_writes_both_files(tmp_path):
    env = {"gpu": {"status": "ok", "driver": "580", "devices": [{"name": "NVIDIA H200"}]}, "vllm": "0.26.0 (vllm)",
           "torch": "2.11.0 (torch)", "python": "3.12", "git_commit": "abc", "vllm_env": {"VLLM_USE_FLASHINFER_SAMPLER": "0"}}
    keep = write(tmp_path / "w2ext-overhead", records_8b_and_l4(), env)
    (keep / "raw").mkdir()
    (keep / "raw" / "8b_p1_stock.latency.json").write_text("{}")
    tb = tmp_path / "overhead-8b_p1-2-3.tar.gz"
    with tarfile.open(tb, "w:gz") as tf:
        tf.add(keep, arcname="w2ext-overhead")
    out = tmp_path / "results"
    assert S.main([str(tb), "--out", str(out), "--collect"]) == 0
    assert json.loads((out / "summary.json").read_text()) == S.summary(records_8b_and_l4())
    md = (out / "summary.md").read_text()
    assert "NVIDIA H200" in md and "0.26.0" in md and "VLLM_USE_FLASHINFER_SAMPLER=0" in md
    assert "| Llama-3.1-8B-shaped | 32 | latency bs1 512/128 x20 | 3 | 0.6500 / 0.6550 / 0.6480 |" in md
    assert (out / "raw" / "8b_p1_stock.latency.json").exists() and (out / "runs" / "8b_p3_plugin.json").exists()
    # the collected folder alone gives the same summary (what gets committed)
    assert S.main([str(out), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "summary.json").read_text() == (out / "summary.json").read_text()


PROM_MID = """# HELP vllm_w2ext_hook_self_seconds_total x
# TYPE vllm_w2ext_hook_self_seconds_total counter
vllm_w2ext_hook_self_seconds_total{role="engine_core",engine="0",rank="na"} 0.010
vllm_w2ext_hook_self_seconds_created{role="engine_core",engine="0",rank="na"} 1.7e9
vllm_w2ext_hook_self_seconds_total{role="worker",engine="0",rank="0"} 0.005
vllm_w2ext_export_thread_cpu_seconds_total{role="engine_core",engine="0",rank="na"} 0.100
vllm_w2ext_engine_steps_total{role="engine_core",engine="0",rank="na",executed="true"} 1000
vllm_w2ext_engine_steps_total{role="engine_core",engine="0",rank="na",executed="false"} 7
vllm_w2ext_spans_recorded_total{role="engine_core",engine="0",rank="na"} 5000
vllm:num_requests_running 3
"""
PROM_END = PROM_MID.replace("} 0.010", "} 0.030").replace("} 0.005", "} 0.025").replace("} 0.100", "} 0.500") \
    .replace('"true"} 1000', '"true"} 3000')


def test_scrape_self_cost_and_per_step(tmp_path):
    sc = R.self_cost(PROM_MID)
    assert sc["series"] == {"vllm_w2ext_hook_self_seconds_total": {"engine_core": 0.010, "worker": 0.005},
                            "vllm_w2ext_export_thread_cpu_seconds_total": {"engine_core": 0.100}}
    assert sc["engine_steps"] == {"engine_core": 1000} and sc["engine_steps_all"] == {"engine_core": 1007}
    path = tmp_path / "s.prom.gz"
    with gzip.open(path, "wt") as f:
        f.write("# SCRAPE 100.0\n" + PROM_MID + "# SCRAPE 101.0\n" + PROM_MID + "# SCRAPE 105.0\n" + PROM_END)
    got = R.scrape_self_cost(path, split_at=102.5)
    assert got["n_scrapes"] == 3 and got["at_latency_done_t"] == 101.0 and got["final_t"] == 105.0
    plug = [rec("8b", "Llama-3.1-8B-shaped", 32, 1, "plugin", 0.65, 29000.0, self_cost=got)]
    lat = S.per_step(plug, "latency")
    assert lat["steps"] == 1000
    assert lat["us_per_step"]["vllm_w2ext_hook_self_seconds_total"] == pytest.approx(15.0)    # 15 ms / 1000
    assert lat["us_per_step"]["vllm_w2ext_export_thread_cpu_seconds_total"] == pytest.approx(100.0)
    thr = S.per_step(plug, "throughput")                                                      # end minus mid
    assert thr["steps"] == 2000
    assert thr["us_per_step"]["vllm_w2ext_hook_self_seconds_total"] == pytest.approx(20.0)    # 40 ms / 2000
    assert S.per_step(plug, "run")["us_per_step"]["vllm_w2ext_export_thread_cpu_seconds_total"] == pytest.approx(500 / 3)
    # no engine snapshot before the latency task ended: no split, only the whole run
    early = dict(got, at_latency_done=R.self_cost("vllm_w2ext_hook_self_seconds_total{role=\"frontend\"} 0.0\n"))
    plug[0]["self_cost"] = early
    assert S.per_step(plug, "latency")["runs"] == 0 and S.per_step(plug, "throughput")["runs"] == 0
    assert S.per_step(plug, "run")["runs"] == 1


def test_scrape_self_cost_skips_a_later_incomplete_scrape(tmp_path):
    """The counters only grow: a scrape after the last full one with fewer engine steps (taken as the processes
    shut down, the EngineCore's export process already gone) is not the run's final reading, before the latency
    task's end or after it."""
    partial = "vllm_w2ext_hook_self_seconds_total{role=\"frontend\",engine=\"0\",rank=\"na\"} 0.5\n"
    path = tmp_path / "s.prom.gz"
    with gzip.open(path, "wt") as f:
        f.write("# SCRAPE 100.0\n" + PROM_MID + "# SCRAPE 101.0\n" + partial + "# SCRAPE 105.0\n" + PROM_END
                + "# SCRAPE 106.0\n" + partial)
    got = R.scrape_self_cost(path, split_at=102.5)
    assert got["n_scrapes"] == 4
    assert got["final_t"] == 105.0 and got["final"]["engine_steps"] == {"engine_core": 3000}
    assert got["at_latency_done_t"] == 100.0 and got["at_latency_done"]["engine_steps"] == {"engine_core": 1000}


def test_scrub_machine_paths():
    text = f"model {R.ROOT}/x at /tmp/runs/logs/a.log and /tmp/models/llama"
    got = R.scrub(text, [("/tmp/runs", "<runs>"), ("/tmp/models", "<models>")])
    assert got == "model ./x at <runs>/logs/a.log and <models>/llama"
