"""Read every PromQL query out of a Grafana dashboard JSON (stdlib only).

    from dashboard_queries import load_queries        # with grafana/ on sys.path
    for q in load_queries("grafana/dashboards/vllm-w2ext.json"):
        q["panel"], q["expr"], q["cuda_only"], q["vllm_own"]

`expr` is ready for a plain Prometheus (`/api/v1/query`): dashboard template variables are replaced
by their "All" value (`$engine` -> `.*`), so `engine=~"$engine"` matches every engine instead of
nothing. `raw_expr` is the expression as stored in the dashboard.

cuda_only: the panel sits in the row titled "GPU (CUDA only)" (metrics absent on CPU runs).
vllm_own:  the panel sits in the row "vLLM request metrics (vLLM's /metrics)" (needs vLLM's own
           /metrics scraped, not only the plugin's endpoint).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

GPU_ROW = "GPU (CUDA only)"
VLLM_ROW = "vLLM request metrics (vLLM's /metrics)"

# Values a raw Prometheus query gets for the dashboard's variables ("All" for $engine).
DEFAULT_VARIABLES = {"engine": ".*"}

_VAR = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def expand(expr: str, variables: dict[str, str] | None = None) -> str:
    """Replace $var / ${var} / ${var:fmt} by values; an unknown variable is an error, not a no-match."""
    values = {**DEFAULT_VARIABLES, **(variables or {})}

    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name not in values:
            raise ValueError(f"no value for dashboard variable ${name} in {expr!r}")
        return values[name]

    return _VAR.sub(sub, expr)


def _walk(panels: list[dict]):
    """Yield (row title or None, panel) for every non-row panel, in dashboard order.

    An expanded row's panels follow it at top level; a collapsed row holds them in row["panels"].
    """
    row = None
    for p in panels:
        if p.get("type") == "row":
            row = p.get("title", "")
            for inner in p.get("panels") or []:
                yield row, inner
        else:
            yield row, p


def panels(path: str | Path) -> list[tuple[str | None, dict]]:
    """(row title, panel dict) for every non-row panel of the dashboard at `path`."""
    return list(_walk(json.loads(Path(path).read_text()).get("panels") or []))


def load_queries(path: str | Path, variables: dict[str, str] | None = None) -> list[dict]:
    """Every target of every panel: {"panel", "expr", "cuda_only", "vllm_own", plus "raw_expr",
    "ref_id", "legend", "row", "exemplar"}. `variables` overrides DEFAULT_VARIABLES for the expansion.
    ``exemplar``: Grafana asks Prometheus for the exemplars of this query's series too."""
    out = []
    for row, p in panels(path):
        for t in p.get("targets") or []:
            raw = t.get("expr", "")
            out.append({
                "panel": p.get("title", ""),
                "expr": expand(raw, variables),
                "cuda_only": row == GPU_ROW,
                "vllm_own": row == VLLM_ROW,
                "raw_expr": raw,
                "ref_id": t.get("refId", ""),
                "legend": t.get("legendFormat", ""),
                "row": row,
                "exemplar": bool(t.get("exemplar")),
            })
    return out


if __name__ == "__main__":       # print them: python grafana/dashboard_queries.py [dashboard.json]
    import sys
    default = Path(__file__).resolve().parent / "dashboards" / "vllm-w2ext.json"
    for q in load_queries(sys.argv[1] if len(sys.argv) > 1 else default):
        flags = ",".join(k for k in ("cuda_only", "vllm_own") if q[k])
        print(f"[{q['panel']}] {q['ref_id']}{' (' + flags + ')' if flags else ''}: {q['expr']}")
