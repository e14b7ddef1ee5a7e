"""Shared fixtures: the tiny model, a real OTLP receiver, the NVTX recorder, and real vLLM runs.

Every vLLM run is a subprocess with its own environment (plugin settings, OTEL_* variables), so the
pytest process itself never has the plugin enabled. Engine starts are expensive on 2 cores: the
runs are session-scoped and several tests read the same run.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
CACHE = TESTS / ".cache"
sys.path.insert(0, str(TESTS))

from support import nvtx_recorder  # noqa: E402
from vllm_w2ext.receiver import OTLPReceiver  # noqa: E402

# Environment every vLLM subprocess gets (CPU build, small KV cache, quiet logs).
BASE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_LOGGING_LEVEL": "WARNING",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VLLM_W2EXT", "OTEL_", "NVTX_"))}
    env.update(BASE_ENV)
    env.update(extra)
    return env


# pytest-xdist: .ci/test runs the end-to-end suite in two passes,
#   pytest -n 2 --dist loadfile --no-loadscope-reorder -m "not alone"   then   pytest -m alone.
# Each module goes whole to one worker (its module-scoped runs start once), and the modules that read one
# session-scoped run go together (the run starts once, on one worker: pytest_xdist_make_scheduler below;
# xdist's own `--dist loadgroup` does not group on pytest 9.2, pytest-xdist issue #1386); the longest
# modules are handed out first; the modules whose assertions are about timing carry the mark `alone`: they
# run after, with no engine of the other worker beside them (tests/README.md, "Where the time goes").
ALONE = frozenset({
    "test_explain_planted.py",      # explain's shares of the wall time, planted within 25 %
    "test_otlp_slow.py",            # throughput with a slow collector vs what blocking would cost
    "test_metrics_prometheus.py",   # the scheduler gap moves by the injected 50 ms
    "test_shutdown.py",             # exits timed against a bound, the dead engine's included
    "test_served_profile.py",       # the clock offset measured within 5 ms
    "test_parallel_engines.py",     # every TP rank's series scraped once the counts settle (failed once beside
                                    # the other worker: rank 1's series not yet at the endpoint)
    "test_merge_perfetto.py", "test_profiler_annotations.py", "test_kernel_analyze.py",   # profiled_run
})
SHARED_RUN = {"test_patches.py": "stock_full_run", "test_trace_files.py": "stock_full_run",
              "test_merge_perfetto.py": "profiled_run", "test_profiler_annotations.py": "profiled_run",
              "test_kernel_analyze.py": "profiled_run"}
LONGEST_FIRST = ("test_lab_smoke.py", "test_otlp_metrics.py", "test_demo.py", "test_patches.py",
                 "test_trace_files.py", "test_otlp_outage.py", "test_faults.py")


def pin_xdist_worker() -> None:
    """On a pytest-xdist worker: keep it (and every process it starts) on its own share of the cores. Why:
    vLLM's CPU processes busy-wait (sched_yield) on each other's shared-memory queues for up to 1 s after
    each read, and auto-bind every engine's forwards to the same core; with the engines of two workers
    spread over both cores, they take turns spinning. Pinned, a worker's engines only compete with each
    other. (Measured only together with the module grouping: tests/README.md, "Where the time goes".)"""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not worker or not count:
        return
    cpus = sorted(os.sched_getaffinity(0))
    n, i = int(count), int(worker.removeprefix("gw"))
    if len(cpus) < n:
        return
    share = set(cpus[i * len(cpus) // n:(i + 1) * len(cpus) // n])
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), share)


def pytest_configure(config):
    pin_xdist_worker()
    config.addinivalue_line("markers", "alone: assertions about timing; .ci/test runs these with no other "
                                       "test beside them (-m alone after the parallel pass)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in ALONE:
            item.add_marker(pytest.mark.alone)
    if os.environ.get("PYTEST_XDIST_WORKER"):    # the same order on every worker; xdist hands out in this order
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile``, with the modules of SHARED_RUN handed out as one unit per shared run."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedRunScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_RUN.get(path.rsplit("/", 1)[-1], path)
    return SharedRunScheduling(config, log)


@contextlib.contextmanager
def cache_lock(name: str):
    """Held while a cache under tests/.cache is made: with pytest-xdist, two workers may need it at once."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from vllm_w2ext.lab.model_folders import tiny_llama
    with cache_lock("models"):
        return tiny_llama(CACHE / "models" / "tiny-llama")


@pytest.fixture(scope="session")
def nvtx_recorder_lib() -> Path:
    with cache_lock("nvtx"):
        return nvtx_recorder.build_recorder(CACHE / "nvtx")


@pytest.fixture(scope="session")
def otlp_receiver():
    rx = OTLPReceiver().start()
    yield rx
    rx.stop()


def check_no_hook_fault(log: str, env: dict) -> None:
    """A hook that raised disables itself and vLLM goes on (by design), so a bug in a hook would pass
    silently: every run must end without one, unless the test injected it."""
    if env.get("VLLM_W2EXT_FAULT_INJECT"):
        return
    faults = [line for line in log.splitlines() if "and is now disabled" in line]
    assert not faults, "a hook raised: " + "\n".join(faults[:5])


def concurrently(*calls):
    """Call each zero-argument callable in a thread of its own, all at once; their results, in order
    (the first error is raised once all have ended). For vLLM runs whose assertions do not depend on
    timing: an engine start is mostly one process importing at a time, so two overlap well on 2 cores."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(c) for c in calls]
        return [f.result() for f in futures]


def run_offline(model: Path, env: dict[str, str], out: Path, with_log: bool = False, **params):
    """Run tests/drivers/offline.py (LLM.generate on the tiny model) in a subprocess; its result
    (and its combined output with ``with_log``)."""
    args = [sys.executable, str(TESTS / "drivers" / "offline.py"), str(model), str(out), json.dumps(params)]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, cwd=str(ROOT))
    if p.returncode != 0:
        raise AssertionError(f"offline driver failed rc={p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    check_no_hook_fault(p.stdout + p.stderr, env)
    result = json.loads(out.read_text())
    return (result, p.stdout + p.stderr) if with_log else result


@pytest.fixture(scope="session")
def profiled_run(tiny_model, tmp_path_factory) -> Path:
    """One offline run with the plugin writing span files (``run/traces``) and vLLM's torch profiler
    around the first generate call (``run/prof``); 4 prompts x 5 tokens: a prefill step and 4 decode
    steps. Read, never written, by test_merge_perfetto, test_profiler_annotations and test_kernel_analyze
    (one engine start instead of three)."""
    tmp = tmp_path_factory.mktemp("profiled")
    run_offline(tiny_model, clean_env(VLLM_W2EXT="1", VLLM_W2EXT_TRACE_DIR=str(tmp / "run" / "traces")),
                tmp / "out.json", prompts=4, max_tokens=5, profile_dir=str(tmp / "run" / "prof"))
    return tmp / "run"


FULL_RUN_PROMPTS, FULL_RUN_TOKENS = 4, 5


def full_run(model: Path, rx: OTLPReceiver, tmp: Path, nvtx_lib: Path, pythonpath: str | None = None):
    """An offline run with every output of the plugin on: spans over OTLP/gRPC to ``rx`` (service
    ``w2ext-test-patches``), span files in ``tmp/traces``, NVTX ranges recorded, the metrics endpoint
    (200 ms interval) scraped after one more generate round; FULL_RUN_PROMPTS x FULL_RUN_TOKENS.
    ``pythonpath`` puts a (patched) vLLM first. Returns (driver result, SpanSet of the spans received,
    NVTX records, span files)."""
    from vllm_w2ext.analysis.spans.tree import SpanSet
    from vllm_w2ext.lab import free_port
    rx.clear()
    rec_file = tmp / "nvtx.tsv"
    extra = {"PYTHONPATH": pythonpath} if pythonpath else {}
    port = free_port()
    env = clean_env(VLLM_W2EXT="1", OTEL_SERVICE_NAME="w2ext-test-patches", VLLM_W2EXT_METRICS_PORT=str(port),
                    VLLM_W2EXT_METRICS_INTERVAL_MS="200", VLLM_W2EXT_TRACE_DIR=str(tmp / "traces"), **rx.env("grpc"),
                    **nvtx_recorder.recorder_env(nvtx_lib, rec_file), **extra)
    result = run_offline(model, env, tmp / "out.json", prompts=FULL_RUN_PROMPTS, max_tokens=FULL_RUN_TOKENS,
                         metrics_port=port, phases=[{"rounds": 1}])
    from callgraph_checks import run_complete
    spans = rx.wait_for(run_complete(2 * FULL_RUN_PROMPTS), timeout=30)     # generate + one phase round
    return (result, SpanSet(spans), nvtx_recorder.parse_records(rec_file),
            sorted((tmp / "traces").glob("w2ext-*.pftrace")))


@pytest.fixture(scope="session")
def stock_full_run(tiny_model, otlp_receiver, nvtx_recorder_lib, tmp_path_factory):
    """full_run on the installed (stock) vLLM: the monkeypatched hook path that test_patches compares the
    native path with, and the span files that test_trace_files checks against the spans received (one
    engine start instead of two)."""
    return full_run(tiny_model, otlp_receiver, tmp_path_factory.mktemp("stock-full"), nvtx_recorder_lib)
