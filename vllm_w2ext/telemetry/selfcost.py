"""Counters the hooks layer feeds about the plugin itself (faults, sampled time inside hooks)."""
from __future__ import annotations

hook_errors: dict[str, int] = {}
hook_self_ns = [0]          # estimated ns spent in hook pre/post code on vLLM's threads
SAMPLE_EVERY = 64           # time one call in SAMPLE_EVERY per hook, scale up


def register(names) -> None:
    """Known hook names: their error counters exist (at 0) from the start."""
    for n in names:
        hook_errors.setdefault(n, 0)


def hook_failed(name: str) -> None:
    hook_errors[name] = hook_errors.get(name, 0) + 1
