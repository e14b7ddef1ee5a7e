"""Regenerate ``vllm-<version>-step-observers.patch`` from a pristine vLLM source tree.

    python patches/make_patches.py SRC VERSION     # SRC: the folder holding vllm/

Each edit is an exact anchor in vLLM's source that must occur once; the new module is
``patches/step_observer.py``. A moved anchor in a future vLLM fails here, loudly.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
IMPORT = "from vllm.v1.step_observer import observe_step\n"


def deco(point: str) -> str:
    return f'    @observe_step("{point}")\n'


# file -> [(anchor, text inserted before it)]
EDITS: dict[str, list[tuple[str, str]]] = {
    "vllm/v1/engine/core.py": [
        ("from vllm.v1.structured_output import StructuredOutputManager\n", IMPORT),
        ("    def step(self) -> tuple[dict[int, EngineCoreOutputs], bool]:\n", deco("engine_core.step")),
        ("    def step_with_batch_queue(\n", deco("engine_core.step_with_batch_queue")),
    ],
    "vllm/v1/core/sched/scheduler.py": [
        ("from vllm.v1.structured_output import StructuredOutput", IMPORT),
        ("    def schedule(self, throttle_prefills: bool = False) -> SchedulerOutput:\n",
         deco("scheduler.schedule")),
        ("    def update_from_output(\n", deco("scheduler.update_from_output")),
        ("    def _free_request(\n", deco("scheduler.free_request")),
    ],
    "vllm/v1/executor/uniproc_executor.py": [
        ("from vllm.v1.worker.worker_base import WorkerWrapperBase\n", IMPORT),
        ("    def execute_model(  # type: ignore[override]\n", deco("executor.execute_model")),
        ("    def sample_tokens(  # type: ignore[override]\n", deco("executor.sample_tokens")),
    ],
    "vllm/v1/executor/multiproc_executor.py": [
        ("from vllm.v1.worker.worker_base import WorkerWrapperBase\n", IMPORT),
        ("    def execute_model(  # type: ignore[override]\n", deco("executor.execute_model")),
        ("    def sample_tokens(  # type: ignore[override]\n", deco("executor.sample_tokens")),
    ],
    "vllm/v1/worker/gpu_worker.py": [
        ("from vllm.v1.utils import compute_iteration_details, report_usage_stats\n", IMPORT),
        ("    @torch.inference_mode()\n    @with_gpu_sync_check\n    def sample_tokens(\n",
         deco("worker.sample_tokens")),
        ("    @torch.inference_mode()\n    @with_gpu_sync_check\n    def execute_model(\n",
         deco("worker.execute_model")),
    ],
    "vllm/plugins/__init__.py": [
        ("\n\ndef load_endpoint_plugins(",
         "\n    # Step observers may also be registered by the general plugins above.\n"
         "    from vllm.v1.step_observer import load_step_observers\n\n"
         "    load_step_observers()\n"),
    ],
}
NEW_MODULE = "vllm/v1/step_observer.py"


def edit(text: str, edits: list[tuple[str, str]], name: str) -> str:
    for anchor, insert in edits:
        n = text.count(anchor)
        if n != 1:
            raise SystemExit(f"{name}: anchor found {n} times, expected once: {anchor!r}")
        text = text.replace(anchor, insert + anchor)
    return text


def make(src: Path, version: str, out_dir: Path = HERE) -> Path:
    out = out_dir / f"vllm-{version}-step-observers.patch"
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp, "a"), Path(tmp, "b")
        for rel, edits in EDITS.items():
            for side in (a, b):
                (side / rel).parent.mkdir(parents=True, exist_ok=True)
            text = (src / rel).read_text()
            (a / rel).write_text(text)
            (b / rel).write_text(edit(text, edits, rel))
        (b / NEW_MODULE).write_text((HERE / "step_observer.py").read_text())
        p = subprocess.run(["diff", "-ruN", "a", "b"], cwd=tmp, capture_output=True, text=True)
        if p.returncode not in (0, 1):
            raise SystemExit(p.stderr)
    body = []
    for line in p.stdout.splitlines(keepends=True):
        if line.startswith("diff -ruN"):
            continue
        if line.startswith(("--- ", "+++ ")):          # no timestamps; a created file comes from /dev/null
            line = line.split("\t")[0] + "\n"
            if line == f"--- a/{NEW_MODULE}\n":
                line = "--- /dev/null\n"
        body.append(line)
    header = (f"Step observers for vLLM {version}: callbacks around schedule / execute_model / sample_tokens /\n"
              f"update_from_output in EngineCore and execute_model / sample_tokens in the Worker.\n"
              f"Apply from the folder holding vllm/:  patch -p1 < {out.name}\n\n")
    out.write_text(header + "".join(body))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or not Path(sys.argv[1], "vllm").is_dir():
        raise SystemExit(__doc__)
    print(make(Path(sys.argv[1]), sys.argv[2]))
    shutil.rmtree(HERE / "__pycache__", ignore_errors=True)
