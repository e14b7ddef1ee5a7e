"""Test-only start-up hook (on PYTHONPATH through ``conftest.clean_env``): vLLM's CPU platform starts its
EngineCore and workers by *fork*, as vLLM does everywhere else by default (a script's ``LLM`` on the GPU,
``vllm serve`` on the GPU), instead of the spawn the CPU platform sets in ``check_and_update_config``.

Why: on the 2-core test machine a spawned EngineCore and worker each import vLLM again: 30 s per engine
start against 13 s forked (tests/README.md, "Where the time goes"). The tests that are about the CPU
build's own start-up (the plugin loaded by vLLM's entry point in every spawned process) ask for spawn
(``clean_env(spawn=True)``) and get no hook.

How: a one-shot import hook runs after ``vllm.platforms.cpu`` is executed and wraps
``CpuPlatform.check_and_update_config`` so that it sets ``VLLM_WORKER_MULTIPROC_METHOD=fork`` after vLLM's
own code. Nothing else of vLLM is changed; vLLM's own reasons to force spawn (``_maybe_force_spawn``) still
apply."""
import importlib.abc
import importlib.util
import os
import sys

_TARGET = "vllm.platforms.cpu"


def _patch(module) -> None:
    cls = module.CpuPlatform
    orig = cls.check_and_update_config.__func__

    def check_and_update_config(cls, vllm_config):
        orig(cls, vllm_config)
        os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"
    cls.check_and_update_config = classmethod(check_and_update_config)


class _ForkStart(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)                   # one shot; find the real spec without this finder
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch(module)
        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("W2EXT_TEST_START") == "fork":
    os.environ["VLLM_WORKER_MULTIPROC_METHOD"] = "fork"
    sys.meta_path.insert(0, _ForkStart())
