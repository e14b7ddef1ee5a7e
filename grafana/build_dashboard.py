#!/usr/bin/env python3
"""Generate grafana/dashboards/vllm-w2ext.json, the vllm-w2ext Grafana dashboard (Grafana 11+ schema).

Built with grafana-foundation-sdk, the Grafana-11.6 build (PyPI's default pick is the 10.1 build,
see research/ecosystem.md §6):

    pip install 'grafana-foundation-sdk==1769699379!11.6.0'
    python grafana/build_dashboard.py            # writes grafana/dashboards/vllm-w2ext.json
    python grafana/build_dashboard.py --check    # exit 1 if the committed JSON is stale

Every query is PromQL against the `${datasource}` Prometheus variable and filters on the `$engine`
variable (regex, "All" = ".*"). Rows are expanded, so their panels follow them at top level (an
expanded row's own `panels` list is ignored by Grafana). grafana/dashboard_queries.py reads the
queries back out of the JSON (stdlib only) for tests that run them against a real Prometheus.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dm

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards" / "vllm-w2ext.json"

UID = "vllm-w2ext"
TITLE = "vLLM w2ext: where the time goes"
PROM = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
JAEGER_UID = "jaeger"          # grafana/provisioning/datasources/datasources.yml
TRACE_SERVICE = "vllm"         # OTEL_SERVICE_NAME default of the plugin (telemetry/identity.py)

# Row titles that dashboard_queries.py keys on (cuda_only / vllm_own).
ROW_GPU = "GPU (CUDA only)"
ROW_VLLM = "vLLM request metrics (vLLM's /metrics)"

E = 'engine=~"$engine"'         # every series is filtered on the engine variable
RATE = "1m"


# --- PromQL helpers ---------------------------------------------------------------------------

def sel(*matchers: str) -> str:
    return "{" + ", ".join([*matchers, E]) + "}"


def quantile(q: float, metric: str, *matchers: str, by: str = "") -> str:
    """histogram_quantile over rate(<metric>_bucket[1m]), summed by le (+ `by` labels)."""
    labels = ", ".join(["le", *([by] if by else [])])
    return (f"histogram_quantile({q}, sum by ({labels}) "
            f"(rate({metric}_bucket{sel(*matchers)}[{RATE}])))")


def mean(metric: str, *matchers: str, by: str = "") -> str:
    """Mean observation of a histogram: rate(_sum) / rate(_count)."""
    grp = f" by ({by}) " if by else ""
    return (f"sum{grp}(rate({metric}_sum{sel(*matchers)}[{RATE}])) / "
            f"sum{grp}(rate({metric}_count{sel(*matchers)}[{RATE}]))")


def rate(metric: str, *matchers: str, by: str = "") -> str:
    grp = f" by ({by}) " if by else ""
    return f"sum{grp}(rate({metric}{sel(*matchers)}[{RATE}]))"


def gauge(metric: str, *matchers: str, by: str = "engine", agg: str = "sum") -> str:
    return f"{agg} by ({by}) ({metric}{sel(*matchers)})"


# Derived ratios. grafana/rules.yml records each one (same expression without the $engine filter,
# tests/test_grafana_files.py checks they stay identical); the dashboard reads the recorded series
# and falls back to computing it (`or on (engine, rank)`), so it also works on a Prometheus without
# these rules.
PER_WORKER = "engine, rank"
CPU_BUSY = (f"{rate('vllm_w2ext_model_execution_seconds_total', by=PER_WORKER)} / "
            f"({rate('vllm_w2ext_model_execution_seconds_total', by=PER_WORKER)} + "
            f"{rate('vllm_w2ext_scheduler_gap_seconds_sum', by=PER_WORKER)})")
GPU_BUSY_RATE = (f"{rate('vllm_w2ext_gpu_busy_seconds_total', by=PER_WORKER)} / "
                 f"({rate('vllm_w2ext_gpu_busy_seconds_total', by=PER_WORKER)} + "
                 f"{rate('vllm_w2ext_gpu_idle_seconds_total', by=PER_WORKER)})")
RULE_CPU_BUSY = "engine_rank:vllm_w2ext_cpu_busy_ratio:rate1m"
RULE_GPU_BUSY = "engine_rank:vllm_w2ext_gpu_busy_ratio:rate1m"


def per_step(metric: str, by: str = "") -> str:
    """A counter of seconds per executed engine step (all roles and engines summed; with ``by``, its series kept by
    those labels, each over all executed steps)."""
    steps = rate("vllm_w2ext_engine_steps_total", 'executed="true"')
    if by:
        return f"{rate(metric, by=by)} / ignoring({by}) group_left {steps}"
    return f"{rate(metric)} / {steps}"


def recorded(record: str, expr: str) -> str:
    """The recording rule's series where Prometheus has it, else the same expression computed."""
    return f"{record}{sel()} or on ({PER_WORKER}) ({expr})"


# --- links to traces ---------------------------------------------------------------------------

def jaeger_explore_url(time_from: str = "${__from}", time_to: str = "${__to}") -> str:
    """Grafana Explore on the Jaeger datasource, searching service `vllm` over the given range."""
    panes = {"jg": {"datasource": JAEGER_UID,
                    "queries": [{"refId": "A", "datasource": {"type": "jaeger", "uid": JAEGER_UID},
                                 "queryType": "search", "service": TRACE_SERVICE}],
                    "range": {"from": "FROM", "to": "TO"}}}
    enc = urllib.parse.quote(json.dumps(panes, separators=(",", ":")), safe="")
    # Grafana interpolates ${__from}/${__to} in panel, dashboard and data links before navigating.
    return "/explore?schemaVersion=1&orgId=1&panes=" + enc.replace("FROM", time_from).replace("TO", time_to)


def trace_link(title: str, url: str, tooltip: str) -> db.DashboardLink:
    return (db.DashboardLink(title).type(dm.DashboardLinkType.LINK).url(url).tooltip(tooltip)
            .icon("external link").tags([]).as_dropdown(False).target_blank(True)
            .include_vars(False).keep_time(False))


class RawDataLink(cogbuilder.Builder[dict]):
    """A field data link ({title, url, targetBlank}); the SDK only offers the dashboard-link shape."""

    def __init__(self, title: str, url: str) -> None:
        self._link = {"title": title, "url": url, "targetBlank": True}

    def build(self) -> dict:
        return dict(self._link)


TRACES_PANEL_LINK = trace_link("Traces of this time range (Jaeger)", jaeger_explore_url(),
                               f"Jaeger search for service '{TRACE_SERVICE}' over the dashboard time range")
# Clicking a point of a step panel: same search; data links also interpolate ${__from}/${__to}.
TRACES_DATA_LINK = RawDataLink("Traces of this time range (Jaeger)", jaeger_explore_url())


# --- panel specs ---------------------------------------------------------------------------------

@dataclass
class Q:
    expr: str
    legend: str


@dataclass
class P:
    title: str
    queries: list[Q]
    unit: str = "s"
    description: str = ""
    stacked: bool = False
    overlay: list[str] = field(default_factory=list)   # series names drawn as unstacked dashed lines
    traces: bool = False                               # panel + data links to Jaeger
    exemplars: bool = False                            # query exemplars: a dot per stored exemplar, a click
                                                       # opens its trace (exemplarTraceIdDestinations)
    w: int = 12
    h: int = 8
    min0: bool = True
    max1: bool = False


def pq(metric, *m, by=""):
    return [Q(quantile(0.5, metric, *m, by=by), ("{{%s}} " % by if by else "") + "p50"),
            Q(quantile(0.9, metric, *m, by=by), ("{{%s}} " % by if by else "") + "p90")]


EC = 'role="engine_core"'
WK = 'role="worker"'
PHASE = "vllm_w2ext_phase_duration_seconds"

ROWS: list[tuple[str, list[P]]] = [
    # first: the device's own timeline (idle between forwards, by cause); the CPU timelines come after
    ("Where the time goes: device idle by cause, request phases", [
        P("Device idle by cause (share of wall time)", [
            Q(rate("vllm_w2ext_device_idle_seconds_total", WK, by="cause"), "{{cause}}"),
        ], unit="percentunit", stacked=True, w=8, traces=True, exemplars=True,
          description="Device idle seconds per second between two forwards, each microsecond given to the "
                      "cause the critical path was in (GPU: CUDA events; CPU build: the forwards). "
                      "Exemplars: a worker step that added idle time of that cause."),
        P("Device idle before a forward p50 / p90", pq("vllm_w2ext_device_idle_per_step_seconds", WK), w=8,
          traces=True, exemplars=True,
          description="Idle time of the device before each forward; an exemplar opens that step's trace."),
        P("Request phase time p50 / p90", pq("vllm_w2ext_request_phase_seconds", by="phase"), w=8,
          traces=True, exemplars=True,
          description="Each finished request's queue (arrival -> first scheduled), prefill (-> first "
                      "token) and decode (-> finished) time; an exemplar opens the request's trace."),
    ]),
    ("Engine step (EngineCore)", [
        P("EngineCore phase time p50 / p90", pq(PHASE, EC, by="phase"), traces=True, exemplars=True,
          description="Per-phase duration quantiles of EngineCore steps (step encloses schedule, "
                      "execute_model, sample_tokens and update_from_output)."),
        P("EngineCore mean phase time (stacked) vs step", [
            Q(mean(PHASE, EC, 'phase!="step"', by="phase"), "{{phase}}"),
            Q(mean(PHASE, EC, 'phase="step"'), "step (total)"),
        ], stacked=True, overlay=["step (total)"], traces=True,
          description="rate(_sum)/rate(_count) per phase, sub-phases stacked; the dashed line is the "
                      "whole step, so the space between the stack and the line is untracked step time."),
    ]),
    ("Worker", [
        P("Worker phase time p50 / p90", pq(PHASE, WK, by="phase"), traces=True, exemplars=True,
          description="Worker execute_model / sample_tokens and the V1 runner's forward (inside execute_model; the V2 runner has no separate forward: its execute_model is the forward)."),
        P("Worker mean phase time (stacked) vs forward", [
            Q(mean(PHASE, WK, 'phase!="forward"', by="phase"), "{{phase}}"),
            Q(mean(PHASE, WK, 'phase="forward"'), "forward (inside execute_model)"),
        ], stacked=True, overlay=["forward (inside execute_model)"], traces=True,
          description="execute_model + sample_tokens stacked; forward is nested in execute_model, "
                      "drawn as a dashed line."),
    ]),
    ("Scheduler gap (worker CPU timeline)", [
        P("Scheduler gap p50 / p90", pq("vllm_w2ext_scheduler_gap_seconds", WK), w=8, traces=True, exemplars=True,
          description="CPU wall time between the end of one model execution and the start of the next."),
        P("Scheduler gap breakdown by part", [
            Q(rate("vllm_w2ext_scheduler_gap_part_seconds_total", WK, by="part"), "{{part}}"),
        ], unit="percentunit", stacked=True, w=8,
          description="Gap seconds per second of wall time, by where they went, summed over the "
                      "selected workers (one worker: its fraction of wall time)."),
        P("CPU model-execution busy fraction", [
            Q(recorded(RULE_CPU_BUSY, CPU_BUSY), "engine {{engine}} rank {{rank}}"),
        ], unit="percentunit", w=8, max1=True,
          description="model execution / (model execution + scheduler gap), per worker."),
    ]),
    ("Batches and scheduler", [
        P("Batch tokens/s by kind", [
            Q(rate("vllm_w2ext_batch_tokens_total", by="kind"), "{{kind}}"),
        ], unit="suffix: tok/s", stacked=True, w=8),
        P("Engine steps/s", [
            Q(rate("vllm_w2ext_engine_steps_total", by="executed"), "executed={{executed}}"),
        ], unit="suffix: steps/s", w=8,
          description="EngineCore steps; executed=false steps ran no model (nothing scheduled)."),
        P("Batch size (requests per step)", [
            Q(quantile(0.5, "vllm_w2ext_batch_requests"), "p50"),
            Q(mean("vllm_w2ext_batch_requests"), "mean"),
        ], unit="short", w=8),
        P("Scheduler running / waiting requests", [
            Q(gauge("vllm_w2ext_scheduler_running_requests"), "running engine {{engine}}"),
            Q(gauge("vllm_w2ext_scheduler_waiting_requests"), "waiting engine {{engine}}"),
        ], unit="short"),
        P("Preemptions/s", [
            Q(rate("vllm_w2ext_preemptions_total", by="engine"), "engine {{engine}}"),
        ], unit="suffix: /s"),
    ]),
    (ROW_GPU, [
        P("GPU busy %", [
            Q(gauge("vllm_w2ext_gpu_busy_ratio", by=PER_WORKER, agg="avg"), "last window e{{engine}} r{{rank}}"),
            Q(recorded(RULE_GPU_BUSY, GPU_BUSY_RATE), "1m rate e{{engine}} r{{rank}}"),
        ], unit="percentunit", w=8, max1=True,
          description="GPU timeline between consecutive forwards: busy / (busy + idle). No data on CPU runs."),
        P("GPU gap between forwards p50 / p90", pq("vllm_w2ext_gpu_gap_seconds"), w=8, exemplars=True,
          description="GPU idle time between consecutive forwards. No data on CPU runs."),
        P("GPU forward time p50 / p90", pq("vllm_w2ext_gpu_forward_seconds"), w=8, traces=True, exemplars=True,
          description="GPU-measured forward duration. No data on CPU runs."),
    ]),
    ("Plugin self-cost", [
        P("Plugin time per engine step", [
            Q(per_step("vllm_w2ext_hook_direct_seconds_total"), "hooks, C-front calls, every one timed"),
            Q(per_step("vllm_w2ext_hook_cpu_seconds_total"), "hooks, CPU (sampled)"),
            Q(per_step("vllm_w2ext_hook_gil_wait_seconds_total"), "hooks, waiting (GIL, sampled)"),
            Q(per_step("vllm_w2ext_export_thread_cpu_seconds_total"), "export thread, CPU"),
            Q(per_step("vllm_w2ext_export_thread_gil_hold_seconds_total"), "export thread, GIL held"),
        ], unit="s", w=6,
          description="What the plugin adds to vLLM's processes per executed engine step, all roles summed: "
                      "time inside its hooks in the calls their C fronts take, every one timed (not the hooks "
                      "without one: async hooks, the native path's, some CPU-build ones); every hook sampled (CPU, "
                      "and wall minus CPU: waiting for the GIL; one hook call in 64 is timed, through the Python "
                      "front after a thread-clock read: ~2x the direct figure on an H100 host's EngineCore), its "
                      "export thread's CPU, and how long that thread held "
                      "the GIL (wall time "
                      "between its calls that release it: an upper bound on how long it kept vLLM's threads "
                      "waiting). The export processes' own CPU is not on vLLM's threads and is not counted here. "
                      "Compare with the step time in the rows above."),
        P("Hook time, share of each vLLM thread", [
            Q(rate("vllm_w2ext_hook_direct_seconds_total", by="role"), "{{role}}"),
            Q(rate("vllm_w2ext_hook_self_seconds_total", by="role"), "{{role}} sampled"),
            Q(rate("vllm_w2ext_export_thread_gil_hold_seconds_total", by="role"), "{{role}} export thread GIL hold"),
        ], unit="percentunit", w=6,
          description="Time spent inside the plugin's hooks per second, by role (the calls the C fronts take, "
                      "every one timed; beside it the sampled counter of every hook): for engine_core it is the "
                      "plugin's share of the EngineCore's busy-loop thread (with the worker inside it at TP=1). "
                      "Beside it, the share of time the same process's export thread held the GIL, which that "
                      "thread then could not have (an upper bound)."),
        P("Hook time per engine step, by hook", [
            Q(per_step("vllm_w2ext_hook_direct_by_hook_seconds_total", by="role, hook"), "{{role}} {{hook}}"),
        ], unit="s", w=8,
          description="The first panel's hook time (the calls the C fronts take, every one timed) split by hook and "
                      "role, per executed engine step: which hook the plugin's own time goes to. A hook that grows "
                      "with the batch or with requests finishing and joining shows here first."),
        P("Export thread CPU (share of a core)", [
            Q(rate("vllm_w2ext_export_thread_cpu_seconds_total", by="role"), "{{role}}"),
        ], unit="percentunit", w=4),
        P("Spans recorded / dropped per second", [
            Q(rate("vllm_w2ext_spans_recorded_total"), "recorded"),
            Q(rate("vllm_w2ext_spans_dropped_total"), "dropped"),
        ], unit="suffix: spans/s", w=4),
        P("Export / hook errors per second", [
            Q(rate("vllm_w2ext_export_errors_total", by="role"), "export {{role}}"),
            Q(rate("vllm_w2ext_hook_errors_total", by="hook"), "hook {{hook}}"),
        ], unit="suffix: /s", w=4),
        P("Export thread: GIL held per flush p50 / p99", [
            Q(quantile(0.5, "vllm_w2ext_export_thread_gil_hold_per_flush_seconds", by="role"), "{{role}} p50"),
            Q(quantile(0.99, "vllm_w2ext_export_thread_gil_hold_per_flush_seconds", by="role"), "{{role}} p99"),
        ], w=8,
          description="How long the export thread held the GIL in one flush (once per export interval: its batch "
                      "of records taken, encoded and written, less the calls that release the GIL), by role. That "
                      "long at most, vLLM's thread in the same process may wait at once for it: a step that took "
                      "this much longer than its neighbours. The per-step figures beside it average it out; this "
                      "is the stall's size."),
        P("Python collections per engine step, by process", [
            Q(per_step("vllm_w2ext_python_gc_seconds_total", by="role"), "{{role}}"),
        ], unit="s", w=8,
          description="Time of Python's cyclic collections in each vLLM process per executed engine step, on any "
                      "of its threads. Not the plugin's own: a collection starts once ~700 more containers were "
                      "made than freed, by vLLM or the plugin alike, so compare it with the plugin off. Records the "
                      "export thread holds longer (a longer export interval) can set off more of them; the plugin's "
                      "C hooks keep their records out of the collector. No series where no C front timed one."),
        P("Python collections per second, by process", [
            Q(rate("vllm_w2ext_python_gc_collections_total", by="role"), "{{role}}"),
        ], unit="suffix: /s", w=8,
          description="How often Python's cyclic collector ran in each vLLM process (the time of those runs is "
                      "the panel beside it)."),
        P("Steps recorded: 2 in every N", [
            Q(gauge("vllm_w2ext_sample_every", agg="max"), "N, engine {{engine}}"),
        ], unit="short", w=8,
          description="VLLM_W2EXT_SAMPLE's N at each EngineCore's last recorded step: 1 (or 2) is full tracing; "
                      "above it, two consecutive steps in every N are recorded in full, every step that changes a "
                      "request as a bare step, and the rest only counted. VLLM_W2EXT_COST_BUDGET raises N while "
                      "the plugin's cost in the EngineCore is over the budget."),
    ]),
    (ROW_VLLM, [
        P("E2E request latency p50 / p99", [
            Q(quantile(0.5, "vllm:e2e_request_latency_seconds"), "p50"),
            Q(quantile(0.99, "vllm:e2e_request_latency_seconds"), "p99"),
        ], w=8),
        P("Time to first token p50 / p99", [
            Q(quantile(0.5, "vllm:time_to_first_token_seconds"), "p50"),
            Q(quantile(0.99, "vllm:time_to_first_token_seconds"), "p99"),
        ], w=8),
        P("Inter-token latency p50 / p90", pq("vllm:inter_token_latency_seconds"), w=8),
        P("Request queue time p50 / p90", pq("vllm:request_queue_time_seconds"), w=8),
        P("vLLM requests running / waiting", [
            Q(gauge("vllm:num_requests_running"), "running engine {{engine}}"),
            Q(gauge("vllm:num_requests_waiting"), "waiting engine {{engine}}"),
        ], unit="short", w=8),
        P("vLLM prompt / generation tokens/s", [
            Q(rate("vllm:prompt_tokens_total"), "prompt"),
            Q(rate("vllm:generation_tokens_total"), "generation"),
        ], unit="suffix: tok/s", w=8),
    ]),
]


# --- building -------------------------------------------------------------------------------------

def build_panel(p: P, panel_id: int) -> timeseries.Panel:
    panel = (timeseries.Panel().id(panel_id).title(p.title).datasource(PROM)
             .unit(p.unit).height(p.h).span(p.w)
             .line_width(1).fill_opacity(40 if p.stacked else 10)
             .show_points(common.VisibilityMode.NEVER)
             .legend(cb.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True))
             .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                      .sort(common.SortOrder.DESCENDING)))
    if p.description:
        panel = panel.description(p.description)
    if p.min0:
        panel = panel.min(0)
    if p.max1:
        panel = panel.max(1)
    if p.stacked:
        panel = panel.stacking(cb.StackingConfig().mode(common.StackingMode.NORMAL).group("A"))
    for name in p.overlay:
        panel = panel.override_by_name(name, [
            dm.DynamicConfigValue(id_val="custom.stacking", value={"mode": "none", "group": "A"}),
            dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
            dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
            dm.DynamicConfigValue(id_val="custom.lineWidth", value=2),
        ])
    if p.traces:
        panel = panel.links([TRACES_PANEL_LINK]).data_links([TRACES_DATA_LINK])
    for i, q in enumerate(p.queries):
        target = (prometheus.Dataquery().ref_id(chr(ord("A") + i)).datasource(PROM)
                  .expr(q.expr).legend_format(q.legend).range())
        if p.exemplars:
            target = target.exemplar(True)
        panel = panel.with_target(target)
    return panel


def build() -> dict:
    d = (db.Dashboard(TITLE).uid(UID)
         .description("vllm-w2ext: EngineCore/worker phase times, scheduler gaps, device idle by cause, "
                      "request phases, GPU busy, batch composition, plugin self-cost and vLLM's own request "
                      "latencies. Histogram panels show exemplars (needs Prometheus with exemplar "
                      "storage): a click opens the step's or request's trace in Tempo or Jaeger.")
         .tags(["vllm", "vllm-w2ext", "inference"])
         .editable().timezone("browser").refresh("30s").time("now-30m", "now")
         .tooltip(dm.DashboardCursorSync.CROSSHAIR)
         .with_variable(db.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
         .with_variable(db.QueryVariable("engine").label("engine").datasource(PROM)
                        .query("label_values(vllm_w2ext_engine_steps_total, engine)")
                        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
                        .sort(dm.VariableSort.NATURAL_ASC)
                        .multi(True).include_all(True).all_value(".*")
                        .current(dm.VariableOption(selected=True, text="All", value="$__all")))
         .link(trace_link(f"Traces in Jaeger (service {TRACE_SERVICE})", jaeger_explore_url(),
                          "Grafana Explore on the Jaeger datasource over the dashboard time range")))
    next_id = 1
    for row_title, panels in ROWS:
        d = d.with_row(db.Row(row_title).id(next_id).collapsed(False))
        next_id += 1
        for p in panels:
            d = d.with_panel(build_panel(p, next_id))
            next_id += 1
    out = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    # The SDK gives every variable the interval-variable keys auto/auto_min/auto_count; @grafana/schema's
    # VariableModel has no "auto" (check_dashboard.sh rejects it) and they mean nothing here.
    for var in out["templating"]["list"]:
        if var["type"] != "interval":
            for k in ("auto", "auto_min", "auto_count"):
                var.pop(k, None)
    return out


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    text = render()
    if a.check:
        current = a.out.read_text() if a.out.exists() else ""
        if current != text:
            print(f"{a.out} is stale: run python grafana/build_dashboard.py", file=sys.stderr)
            return 1
        print(f"{a.out} is up to date")
        return 0
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
