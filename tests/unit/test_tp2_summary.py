"""benchmarks/gpu/tp2_summary.py (issue #15's TP=2 pairs and the TP=1 toggle next to them) on hand-made run
records with planted values: pair order, cost sign, stock spread, the TP=1 paused/resumed split, and the
scrubbing of machine paths from what it copies. No vLLM, no torch."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from gpu_scripts import load


S = load("tp2_summary")


def _run(tmp_path, pair: int, arm: str, lat1: float, thr: float, t0: float) -> Path:
    rec = {"done": True, "rc": 0, "model": "Llama-3.1-8B-shaped", "layers": 32, "tp": 2, "pair": pair, "arm": arm,
           "measures": [{"workload": "lat1", "value": lat1, "t": t0, "iters": [lat1] * 10},
                        {"workload": "thr", "value": thr, "t": t0 + 10}]}
    p = tmp_path / f"8b_tp2_p{pair}_{arm}.json"
    p.write_text(json.dumps(rec))
    (tmp_path / f"8b_tp2_p{pair}_{arm}.log.gz").write_bytes(gzip.compress(
        f"INFO {S.SAMPLER_OFF}\nusing cache /root/.cache/vllm/x and model /tmp/models/m\n".encode()))
    return p


@pytest.fixture
def records(tmp_path):
    # pair 1: stock first, plugin 1 % slower in latency and 1 % fewer tok/s; pair 2: plugin first, plugin
    # 1 % faster in latency; pair 3 (written first, sorted by pair): equal
    return [_run(tmp_path, 3, "stock", 1.00, 1000.0, 500), _run(tmp_path, 3, "plugin", 1.00, 1000.0, 900),
            _run(tmp_path, 1, "stock", 1.00, 1000.0, 0), _run(tmp_path, 1, "plugin", 1.01, 990.0, 100),
            _run(tmp_path, 2, "plugin", 0.99, 1000.0, 200), _run(tmp_path, 2, "stock", 1.00, 1010.0, 300)]


def test_pairs_in_pair_order_with_cost_and_order(records):
    rows, detail = S.pairs(records)
    lat = next(r for r in rows if r["workload"] == "lat1")
    assert (lat["tp"], lat["pairs"], lat["stock"], lat["plugin"]) == (2, [1, 2, 3], [1.0, 1.0, 1.0], [1.01, 0.99, 1.0])
    costs = [round(d["cost_pct"], 6) for d in detail if d["workload"] == "lat1"]
    assert costs == [1.0, -1.0, 0.0]
    thr = [round(d["cost_pct"], 6) for d in detail if d["workload"] == "thr"]
    assert thr == [1.0, round(100 * 10 / 1010, 6), 0.0]          # fewer tok/s with the plugin = positive cost
    assert [(d["first"], d["between_s"]) for d in detail if d["workload"] == "lat1"] == \
        [("stock", 100.0), ("plugin", 100.0), ("stock", 400.0)]
    assert all(d["sampler_off"] == (True, True) for d in detail)


def test_markdown_states_median_and_stock_spread(records):
    rows, detail = S.pairs(records)
    md = S.markdown(rows, detail, None, ["2 x Test GPU"])
    assert "| lat1 (latency, batch 1, 512 in / 128 out) | s | 3 | 1.0000 / 1.0000 / 1.0000 | 1.0100 / 0.9900 / 1.0000 " \
           "| +1.00 / -1.00 / +0.00 | +0.00 | 0.00 | 2.00 |" in md
    assert S.spread_pct([1010.0, 1000.0, 1000.0]) == pytest.approx(1.0)
    assert "every run's log says so" in md


def test_tp1_toggle_paused_and_resumed(tmp_path):
    p = tmp_path / "toggle_8b.json"
    p.write_text(json.dumps({"run": "toggle_8b", "tp": 1, "spec": {"lat_iters": 3}, "stopped_after_block": 1,
                             "measures": [{"workload": "lat1", "on": True, "value": 2.0},
                                          {"workload": "lat1", "on": False, "value": 1.0},
                                          {"workload": "lat1", "on": False, "value": 1.2},
                                          {"workload": "lat1", "on": True, "value": 2.2}]}))
    t = S.tp1_rows(p)
    assert t["workloads"]["lat1"] == {"paused": [1.0, 1.2], "resumed": [2.0, 2.2]} and t["blocks"] == 1


def test_collect_scrubs_machine_paths(records, tmp_path):
    out = tmp_path / "out"
    S.collect([records[0], records[0].with_name("8b_tp2_p3_stock.log.gz")], out)
    log = gzip.decompress((out / "8b_tp2_p3_stock.log.gz").read_bytes()).decode()
    assert "/root" not in log and "/tmp" not in log
    assert "<cache>/vllm/x" in log and "<data>/models/m" in log
    assert S.scrub("/home/alice/run") == "<home>/run"
