"""Runs the lab's plan (``experiments.plan``): one subprocess per engine session, raw JSON per run,
resume (a session whose runs all have their raw JSON is skipped), tqdm progress, plugin exporters
(OTLP to an in-process receiver + the metrics endpoint scraped every 0.5 s) in plugin mode, and the
NVML sampler around everything when a GPU is there. vLLM itself only runs in the subprocesses."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from tqdm import tqdm

from vllm_w2ext.lab import free_port, wait_http
from vllm_w2ext.lab.experiments import Session
from vllm_w2ext.lab.experiments_local import LOCAL
from vllm_w2ext.lab.targets import Target

CLI = [sys.executable, "-m", "vllm_w2ext.lab.vllm_cli"]


class Lab:
    def __init__(self, out: Path, target: Target, lab_args: dict):
        self.out, self.target, self.lab_args = out, target, lab_args
        for d in ("raw", "logs", "metrics", "specs", "profile"):
            (out / d).mkdir(parents=True, exist_ok=True)
        self.phase_file = out / "metrics" / "phase.txt"
        self.monitor: subprocess.Popen | None = None
        self.rx = None
        self.failed: list[str] = []

    # ---- plumbing -------------------------------------------------------------------------------
    def raw(self, run: str) -> Path:
        return self.out / "raw" / f"{run}.json"

    def done(self, s: Session) -> bool:
        return all(self.raw(r.name).exists() for r in s.runs)

    def base_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_W2EXT", "OTEL_"))}
        env.update(self.target.env)
        return env

    def plugin_env(self, session: str) -> dict:
        """Every exporter on: OTLP spans (gRPC) to the in-process receiver + the metrics endpoint."""
        if self.rx is None:
            from vllm_w2ext.receiver import OTLPReceiver
            self.rx = OTLPReceiver().start()
        return {"VLLM_W2EXT": "1", "VLLM_W2EXT_METRICS_PORT": str(free_port()), "VLLM_W2EXT_METRICS_INTERVAL_MS": "250",
                "OTEL_SERVICE_NAME": f"vllm-lab-{session}", **self.rx.env("grpc")}

    def span_count(self) -> int:
        return 0 if self.rx is None else len(self.rx.spans())

    def set_phase(self, name: str) -> None:
        self.phase_file.write_text(name)

    def start_monitor(self) -> str:
        """NVML sampler for this invocation (phase column = current session; one CSV per invocation, so
        stages run in separate calls keep theirs); needs CUDA + nvidia-ml-py."""
        if not self.target.gpu:
            return "not started: target has no GPU (needs CUDA/NVML)"
        self.set_phase("idle")
        self.monitor = subprocess.Popen([sys.executable, "-m", "vllm_w2ext.lab.gpu_monitor",
                                         str(self.out / "metrics" / f"nvml_{int(time.time())}.csv"), "--interval", "0.2",
                                         "--phase-file", str(self.phase_file)])
        return "started"

    def close_monitor(self) -> None:
        if self.monitor and self.monitor.poll() is None:
            self.monitor.send_signal(signal.SIGTERM)
            self.monitor.wait(30)

    def close(self) -> None:
        self.close_monitor()
        if self.rx is not None:
            self.rx.stop()

    def write_raw(self, run, session: Session, result: dict, extra: dict) -> None:
        doc = {"experiment": run.experiment, "run": run.name, "session": session.name, "mode": run.mode,
               "target": self.target.name, "size": self.lab_args.get("size"), "params": run.params,
               "status": "ok", "result": result, **extra}
        tmp = self.raw(run.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, self.raw(run.name))

    # ---- sessions -------------------------------------------------------------------------------
    def run_all(self, sessions: list[Session]) -> int:
        (self.out / "plan.json").write_text(json.dumps([{"session": s.name, "experiment": s.experiment, "kind": s.kind,
                                                         "mode": s.mode, "runs": [r.name for r in s.runs]}
                                                        for s in sessions], indent=1))
        bar = tqdm(sessions, desc="lab", unit="session")
        for s in bar:
            bar.set_postfix_str(s.name)
            if self.done(s):
                tqdm.write(f"skip {s.name}: raw JSON present (resume)")
                continue
            t0 = time.time()
            self.set_phase(s.name)
            try:
                getattr(self, f"_{s.kind}")(s)
            except Exception as e:  # noqa: BLE001 -- one failed session must not stop the lab
                self.failed.append(s.name)
                (self.out / "raw" / f"{s.name}.error.txt").write_text(traceback.format_exc())
                tqdm.write(f"FAILED {s.name}: {e}")
            finally:
                self.set_phase("idle")
            tqdm.write(f"{s.name}: {time.time() - t0:.1f} s")
        return 1 if self.failed else 0

    def _local(self, s: Session) -> None:
        for r in s.runs:
            t0 = time.time()
            result = LOCAL[s.experiment](self, r)
            self.write_raw(r, s, result, {"wall_s": round(time.time() - t0, 2)})

    def _engine_env(self, s: Session) -> tuple[dict, dict]:
        plugin = self.plugin_env(s.name) if s.mode == "plugin" else {}
        return dict(self.base_env(), **plugin), plugin

    def _scraper(self, plugin: dict, name: str):
        if not plugin:
            return None
        return subprocess.Popen([sys.executable, "-m", "vllm_w2ext.lab.scrape",
                                 f"http://127.0.0.1:{plugin['VLLM_W2EXT_METRICS_PORT']}/metrics",
                                 str(self.out / "metrics" / f"scrape_{name}.prom"), "--interval", "0.5"])

    def _call(self, cmd: list[str], env: dict, log: Path, plugin: dict, scrape_name: str) -> float:
        scr = self._scraper(plugin, scrape_name)
        t0 = time.time()
        try:
            with open(log, "a") as lf:
                lf.write("$ " + " ".join(cmd) + "\n")
                lf.flush()
                rc = subprocess.call(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, cwd=self.out)
        finally:
            if scr:
                scr.send_signal(signal.SIGTERM)
                scr.wait(30)
        if rc != 0:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"rc={rc} from {' '.join(cmd[:6])} ...; log {log}:\n{tail}")
        return time.time() - t0

    def _driver(self, s: Session) -> None:
        env, plugin = self._engine_env(s)
        spec = {"engine": self.target.engine_kwargs(), "profiler": None, "tasks": []}
        if s.spec.get("profile"):
            pdir = self.out / "profile" / s.name
            env["VLLM_W2EXT_TRACE_DIR"] = str(pdir / "w2ext")
            spec["profiler"] = {"profiler": "torch", "torch_profiler_dir": str(pdir / "torch"),
                                "torch_profiler_with_stack": False, "torch_profiler_use_gzip": True}
        for r in s.runs:
            t = dict(r.params, out=str(self.out / "raw" / f"{r.name}.result.json"))
            if t["kind"] == "profile":
                t["dir"] = str(self.out / "profile" / r.name)
            spec["tasks"].append(t)
        spec_path = self.out / "specs" / f"{s.name}.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        n0 = self.span_count()
        cmd = [sys.executable, "-m", "vllm_w2ext.lab.engine_driver", str(spec_path)]
        wall = self._call(cmd, env, self.out / "logs" / f"{s.name}.log", plugin, s.name)
        time.sleep(1.0 if plugin else 0)
        for r, t in zip(s.runs, spec["tasks"]):
            result = json.loads(Path(t["out"]).read_text())
            extra = {"command": cmd, "session_wall_s": round(wall, 1), "plugin_env": _public(plugin),
                     "spans_received": self.span_count() - n0, "session_runs": [x.name for x in s.runs]}
            if t["kind"] == "profile":
                extra["analysis"] = LOCAL["profile_post"](self, r, Path(t["dir"]), Path(env["VLLM_W2EXT_TRACE_DIR"]),
                                                          self.out / "metrics" / f"scrape_{s.name}.prom")
            self.write_raw(r, s, result, extra)

    def _serve(self, s: Session) -> None:
        env, plugin = self._engine_env(s)
        if plugin and any("hooks" in r.params for r in s.runs):
            env["VLLM_SERVER_DEV_MODE"] = "1"          # vLLM's /collective_rpc: pause / resume the hooks
        port = free_port()
        log = self.out / "logs" / f"{s.name}.log"
        cmd = CLI + ["serve", str(self.target.model), "--port", str(port), "--host", "127.0.0.1",
                     "--served-model-name", "lab", *self.target.cli_args(with_model=False)]
        with open(log, "w") as lf:
            proc = subprocess.Popen(cmd, env=env, stdout=lf, stderr=subprocess.STDOUT, cwd=self.out)
        try:
            wait_http(f"http://127.0.0.1:{port}/health", proc, self.target.serve_timeout_s)
            for i, r in enumerate(s.runs):
                p = r.params
                switch = set_engine_hooks(port, p["hooks"]) if "hooks" in p else None
                n0 = self.span_count()
                bcmd = CLI + ["bench", "serve", "--backend", "vllm", "--model", "lab", "--tokenizer",
                              str(self.target.model), "--port", str(port), "--dataset-name", "random",
                              "--random-input-len", str(p["input_len"]), "--random-output-len", str(p["output_len"]),
                              "--num-prompts", str(p["num_prompts"]), "--request-rate", p["rate"], "--ignore-eos",
                              # new prompts in every run: with one seed, each run after the first hit the
                              # server's prefix cache (94 % of prefill tokens in the first H200 served A/B)
                              "--seed", str(i),
                              "--save-result", "--result-dir", str(self.out / "raw"),
                              "--result-filename", f"{r.name}.bench.json"]
                wall = self._call(bcmd, self.base_env(), self.out / "logs" / f"{r.name}.log", plugin, r.name)
                time.sleep(1.0)
                res = json.loads((self.out / "raw" / f"{r.name}.bench.json").read_text())
                extra = {"command": bcmd, "server_command": cmd, "wall_s": round(wall, 1),
                         "plugin_env": _public(plugin), "spans_received": self.span_count() - n0}
                if switch is not None:
                    extra["hook_switch"] = switch
                self.write_raw(r, s, res, extra)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def set_engine_hooks(port: int, on: bool) -> list:
    """Pause or resume the hooks of a served engine's EngineCore and worker processes through vLLM's
    ``/collective_rpc`` (``VLLM_SERVER_DEV_MODE=1``; ``hooks.control``): each worker's ``{"pid", "calls"}``. At
    TP=1 on the GPU the worker runs inside the EngineCore, so this reaches every per-step hook; with separate
    worker processes (the CPU build) the EngineCore's hooks stay on."""
    import urllib.request
    from vllm_w2ext.hooks.control import UTILITY
    req = urllib.request.Request(f"http://127.0.0.1:{port}/collective_rpc", method="POST",
                                 data=json.dumps({"method": UTILITY, "args": [bool(on)]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())["results"]


def _public(plugin: dict) -> dict:
    return {k: v for k, v in plugin.items() if k.startswith("VLLM_W2EXT") or k == "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"}
