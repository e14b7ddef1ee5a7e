"""Who this process is: its roles (one process can host several, e.g. EngineCore + worker with
vLLM's UniProcExecutor) and the OpenTelemetry resource of each role."""
from __future__ import annotations

import os
import threading
from functools import lru_cache

_lock = threading.Lock()
_role_attrs: dict[str, dict[str, object]] = {}
_resources: dict[str, object] = {}


def set_role(role: str, **attrs: object) -> None:
    """Record (or update) identity attributes of a role in this process."""
    clean = {f"vllm.{k}": v for k, v in attrs.items() if v is not None}
    with _lock:
        cur = _role_attrs.setdefault(role, {})
        if any(cur.get(k) != v for k, v in clean.items()):
            cur.update(clean)
            _resources.pop(role, None)


def roles() -> dict[str, dict[str, object]]:
    with _lock:
        return {k: dict(v) for k, v in _role_attrs.items()}


@lru_cache(maxsize=1)
def vllm_version() -> str:
    try:
        import vllm
        return str(getattr(vllm, "__version__", "unknown"))
    except Exception:  # pragma: no cover - vLLM always present where hooks fire
        return "unknown"


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
        "process.pid": os.getpid(),
        "vllm.version": vllm_version(),
        "vllm_w2ext.version": __version__,
    }
    base.update(attrs)
    res = Resource.create(base)  # also merges OTEL_RESOURCE_ATTRIBUTES
    with _lock:
        _resources[role] = res
    return res


def reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()
    _resources.clear()
