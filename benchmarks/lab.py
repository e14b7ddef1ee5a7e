"""The lab, one command (issue #5):

    python benchmarks/lab.py --target cpu|gpu [--only throughput,latency,...] [--plugin on|off|both]
                             [--size smoke|full] [--out DIR] [--reps N] [--model DIR]
    python -m vllm_w2ext.lab.report DIR        # report.md, report.html, charts

Experiments: models, throughput, latency, profile, gpu_monitor, online, overhead (see
vllm_w2ext/lab/experiments.py). Raw JSON per run in DIR/raw/, env.json, logs/, metrics/ (scrapes,
NVML), profile/. Runs whose raw JSON exists are skipped (resume); --plugin applies to throughput
and latency (profile and online always run with the plugin, overhead always runs both)."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vllm_w2ext.lab import experiments, lab_env, sharegpt_sample  # noqa: E402
from vllm_w2ext.lab.targets import make_target  # noqa: E402

SAMPLE = ROOT / "benchmarks" / "lab_data" / "synthetic_sharegpt_format_sample.json"
EST_START_S = {"cpu": 25, "gpu": 80, "h100": 80}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, choices=("cpu", "gpu", "h100"),
                    help="gpu: any CUDA GPU (the report reads which from env.json); h100: the same, the old name")
    ap.add_argument("--only", default=",".join(experiments.EXPERIMENTS),
                    help="comma-separated subset of: " + ", ".join(experiments.EXPERIMENTS))
    ap.add_argument("--plugin", default=None, choices=("on", "off", "both"),
                    help="for throughput and latency (default: both at full size, on at smoke size)")
    ap.add_argument("--size", default="full", choices=tuple(experiments.SIZES))
    ap.add_argument("--out", default="out/lab")
    ap.add_argument("--reps", type=int, default=None, help="A/B repetitions of the overhead experiment")
    ap.add_argument("--model", default=None, help="model folder (default: tiny Llama on cpu, 8B-shaped on gpu)")
    ap.add_argument("--sglang-env", default=None,
                    help="a shell file sourced for SGLang's process only (its own site-packages, which must not "
                         "reach vLLM's), e.g. /tmp/sglang-env.sh from benchmarks/gpu/sglang_stage.sh")
    ap.add_argument("--sglang-args", default="",
                    help="extra bench_one_batch flags, e.g. '--attention-backend triton --sampling-backend pytorch'")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    a = ap.parse_args(argv)
    if a.sglang_env and not Path(a.sglang_env).is_file():
        ap.error(f"--sglang-env: no such file: {a.sglang_env}")
    plugin = a.plugin or ("on" if a.size == "smoke" else "both")
    out = Path(a.out).resolve()
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    if a.size == "smoke":
        sharegpt = SAMPLE
    else:
        sharegpt = sharegpt_sample.write(out / "data" / "synthetic_sharegpt_format_500.json", n=500, seed=0)
    try:
        sessions = experiments.plan(only, plugin, a.size, a.reps, str(sharegpt))
    except ValueError as e:
        ap.error(str(e))
    print(experiments.describe(sessions, EST_START_S[a.target]), flush=True)
    if a.dry_run:
        return 0
    from vllm_w2ext.lab.runner import Lab
    target = make_target(a.target, a.model, out / "models")
    args = dict(vars(a), plugin=plugin, only=only, sharegpt_path=str(sharegpt),
                sharegpt_sha256=hashlib.sha256(Path(sharegpt).read_bytes()).hexdigest(), model=str(target.model))
    lab = Lab(out, target, args)
    env = lab_env.capture(ROOT, args, {"plugin_mode_env": "VLLM_W2EXT=1, VLLM_W2EXT_METRICS_PORT=<free port>, "
                                                          "VLLM_W2EXT_METRICS_INTERVAL_MS=250, OTLP gRPC to a loopback receiver"})
    env["monitor"] = lab.start_monitor()
    (out / "env.json").write_text(json.dumps(env, indent=1))
    try:
        rc = lab.run_all(sessions)
    finally:
        lab.close()
    print(f"raw results in {out}/raw; failed sessions: {lab.failed or 'none'}")
    print(f"report: python -m vllm_w2ext.lab.report {out}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
