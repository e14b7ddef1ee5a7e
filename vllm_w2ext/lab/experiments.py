"""The lab's experiments (issue #5 numbering) as a plan of engine sessions; no vLLM import here.

A *session* is one engine start (the multi-task ``engine_driver``, or ``vllm serve`` with ``vllm bench
serve`` clients) or a local step with no engine; each produces one or more *runs*, each run one raw
JSON (``raw/<run>.json``). Engine starts are the expensive part (H100 ~80 s, CPU ~20 s), so
measurements share an engine where vLLM allows it (``fold``).

1 models      model folder(s): config, weight bytes, tokenizer round trip (no engine)
2 throughput  ``vllm bench throughput``'s code: synthetic ShareGPT-format file and random lengths
3 latency     latency vs batch (in 512 / out 128), one engine for every batch size
4 profile     torch profiler around a few decode steps + the plugin's trace files -> merge -> analyze
5 gpu_monitor NVML sampler around every session (phase column), summarised per session (needs CUDA)
6 online      ``vllm serve`` (plugin on) + ``vllm bench serve`` at rate inf and a finite rate
7 overhead    stock vs plugin, interleaved ABBA, >= 3 reps: random throughput + batch-1 latency
8 sglang      SGLang's ``bench_one_batch`` (the lab's second experiment; needs CUDA and an importable
              sglang, else skipped with the reason) and vLLM at the same batch sizes and lengths: a
              prefill-only run (output 1) and the full run, whose difference is the decode
"""
from __future__ import annotations

from dataclasses import dataclass, field

EXPERIMENTS = ("models", "throughput", "latency", "profile", "gpu_monitor", "online", "overhead", "sglang")
SIZES = {
    "full": dict(thr_prompts=500, rand_in=256, rand_out=256, sharegpt_n=500, lat_batches=[1, 4, 16, 32],
                 lat_in=512, lat_out=128, lat_warmup=3, lat_iters=10, prof_batches=[1, 32], prof_in=512,
                 prof_out=8, online_prompts=500, online_rate=20.0, online_ab=4, reps=3,
                 sgl_batches=[32, 64, 128], sgl_in=512, sgl_out=256, sgl_iters=3),
    "smoke": dict(thr_prompts=16, rand_in=32, rand_out=32, sharegpt_n=16, lat_batches=[1, 4], lat_in=64,
                  lat_out=16, lat_warmup=1, lat_iters=2, prof_batches=[1], prof_in=64, prof_out=4,
                  online_prompts=16, online_rate=8.0, online_ab=1, reps=1,
                  sgl_batches=[2], sgl_in=32, sgl_out=8, sgl_iters=1),
}


@dataclass
class Run:
    name: str                 # raw/<name>.json
    experiment: str
    mode: str                 # "stock" | "plugin" | "-" (no engine)
    params: dict = field(default_factory=dict)


@dataclass
class Session:
    name: str
    experiment: str
    kind: str                 # "driver" | "serve" | "local"
    mode: str
    runs: list[Run]
    spec: dict = field(default_factory=dict)

    @property
    def engine_starts(self) -> int:
        return 0 if self.kind == "local" else 1


def _modes(plugin: str) -> list[str]:
    return {"on": ["plugin"], "off": ["stock"], "both": ["stock", "plugin"]}[plugin]


def ab_order(reps: int) -> list[tuple[str, int]]:
    """Interleaved ABBA pairs: stock 1, plugin 1, plugin 2, stock 2, stock 3, plugin 3, ..."""
    out = []
    for r in range(1, reps + 1):
        pair = [("stock", r), ("plugin", r)]
        out += pair if r % 2 else pair[::-1]
    return out


def plan(only: list[str], plugin: str, size: str, reps: int | None, sharegpt_path: str) -> list[Session]:
    if size not in SIZES:
        raise ValueError(f"--size: expected one of {sorted(SIZES)}, got {size!r}")
    if plugin not in ("on", "off", "both"):
        raise ValueError(f"--plugin: expected on, off or both, got {plugin!r}")
    bad = [x for x in only if x not in EXPERIMENTS]
    if bad:
        raise ValueError(f"--only: unknown experiment(s) {bad}; expected a subset of {', '.join(EXPERIMENTS)}")
    s = dict(SIZES[size])
    if reps is not None:
        if reps < 1:
            raise ValueError(f"--reps: expected an integer >= 1, got {reps}")
        s["reps"] = reps
    out: list[Session] = []
    if "models" in only:
        out.append(Session("models", "models", "local", "-", [Run("models", "models", "-")]))
    if "throughput" in only:
        sharegpt = ["--dataset-name", "sharegpt", "--dataset-path", sharegpt_path, "--num-prompts", str(s["thr_prompts"])]
        for m in _modes(plugin):
            runs = [Run(f"thr_sharegpt_{m}", "throughput", m, {"kind": "throughput", "dataset": "sharegpt",
                                                               "bench_args": sharegpt}),
                    Run(f"thr_random_{m}", "throughput", m, {"kind": "throughput", "dataset": "random",
                                                             "bench_args": _random_args(s)})]
            out.append(Session(f"thr_{m}", "throughput", "driver", m, runs))
    if "latency" in only:
        for m in _modes(plugin):
            runs = [Run(f"lat_bs{b}_{m}", "latency", m, {"kind": "latency", "batch_size": b, "input_len": s["lat_in"],
                                                         "output_len": s["lat_out"], "warmup": s["lat_warmup"],
                                                         "iters": s["lat_iters"]}) for b in s["lat_batches"]]
            out.append(Session(f"lat_{m}", "latency", "driver", m, runs))
    if "profile" in only:
        runs = [Run(f"profile_bs{b}", "profile", "plugin", {"kind": "profile", "batch_size": b,
                                                             "input_len": s["prof_in"], "output_len": s["prof_out"]})
                for b in s["prof_batches"]]
        out.append(Session("profile", "profile", "driver", "plugin", runs, {"profile": True}))
    if "online" in only:
        base = {"input_len": s["rand_in"], "output_len": s["rand_out"], "num_prompts": s["online_prompts"]}
        runs = [Run("online_rate_inf", "online", "plugin", dict(base, rate="inf")),
                Run(f"online_rate_{s['online_rate']:g}", "online", "plugin", dict(base, rate=str(s["online_rate"])))]
        # the served A/B inside one server: the engine's hooks paused ("stock") and on, ABBA (runner._serve)
        runs += [Run(f"online_ab_{'on' if m == 'plugin' else 'paused'}_{r}", "online", "plugin",
                     dict(base, rate="inf", hooks=m == "plugin", rep=r)) for m, r in ab_order(s["online_ab"])]
        out.append(Session("online", "online", "serve", "plugin", runs))
    if "overhead" in only:
        for m, r in ab_order(s["reps"]):
            runs = [Run(f"ab_thr_{m}_{r}", "overhead", m, {"kind": "throughput", "dataset": "random",
                                                           "bench_args": _random_args(s), "rep": r}),
                    Run(f"ab_lat_{m}_{r}", "overhead", m, {"kind": "latency", "batch_size": 1, "input_len": s["lat_in"],
                                                           "output_len": s["lat_out"], "warmup": s["lat_warmup"],
                                                           "iters": s["lat_iters"], "rep": r})]
            out.append(Session(f"ab_{m}_{r}", "overhead", "driver", m, runs))
    if "sglang" in only:
        out += _sglang(s, _modes(plugin)[0])
    if "gpu_monitor" in only:           # last: summarises the NVML CSV written around all the sessions above
        out.append(Session("gpu_monitor", "gpu_monitor", "local", "-", [Run("gpu_monitor", "gpu_monitor", "-")]))
    return fold(out)


def _sglang(s: dict, mode: str) -> list[Session]:
    """SGLang's bench_one_batch (a local step: it starts its own model runner) and vLLM at the same
    batch sizes and lengths on one engine: output 1 (prefill) and the full output per batch size."""
    lat = {"input_len": s["sgl_in"], "warmup": 1, "iters": s["sgl_iters"]}
    runs = []
    for b in s["sgl_batches"]:
        runs += [Run(f"sgl_vllm_prefill_bs{b}", "sglang", mode, dict(lat, kind="latency", batch_size=b, output_len=1)),
                 Run(f"sgl_vllm_bs{b}", "sglang", mode, dict(lat, kind="latency", batch_size=b, output_len=s["sgl_out"]))]
    bench = Run("sglang_bench_one_batch", "sglang", "-", {"batch_sizes": s["sgl_batches"], "input_len": s["sgl_in"],
                                                          "output_len": s["sgl_out"]})
    return [Session(f"sgl_vllm_{mode}", "sglang", "driver", mode, runs),
            Session("sglang_bench_one_batch", "sglang", "local", "-", [bench])]


def _random_args(s: dict) -> list[str]:
    return ["--dataset-name", "random", "--random-input-len", str(s["rand_in"]), "--random-output-len",
            str(s["rand_out"]), "--num-prompts", str(s["thr_prompts"])]


def fold(sessions: list[Session]) -> list[Session]:
    """One engine per mode for throughput, latency, vLLM's side of the SGLang comparison and the overhead's
    first repetition: their runs join
    the mode's first A/B session (or its first throughput/latency session), after that session's own runs,
    so every A/B repetition measures first on a fresh engine. Saves 4 engine starts at full size."""
    def foldable(x: Session) -> bool:
        return x.kind == "driver" and x.experiment in ("throughput", "latency", "sglang")

    host: dict[str, Session] = {}
    for x in sessions:
        if x.experiment == "overhead" and x.runs[0].params.get("rep") == 1:
            host.setdefault(x.mode, x)
    for x in sessions:
        if foldable(x):
            host.setdefault(x.mode, x)
    out = []
    for x in sessions:
        if foldable(x) and host[x.mode] is not x:
            host[x.mode].runs.extend(x.runs)
        else:
            out.append(x)
    return out


def describe(sessions: list[Session], est_start_s: float) -> str:
    starts = sum(x.engine_starts for x in sessions)
    lines = [f"plan: {len(sessions)} sessions, {sum(len(x.runs) for x in sessions)} runs, {starts} engine starts "
             f"(~{starts * est_start_s / 60:.1f} min of engine start-up alone)"]
    for x in sessions:
        lines.append(f"  [{x.experiment:<11}] {x.name:<18} {x.kind:<6} {x.mode:<6} runs: "
                     + ", ".join(r.name for r in x.runs))
    return "\n".join(lines)
