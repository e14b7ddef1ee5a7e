"""The lab's steps that start no vLLM engine: (1) model folders, (4b) merge + analyze of a profiled run
through the ``vllm-w2ext`` CLI, (5) the NVML summary per session, (8) SGLang's ``bench_one_batch`` (its
own process). Each returns the run's result."""
from __future__ import annotations

import glob
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from vllm_w2ext.analysis.explain.render import render as render_explain
from vllm_w2ext.lab.report.results import llama_weights, nvml_by_phase
from vllm_w2ext.lab.model_folders import llama31_8b_shaped

ROOT = Path(__file__).resolve().parents[2]
H100_NVML = ROOT / "benchmarks" / "results" / "h100" / "metrics"
TOOL = [sys.executable, "-m", "vllm_w2ext.cli"]


def roundtrip(folder: Path) -> dict:
    """Token ids -> text -> ids through the folder's tokenizer (transformers, as vLLM loads it)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(folder))
    v = len(tok)
    ids = [3, 17, 999, min(9876, v - 200), v - 100]
    back = tok(tok.decode(ids), add_special_tokens=False).input_ids
    return {"vocab": v, "ids": ids, "decoded_back": back, "roundtrip_ok": back == ids}


def models(lab, run) -> dict:
    t = lab.target
    cfg = json.loads((t.model / "config.json").read_text())
    out = {"target_model": {"folder": t.model.name, "dummy_weights": t.dummy_weights,
                            "config": {k: cfg.get(k) for k in ("architectures", "hidden_size", "num_hidden_layers",
                                                               "num_attention_heads", "num_key_value_heads",
                                                               "intermediate_size", "vocab_size", "torch_dtype")},
                            "weights": llama_weights(cfg, t.dtype), "tokenizer": roundtrip(t.model)}}
    if t.name == "cpu":        # the H100 folder is built and checked here too (no weights, config + tokenizer)
        f = llama31_8b_shaped(lab.out / "models" / "llama31-8b-shaped")
        c = json.loads((f / "config.json").read_text())
        out["llama31_8b_shaped"] = {"weights": llama_weights(c), "tokenizer": roundtrip(f),
                                    "files": sorted(p.name for p in f.iterdir())}
    return out


def _tool(args: list[str], log: Path) -> dict:
    p = subprocess.run(TOOL + args, capture_output=True, text=True, timeout=1800)
    with open(log, "a") as f:
        f.write("$ vllm-w2ext " + " ".join(args) + f"\nrc={p.returncode}\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}\n")
    if p.returncode != 0 and "invalid choice" in p.stderr:
        return {"status": f"tool missing: `vllm-w2ext {args[0]}` is not in this version of the package", "rc": p.returncode}
    return {"status": "ok" if p.returncode == 0 else f"failed rc={p.returncode}", "rc": p.returncode,
            "stderr_tail": p.stderr[-800:]}


def profile_post(lab, run, run_dir: Path, trace_dir: Path, scrape: Path | None = None) -> dict:
    """Copy the plugin's per-process trace files next to the torch trace, merge, analyze, explain."""
    torch_files = sorted(glob.glob(str(run_dir / "*.pt.trace.json*")))
    spans = sorted(glob.glob(str(trace_dir / "*.pftrace")))
    for s in spans:
        shutil.copy(s, run_dir)
    res = {"torch_traces": [Path(x).name for x in torch_files], "plugin_trace_files": [Path(x).name for x in spans],
           "plugin_trace_bytes": sum(Path(x).stat().st_size for x in spans)}
    log = lab.out / "logs" / f"{run.name}_tools.log"
    merged, breakdown = run_dir / "merged.json.gz", run_dir / "breakdown.json"
    res["merge"] = _tool(["merge", "--out", str(merged), str(run_dir)], log)
    source = merged if res["merge"]["status"] == "ok" else (Path(torch_files[0]) if torch_files else None)
    if source is None:
        res["analyze"] = {"status": "no torch-profiler trace was written"}
        return res
    res["analyze"] = _tool(["analyze", str(source), "--format", "json", "--out", str(breakdown)], log)
    res["analyze"]["input"] = source.name
    if res["analyze"]["status"] == "ok" and breakdown.exists():
        res["breakdown"] = json.loads(breakdown.read_text())
    res["explain"] = explain_run(trace_dir, source, scrape, log)
    return res


def explain_run(trace_dir: Path, profile: Path, scrape: Path | None, log: Path) -> dict:
    """``vllm-w2ext explain`` on the profiled run's span files, its metrics scrape and its kernel trace, written
    next to the kernel trace: explain.json from the command, and explain.txt rendered from that JSON as the
    command's text format would print it (one analysis, not two); the text the report shows, the findings' ids."""
    args = [str(trace_dir), "--profile", str(profile)]
    if scrape is not None and scrape.exists():
        args += ["--metrics", str(scrape)]
    json_out = profile.parent / "explain.json"
    res = _tool(["explain", *args, "--format", "json", "--out", str(json_out)], log)
    if res["status"] != "ok" or not json_out.exists():
        return res
    rep = json.loads(json_out.read_text())
    res["text"] = render_explain(rep, "text")
    (profile.parent / "explain.txt").write_text(res["text"])
    res["findings"] = [f["id"] for f in rep["findings"]]
    return res


def gpu_monitor(lab, run) -> dict:
    if lab.target.gpu:
        lab.close_monitor()
        csvs = sorted(glob.glob(str(lab.out / "metrics" / "nvml_*.csv")))
        if not csvs:
            return {"status": "failed: no NVML CSV was written (nvidia-ml-py missing or NVML failed)"}
        per = {}
        for c in csvs:
            per.update(nvml_by_phase(c))
        return {"status": "ok", "csv": [Path(c).name for c in csvs], "per_session": per}
    # No GPU: the sampler itself needs CUDA + NVML. Its CPU-side logic (per-phase summary) runs on the
    # committed H100 NVML CSVs instead, so the summary path is exercised on every smoke run.
    checks = {Path(p).stem: nvml_by_phase(p) for p in sorted(glob.glob(str(H100_NVML / "nvml_*.csv")))}
    return {"status": "needs CUDA/NVML: sampler not run on this target",
            "cpu_side_check": {"source": "benchmarks/results/h100/metrics/nvml_*.csv (committed H100 samples)",
                               "per_phase": checks}}


SGLANG_TIMEOUT_S = 1800


def _sglang_cmd(lab, python_args: list[str]) -> list[str]:
    """``python3 <args>`` for SGLang: with the lab's ``--sglang-env`` file sourced first in a shell of its own,
    so SGLang's site-packages (its transformers, flashinfer, ...) stay out of the lab's and vLLM's processes."""
    env_file = lab.lab_args.get("sglang_env")
    if not env_file:
        return [sys.executable, *python_args]
    return ["bash", "-c", 'source "$0" && exec python3 "$@"', str(env_file), *python_args]


def sglang_unavailable(lab) -> str | None:
    """Why SGLang's bench_one_batch cannot run here, or None."""
    if not lab.target.gpu:
        return "SGLang's bench_one_batch needs a CUDA GPU; this lab runs on the CPU target"
    if lab.lab_args.get("sglang_env"):
        p = subprocess.run(_sglang_cmd(lab, ["-c", "import sglang, sglang.bench_one_batch"]),
                           capture_output=True, text=True, timeout=600)
        return None if p.returncode == 0 else (f"sglang does not import with --sglang-env "
                                               f"{lab.lab_args['sglang_env']}: {p.stderr.strip()[-600:]}")
    if importlib.util.find_spec("sglang") is None:
        return ("SGLang is not installed in this environment (sglang 0.5.15-0.5.17 pin torch 2.11, the GPU "
                "machine's; stage it with benchmarks/gpu/sglang_stage.sh and pass --sglang-env)")
    return None


def sglang(lab, run) -> dict:
    """``python -m sglang.bench_one_batch`` on the lab's model at the run's batch sizes and lengths; its
    JSONL rows (prefill/decode latency and throughput per batch size). Skipped, with the reason, where
    SGLang cannot run."""
    why = sglang_unavailable(lab)
    if why:
        return {"skipped": why}
    p, t = run.params, lab.target
    rows_file = lab.out / "raw" / "sglang_bench_one_batch.jsonl"
    rows_file.unlink(missing_ok=True)
    args = ["-m", "sglang.bench_one_batch", "--model-path", str(t.model),
            "--batch-size", *map(str, p["batch_sizes"]), "--input-len", str(p["input_len"]),
            "--output-len", str(p["output_len"]), "--result-filename", str(rows_file), "--run-name", run.name]
    args += ["--load-format", "dummy"] if t.dummy_weights else []
    args += shlex.split(lab.lab_args.get("sglang_args") or "")
    cmd = _sglang_cmd(lab, args)
    log = lab.out / "logs" / "sglang_bench_one_batch.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=SGLANG_TIMEOUT_S).returncode
    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()] \
        if rows_file.exists() else []
    if rc != 0 or not rows:
        raise RuntimeError(f"sglang.bench_one_batch failed (rc={rc}, {len(rows)} rows); see {log}")
    return {"rows": rows, "cmd": cmd}


LOCAL = {"models": models, "profile_post": profile_post, "gpu_monitor": gpu_monitor, "sglang": sglang}
