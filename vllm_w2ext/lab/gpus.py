"""The GPUs the lab knows: peak HBM bandwidth (a batch-1 decode step reads every weight once, so its
time follows bandwidth) and where the lab's reference numbers for that GPU are.

The GPU comes from ``env.json`` (NVML's device name), never from the ``--target`` name."""
from __future__ import annotations

# (substring of NVML's device name, key, peak HBM TB/s); the first match wins, so the more specific first.
KNOWN = (
    ("H200", "H200", 4.8),
    ("H100 PCIe", "H100 PCIe", 2.0),
    ("H100", "H100", 3.35),                 # SXM, HBM3
    ("A100 80GB PCIe", "A100 80GB PCIe", 1.935),
    ("L40S", "L40S", 0.864),
)


def known(key: str) -> tuple[str, float]:
    """(key, HBM TB/s) of a GPU in KNOWN by its key."""
    return next((k, tb_s) for _, k, tb_s in KNOWN if k == key)


def gpu_of(env: dict) -> tuple[str, float] | None:
    """(key, HBM TB/s) of the first GPU ``env.json`` names; None without a GPU or for one not in KNOWN."""
    for d in (env.get("gpu") or {}).get("devices", []):
        for part, key, tb_s in KNOWN:
            if part in d.get("name", ""):
                return key, tb_s
    return None


def lab_metrics(ref: dict, gpu: str) -> dict[str, float]:
    """The lab's numbers for ``gpu`` as {metric: value}: its main table (``ref["gpu_key"]``, the H100) or one
    of its other-GPU columns; {} for a GPU the lab did not measure."""
    if ref.get("gpu_key") == gpu:
        return {k: m["value"] for k, m in ref.get("metrics", {}).items()}
    col = ref.get("other_gpus", {}).get(gpu)
    if not col:
        return {}
    out = {k: col[k] for k in ("offline_throughput_sharegpt_tok_s", "per_token_latency_bs1_ms",
                               "online_throughput_rate_inf_tok_s") if k in col}
    out.update({f"latency_bs{b}_ms": ms for b, ms in zip((1, 4, 16, 32), col.get("latency_ms", []))})
    return out
