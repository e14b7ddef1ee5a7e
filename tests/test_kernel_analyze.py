"""``vllm-w2ext analyze``: a hand-counted trace (exact numbers), excerpts of the real H100 decode traces
(shares checked against the full traces), the CLI's three formats, bad input, and a CPU-only torch-profiler
trace from real vLLM CPU (no kernels: said clearly, steps still listed)."""
from __future__ import annotations

import csv
import gzip
import io
import json
import lzma
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from vllm_w2ext.analysis.kernels.analyzer import analyze
from vllm_w2ext.analysis.kernels.rules import CATEGORIES, classify_name
from vllm_w2ext.analysis.readers.errors import UnreadableTrace

FIX = Path(__file__).resolve().parent / "fixtures"
HAND = FIX / "kernel_handcount.pt.trace.json"
GEMMS = ("gemm_qkv", "gemm_o", "gemm_mlp", "gemm_lm_head", "gemm")


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", "analyze", *args], capture_output=True,
                          text=True, timeout=300, cwd=str(ROOT))


# (a) hand-counted trace: two steps (plugin ids 7 and 8: prefill with eager launches written before their
# kernels, decode as one CUDA graph whose kernels are written before the cudaGraphLaunch), one kernel
# launched before any step. Every number below was counted by hand from the fixture's timestamps.
def test_hand_counted_trace_exact():
    r = analyze(HAND, top=5)
    expect = {"gemm_qkv": 20, "gemm_o": 12, "gemm_mlp": 60, "gemm_lm_head": 30, "gemm": 0, "attention": 16,
              "kv_cache": 2, "norm": 12, "activation": 2, "rotary": 2, "sampling": 3, "input_prep": 2,
              "communication": 4, "memcpy": 2, "memset": 1, "other": 3}
    assert {c: v["time_us"] for c, v in r["categories"].items()} == expect
    assert r["gpu_time_us"] == 171 and r["kernel_time_us"] == 168
    assert r["categories"]["gemm_mlp"]["share"] == pytest.approx(60 / 171, abs=1e-6)
    assert r["trace"]["kernels"] == 32 and r["trace"]["memcpy"] == 1 and r["trace"]["memset"] == 1
    steps = {s["step"]: s for s in r["steps"]}
    assert sorted(steps) == [7, 8]
    a, b = steps[7], steps[8]
    assert (a["phase"], b["phase"]) == ("prefill", "decode")
    assert (a["kernels"], a["kernel_time_us"], a["gpu_span_us"], a["idle_in_step_us"]) == (14, 81, 88, 7)
    assert (b["kernels"], b["kernel_time_us"], b["gpu_span_us"], b["idle_in_step_us"]) == (19, 88, 105, 17)
    assert a["gap_before_us"] is None and b["gap_before_us"] == 1002
    assert a["launch_api_us"] == 14 and b["launch_api_us"] == 60           # 14 launches; graph+memcpy+memset+driver
    assert a["categories"]["sampling"] == 3        # launched after execute_model ended: still step 7
    assert r["phases"]["prefill"]["categories"]["gemm_lm_head"]["time_us"] == 15
    assert r["phases"]["decode"]["categories"]["communication"]["time_us"] == 4
    assert r["phases"]["outside_steps"]["categories"]["other"]["time_us"] == 2
    assert r["idle"] == {"gpu_window_us": 1345, "gpu_busy_us": 171, "utilization": round(171 / 1345, 6),
                         "in_steps_us": 24, "between_steps_us": 1002, "outside_steps_us": 148}
    apis = r["launch"]["apis"]
    assert {k: (v["count"], v["cpu_time_us"]) for k, v in apis.items()} == {
        "cudaGraphLaunch": (1, 50), "cudaLaunchKernel": (15, 15), "cudaMemcpyAsync": (1, 5),
        "cuLaunchKernelEx": (1, 3), "cudaMemsetAsync": (1, 2)}
    lat = r["launch"]["launch_to_gpu_start"]
    assert lat["cudaGraphLaunch"]["count"] == 1 and lat["cudaGraphLaunch"]["max_us"] == 190   # 2200 - 2010
    assert lat["cudaLaunchKernel"]["count"] == 15 and lat["cudaLaunchKernel"]["max_us"] == 139  # LM head: 1167 - 1028
    top = r["top_kernels"]
    assert [k["name"] for k in top[:1]] == ["nvjet_sm90_tst_128x8_64x12_2x1_v_bz_TNT"]
    assert top[0]["time_us"] == 40 and top[0]["count"] == 2 and top[0]["category"] == "gemm_mlp"
    assert len(top) == 5
    assert r["ordering"] == {"reordered_beyond_window": 0, "activities_without_launch": 0}


def test_rule_table_names():
    assert classify_name("triton_red_fused__to_copy_embedding_rms_norm_0") == "norm"
    assert classify_name("triton_red_fused_fused_add_rms_norm_2") == "norm"
    assert classify_name("triton_poi_fused_mul_silu_slice_1") == "activation"
    assert classify_name("triton_per_fused_add_mean_mul_pow_rsqrt_0") == "norm"   # decomposed RMSNorm
    assert classify_name("triton_poi_fused_add_cat_mul_2") == "fused_unnamed"
    assert classify_name("triton_poi_fused_3") == "fused_unnamed"          # resolved by position
    assert classify_name("triton_tem_fused_mm_0") == "gemm"
    assert classify_name("void cublasLt::splitKreduce_kernel<32, 16, int>") == "gemm_epilogue"
    assert classify_name("void flash::prepare_varlen_num_blocks_kernel<1, false>(int)") == "attention"
    assert classify_name("ncclDevKernel_AllReduce_Sum_f32_RING_LL(x)") == "communication"
    assert classify_name("void vllm::rms_norm_kernel<c10::BFloat16>(x)") == "norm"
    assert classify_name("void vllm::act_and_mul_kernel<c10::BFloat16>(x)") == "activation"
    assert classify_name("void vllm::rotary_embedding_kernel<c10::BFloat16, true>(x)") == "rotary"
    assert classify_name("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "gemm"


# (b) real H100 decode excerpts (4 decode steps, cut by benchmarks/gpu/cut_excerpt.py). Ranges: the full
# traces (127 decode steps each) give, for decode, GEMM 87.3 % / attention 6.1 % at batch 1 and
# GEMM 76.5 % / attention 17.2 % at batch 32 (benchmarks/results/h100/breakdown/).
@pytest.mark.parametrize("batch, gemm_range, attn_range", [(1, (0.84, 0.90), (0.05, 0.08)),
                                                           (32, (0.73, 0.80), (0.15, 0.20))])
def test_h100_excerpt_breakdown(batch, gemm_range, attn_range, tmp_path):
    src = FIX / f"h100_decode_bs{batch}_excerpt.pt.trace.json.xz"
    assert src.stat().st_size < 300_000
    r = analyze(src)
    assert r["trace"]["devices"] == ["NVIDIA H100 80GB HBM3"] and r["trace"]["rank"] == 0
    cats = r["categories"]
    gemm = sum(cats[c]["share"] for c in GEMMS)
    assert gemm_range[0] <= gemm <= gemm_range[1]
    assert attn_range[0] <= cats["attention"]["share"] <= attn_range[1]
    assert cats["other"]["share"] < 0.01 and cats["gemm"]["time_us"] == 0     # every GEMM split
    assert cats["gemm_mlp"]["time_us"] > cats["gemm_qkv"]["time_us"] > cats["gemm_o"]["time_us"] > 0
    # one QKV GEMM, one attention kernel, one KV-cache write per layer: 32 layers x 4 steps
    assert cats["kv_cache"]["count"] == 128 and cats["gemm_qkv"]["count"] == 128
    assert [s["phase"] for s in r["steps"]] == ["decode"] * 4 and list(r["phases"]) == ["decode"]
    for s in r["steps"]:
        assert s["kernels"] > 400 and 0 <= s["idle_in_step_us"] < 0.1 * s["gpu_span_us"]
    assert r["launch"]["apis"]["cudaGraphLaunch"]["count"] == 4
    assert r["ordering"]["activities_without_launch"] == 0
    # same trace gzip-compressed and plain: same result
    raw = lzma.decompress(src.read_bytes())
    (tmp_path / "t.json.gz").write_bytes(gzip.compress(raw))
    (tmp_path / "t.json").write_bytes(raw)
    for p in ("t.json.gz", "t.json"):
        assert analyze(tmp_path / p)["categories"] == cats


# (c) CLI: the three formats agree with analyze(), --out and --top work
def test_cli_formats_round_trip(tmp_path):
    expect = analyze(HAND, top=3)
    p = cli(str(HAND), "--format", "json", "--top", "3", "--out", str(tmp_path / "r.json"))
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(expect))
    p = cli(str(HAND), "--format", "csv", "--top", "3")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    cat_all = {r["key"]: float(r["time_us"]) for r in rows if r["section"] == "category" and r["phase"] == "all"}
    assert set(cat_all) == set(CATEGORIES)
    assert cat_all == {c: v["time_us"] for c, v in expect["categories"].items()}
    decode = {r["key"]: float(r["time_us"]) for r in rows if r["section"] == "category" and r["phase"] == "decode"}
    assert decode == {c: v["time_us"] for c, v in expect["phases"]["decode"]["categories"].items()}
    step8 = {r["key"]: float(r["time_us"]) for r in rows if r["section"] == "step" and r["step"] == "8"}
    assert step8["gpu_span_us"] == 105 and step8["gemm_mlp"] == 30
    assert [r["key"] for r in rows if r["section"] == "top_kernel"] == [k["name"] for k in expect["top_kernels"]]
    p = cli(str(HAND))
    assert p.returncode == 0, p.stderr
    assert "gemm_mlp" in p.stdout and "Top 20 kernels" in p.stdout and "between steps 1.002 ms" in p.stdout


def test_bad_input_is_a_clear_error(tmp_path):
    p = cli(str(tmp_path / "missing.json"))
    assert p.returncode == 2 and "trace file not found" in p.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "x", ')
    p = cli(str(bad))
    assert p.returncode == 0 and "cut short" in p.stderr, p.stderr          # analysed, with a note
    (tmp_path / "nojson.txt").write_text("hello")
    p = cli(str(tmp_path / "nojson.txt"))
    assert p.returncode == 2 and "no \"traceEvents\" array" in p.stderr, p.stderr
    with pytest.raises(UnreadableTrace):
        analyze(tmp_path / "missing.json")
    assert cli(str(HAND), "--top", "-1").returncode == 2


# (d) a CPU torch-profiler trace of real vLLM CPU with the plugin on: no kernels, steps from annotations
@pytest.fixture(scope="module")
def cpu_profile(profiled_run) -> Path:
    """The session's profiled run (conftest.profiled_run: 4 prompts x 5 tokens), shared with test_merge_perfetto."""
    traces = sorted((profiled_run / "prof").rglob("*.pt.trace.json*"))
    assert traces, list((profiled_run / "prof").rglob("*"))
    return traces[0]


def test_cpu_only_trace_says_no_kernels(cpu_profile):
    r = analyze(cpu_profile)
    assert r["has_gpu_kernels"] is False and r["gpu_time_us"] == 0
    assert any("no GPU kernels" in n for n in r["notes"])
    phases = {s["phase"] for s in r["steps"]}
    assert {"prefill", "decode"} <= phases, r["steps"]
    assert len(r["steps"]) >= 4 and all(s["cpu_dur_us"] > 0 for s in r["steps"])
    assert all(s["kernels"] == 0 for s in r["steps"])
    p = cli(str(cpu_profile))
    assert p.returncode == 0 and "NOTE: no GPU kernels" in p.stdout


def test_merged_trace_gives_the_same_breakdown(tmp_path):
    """`vllm-w2ext merge` output (profiler events + our tracks and flows) analyses like its source."""
    from vllm_w2ext.analysis.merge.merger import merge
    src = FIX / "h100_decode_bs1_excerpt.pt.trace.json.xz"
    merge([str(src)], str(tmp_path / "merged.json.gz"))
    a, b = analyze(src), analyze(tmp_path / "merged.json.gz")
    import gzip
    merged = json.loads(gzip.decompress((tmp_path / "merged.json.gz").read_bytes()))
    # merge replaces the profiler's naming metadata with its own (named, ordered tracks)
    assert any(e.get("ph") == "M" and e.get("name") == "process_sort_index" for e in merged["traceEvents"])
    for key in ("categories", "phases", "idle", "launch", "top_kernels", "gpu_time_us"):
        assert b[key] == a[key], key
    assert [s["gpu_span_us"] for s in b["steps"]] == [s["gpu_span_us"] for s in a["steps"]]
