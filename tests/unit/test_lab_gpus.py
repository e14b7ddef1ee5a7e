"""The lab's GPU table: which GPU a run was on (env.json), its HBM peak, and the lab's numbers for that
GPU; the committed H100 lab results keep comparing with the lab's H100 table, and an H200 run compares
with the lab's H200 column (the answers written out by hand from benchmarks/lab_data)."""
import json
import shutil
from pathlib import Path

import pytest

from vllm_w2ext.lab import gpus
from vllm_w2ext.lab.report.summary import summarise

ROOT = Path(__file__).resolve().parents[2]
REF = json.loads((ROOT / "benchmarks" / "lab_data" / "lab_reference_h100.json").read_text())
H100_LAB = ROOT / "benchmarks" / "results" / "h100" / "lab"


def env(name):
    return {"gpu": {"status": "ok", "devices": [{"index": 0, "name": name}]}}


@pytest.mark.parametrize("name,want", [("NVIDIA H200", ("H200", 4.8)), ("NVIDIA H100 80GB HBM3", ("H100", 3.35)),
                                       ("NVIDIA H100 PCIe", ("H100 PCIe", 2.0)), ("NVIDIA L40S", ("L40S", 0.864)),
                                       ("NVIDIA B200", None)])
def test_gpu_from_the_nvml_name(name, want):
    assert gpus.gpu_of(env(name)) == want


def test_no_gpu():
    assert gpus.gpu_of({"gpu": {"status": "NVML unavailable"}}) is None and gpus.gpu_of({}) is None


def test_lab_numbers_per_gpu():
    assert gpus.lab_metrics(REF, "H100")["latency_bs1_ms"] == 903
    h200 = gpus.lab_metrics(REF, "H200")
    assert h200 == {"offline_throughput_sharegpt_tok_s": 12745, "per_token_latency_bs1_ms": 5.86,
                    "online_throughput_rate_inf_tok_s": 4245, "latency_bs1_ms": 751, "latency_bs4_ms": 777,
                    "latency_bs16_ms": 838, "latency_bs32_ms": 1012}
    assert gpus.lab_metrics(REF, "H100 PCIe") == {}


def test_committed_h100_results_compare_with_the_h100_table():
    s = summarise(str(H100_LAB), REF)
    assert (s["gpu"], s["hbm_tb_s"], s["reference_gpu"]) == ("H100", 3.35, "H100")
    rows = {r["metric"]: r for r in s["comparison"]}
    assert rows["latency_bs1_ms"]["lab"] == rows["latency_bs1_ms"]["lab_h100"] == 903


def test_an_h200_run_compares_with_the_h200_column(tmp_path):
    run = tmp_path / "lab"
    shutil.copytree(H100_LAB, run, ignore=shutil.ignore_patterns("*.png", "extra", "logs"))
    e = json.loads((run / "env.json").read_text())
    e["gpu"]["devices"][0]["name"] = "NVIDIA H200"
    (run / "env.json").write_text(json.dumps(e))
    s = summarise(str(run), REF)
    assert (s["gpu"], s["hbm_tb_s"], s["reference_gpu"]) == ("H200", 4.8, "H200")
    rows = {r["metric"]: r for r in s["comparison"]}
    r = rows["latency_bs1_ms"]
    assert (r["lab"], r["lab_h100"]) == (751, 903)
    assert r["diff_pct"] == pytest.approx(100 * (r["ours"] - 751) / 751)
    assert rows["hbm_bandwidth_fraction_bs1"]["lab"] is None          # the lab gives none for the H200
    # the same measured latency is a smaller share of the H200's larger HBM peak
    lat = s["latency"]["stock"][1]
    assert lat["hbm_fraction"] == pytest.approx(lat["achieved_tb_s"] / 4.8)


def test_beside_sets_an_h200_run_against_our_h100_run_and_checks_bandwidth(tmp_path):
    """A planted H200 run: our H100 run's latencies scaled by exactly the HBM ratio 3.35 / 4.8, so the
    report must say decode followed bandwidth (0.0 % off) and give the lab's ratio beside ours."""
    from vllm_w2ext.lab.report.blocks import _beside
    from vllm_w2ext.lab.report.summary import beside
    run = tmp_path / "lab"
    shutil.copytree(H100_LAB, run, ignore=shutil.ignore_patterns("*.png", "extra", "logs"))
    e = json.loads((run / "env.json").read_text())
    e["gpu"]["devices"][0]["name"] = "NVIDIA H200"
    (run / "env.json").write_text(json.dumps(e))
    k = 3.35 / 4.8
    for f in (run / "raw").glob("*.json"):
        r = json.loads(f.read_text())
        if r.get("experiment") == "latency" and r.get("status") == "ok":
            r["result"]["avg_latency"] *= k
            f.write_text(json.dumps(r))
    h200, h100 = summarise(str(run), REF), summarise(str(H100_LAB), REF)
    b = beside(h200, h100, REF)
    rows = {r["metric"]: r for r in b["rows"]}
    assert b["gpu"] == "H100" and b["bandwidth_ratio"] == pytest.approx(k)
    assert rows["per_token_latency_bs1_ms"]["ratio"] == pytest.approx(k)
    assert rows["latency_bs1_ms"]["lab_ratio"] == pytest.approx(751 / 903)
    text = " ".join(str(x) for blk in _beside({**h200, "beside": b}) for x in blk[1:])
    assert "predict a ratio of 0.698" in text and "measured 0.698 (" in text and "0.0 %; within 10 %" in text
