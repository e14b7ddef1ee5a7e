"""Offline driver for the tests: LLM.generate on a model, then a clean engine shutdown.

usage: offline.py MODEL OUT_JSON PARAMS_JSON
params: prompts, max_tokens, max_num_seqs, prompt_words (the first prompt's words; each next one has one
more), max_num_batched_tokens (vLLM's token budget per step: below a prompt's length its prefill is chunked),
scheduler_cls, profile_dir (vLLM's torch profiler around the first generate), tensor_parallel_size,
distributed_executor_backend ("mp", "ray"), start_method ("fork": the workers are forked, as in GPU library
use, although the CPU platform asks for spawn; "spawn": vLLM's CPU default), and for metrics runs:
  metrics_port  scrape our own endpoint after each phase (text kept in the output)
  settle_s      the scrape waits until the counters it watches have not moved for this long (1.5)
  scrape_steps  the scrape also waits for the step counter, every worker rank's phases and the decode
                tokens of every generate call so far (true; false when the hooks record nothing)
  phases        [{"slow": bool, "rounds": n, "pause_s": s}]: generate `rounds` times per phase, pausing
                `pause_s` after each; "slow" creates the flag file of tests/drivers/slow_scheduler.py
                for that phase
  slow_flag     the flag file path
  hold_file     after the phases, keep the engine (and metrics endpoint) up until this file exists
  pause_check   after the phases: pause every hook in every process (vllm_w2ext.hooks.control), generate,
                wait 1 s, resume, generate, wait 1 s; each switch's per-process hook-call counts and export
                thread wakes go into "pause_check"; then the
                front end alone paused, generate, and the engine's processes alone, generate ("pause_scoped":
                each one's counts before and after)
  (with VLLM_ENABLE_V1_MULTIPROCESSING=0, the output's "bounds" says which hooks ran as bounds hooks)
  kill_workers  seconds: after the phases, wait that long, then SIGKILL the worker processes before
                shutting the engine down (what vLLM's executor does to workers that do not exit in time:
                no atexit, no shutdown hook); their pids go into the output as "killed_workers"
"""
import json
import os
import sys
import time
import urllib.request


def _fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _decode_tokens(lines: list[str]) -> float:
    return sum(float(x.rsplit(" ", 1)[1]) for x in lines
               if x.startswith("vllm_w2ext_batch_tokens_total{") and 'kind="decode"' in x)


def scrape(port: int, settle_s: float = 1.5, steps: bool = True, timeout_s: float = 30.0, workers: int = 1,
           decode_tokens: int = 0) -> str:
    """The endpoint's text once every process's counters have caught up with the work just done:
    the step and gap counts unchanged for ``settle_s`` (> VLLM_W2EXT_METRICS_INTERVAL_MS). Metrics
    travel worker -> export process -> snapshot file -> endpoint; a fixed sleep is not enough on a
    loaded 2-core machine. ``steps``: wait for the EngineCore's step counter, the phases of each of
    ``workers`` worker ranks and at least ``decode_tokens`` decode tokens too (the work done so far: a
    quiet spell alone can end before a starved export process's last snapshot; False for runs whose hooks
    record nothing)."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while True:
        text = _fetch(port)
        key = [line for line in text.splitlines() if line.startswith((
            "vllm_w2ext_engine_steps_total", "vllm_w2ext_scheduler_gap_seconds_count",
            "vllm_w2ext_phase_duration_seconds_count", "vllm_w2ext_hook_errors_total",
            "vllm_w2ext_batch_tokens_total"))]
        now = time.monotonic()
        # every role's series must be there before "unchanged" means settled: on a loaded machine the
        # front end's lines can stand still for settle_s while the EngineCore's first snapshot is on its way
        complete = not steps or any(k.startswith("vllm_w2ext_engine_steps_total") for k in key) and \
            all(any(k.startswith("vllm_w2ext_phase_duration_seconds_count") and 'role="worker"' in k
                    and f'rank="{r}"' in k for k in key) for r in range(workers)) and \
            _decode_tokens(key) >= decode_tokens
        if key != last or not complete:
            last, since = key, now
        if (complete and now - since >= settle_s) or now > deadline:
            return text
        time.sleep(0.25)


def _helper(p) -> bool:
    """Our export processes and multiprocessing's resource tracker: not vLLM processes."""
    try:
        cmd = " ".join(p.cmdline())
    except Exception:
        return True
    return "vllm_w2ext.export_child" in cmd or "resource_tracker" in cmd


def kill_workers(wait_s: float) -> list[int]:
    """SIGKILL the worker processes: children of the EngineCore (a child of this process)."""
    import signal

    import psutil
    time.sleep(wait_s)            # > VLLM_W2EXT_EXPORT_INTERVAL_MS: what they recorded is in their pipes
    cores = [c for c in psutil.Process().children() if not _helper(c)]
    workers = [w for c in cores for w in c.children() if not _helper(w)]
    for w in workers:
        os.kill(w.pid, signal.SIGKILL)
    psutil.wait_procs(workers, timeout=30)
    return [w.pid for w in workers]


def force_fork() -> None:
    """Fork the EngineCore and the workers, as vLLM does on the GPU when a script builds an ``LLM``
    (the CPU platform sets ``VLLM_WORKER_MULTIPROC_METHOD=spawn`` in its config check)."""
    from vllm.platforms import cpu
    orig = cpu.CpuPlatform.check_and_update_config.__func__

    def check(cls, vllm_config):
        orig(cls, vllm_config)
        os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"
    cpu.CpuPlatform.check_and_update_config = classmethod(check)
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"


if __name__ == "__main__":
    model, out, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    from vllm import LLM, SamplingParams

    kw = {"scheduler_cls": params["scheduler_cls"]} if params.get("scheduler_cls") else {}
    for key in ("tensor_parallel_size", "distributed_executor_backend", "max_num_batched_tokens"):
        if params.get(key):
            kw[key] = params[key]
    if params.get("start_method") == "fork":
        force_fork()
    if params.get("profile_dir"):
        from vllm.config import ProfilerConfig
        kw["profiler_config"] = ProfilerConfig(profiler="torch", torch_profiler_dir=params["profile_dir"],
                                               torch_profiler_with_stack=False)
    llm = LLM(model, dtype="float32", max_model_len=512, enforce_eager=True,
              max_num_seqs=params.get("max_num_seqs", 8), seed=0, **kw)
    n, max_tokens = params.get("prompts", 6), params.get("max_tokens", 6)
    words = params.get("prompt_words", 5)
    prompts = [" ".join(f"t{(7 * i + j) % 9000 + 10}" for j in range(words + i)) for i in range(n)]
    sp = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0)
    result = {"phases": [], "metrics_dir": os.environ.get("VLLM_W2EXT_METRICS_DIR")}   # the plugin made it if unset
    t0 = time.time()
    if params.get("profile_dir"):
        llm.start_profile()
    outs = llm.generate(prompts, sp)
    if params.get("profile_dir"):
        llm.stop_profile()
    result.update(num_outputs=len(outs), tokens=[len(o.outputs[0].token_ids) for o in outs],
                  elapsed_s=time.time() - t0)
    port = params.get("metrics_port")
    calls = 1                               # generate calls so far: each one n x (max_tokens - 1) decode tokens

    def settled_scrape(steps: bool) -> str:
        """The endpoint once it holds every TP rank's worker phases and the decode tokens of ``calls`` generates."""
        return scrape(port, params.get("settle_s", 1.5), steps, workers=params.get("tensor_parallel_size") or 1,
                      decode_tokens=calls * n * (max_tokens - 1))
    for ph in params.get("phases", []):
        flag = params.get("slow_flag")
        if ph.get("slow") and flag:
            open(flag, "w").close()
        start = time.time_ns()
        for _ in range(ph.get("rounds", 1)):
            llm.generate(prompts, sp, use_tqdm=False)
            calls += 1
            time.sleep(ph.get("pause_s", 0))
        end = time.time_ns()
        if flag and os.path.exists(flag):
            os.remove(flag)
        result["phases"].append({"slow": bool(ph.get("slow")), "start_ns": start, "end_ns": end,
                                 "metrics": settled_scrape(params.get("scrape_steps", True)) if port else ""})
    hold = params.get("hold_file")
    if hold:
        with open(out + ".ready.part", "w") as f:
            json.dump(result, f)
        os.replace(out + ".ready.part", out + ".ready")     # atomic: the test polls for .ready and reads it at once
        deadline = time.time() + 120
        while not os.path.exists(hold) and time.time() < deadline:
            time.sleep(0.2)
    if params.get("pause_check"):           # hooks/control.py: pause every process, generate, resume, generate
        from vllm_w2ext.hooks import control
        checks = []
        for on in (False, True):
            checks.append({"on": on, "counts": control.set_everywhere(llm, on)})
            llm.generate(prompts, sp, use_tqdm=False)
            time.sleep(1.0)                 # 5 export intervals at 200 ms: a running export thread wakes, a paused one not
        checks.append({"on": None, "counts": control.set_everywhere(llm, True)})
        result["pause_check"] = checks
        calls += 1                          # the resumed generate (the paused one records nothing)
        scoped = []                         # one side paused, the other on (toggle_ab.py --flip-scope front/engine)
        for side in ("front", "engine"):
            paused = control.set_everywhere(llm, False, front=side == "front", engine=side == "engine")
            running = control.set_everywhere(llm, True, front=side != "front", engine=side != "engine")
            llm.generate(prompts, sp, use_tqdm=False)
            scoped.append({"paused": side, "before": {"front": paused.get("front") or running.get("front"),
                                                      "engine": paused["engine"] or running["engine"]},
                           "after": control.set_everywhere(llm, True)})
        result["pause_scoped"] = scoped
        calls += 1                          # the front-paused generate: the engine's processes recorded it
    if params.get("kill_workers") is not None:
        if port and params.get("scrape_steps", True):   # what the workers recorded has reached the endpoint
            settled_scrape(True)
        result["killed_workers"] = kill_workers(float(params["kill_workers"]))
    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0":   # the engine and the worker in this process
        from vllm_w2ext.hooks import INSTRUMENTOR, bounds
        result["bounds"] = {"in_process": bounds.MODE.in_process,
                            "on": sorted(n for n, r in INSTRUMENTOR.runners.items() if r.bounds_on)}
    llm.llm_engine.engine_core.shutdown()      # EngineCore + worker flush their spans on shutdown
    with open(out, "w") as f:
        json.dump(result, f)
