"""Text, JSON and CSV renderings of an analyze result (result.py).

CSV is one long table, ``section,phase,step,key,count,time_us,share``:
- ``category``: one row per (phase, category); phase ``all`` is the whole trace;
- ``step``: one row per (step, category) with time, plus ``gpu_span_us``/``idle_in_step_us``/
  ``gap_before_us``/``launch_api_us`` rows (value in ``time_us``);
- ``idle``, ``launch_api`` (count and CPU time of each launch API), ``launch_latency`` (key
  ``<api>.<stat>``), ``top_kernel`` (key = kernel name, share of GPU time).
"""
from __future__ import annotations

import csv
import io
import json

from vllm_w2ext.analysis.kernels.ranks import short_name

CSV_FIELDS = ("section", "phase", "step", "key", "count", "time_us", "share")


def render(result: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(result, indent=1) + "\n"
    if fmt == "csv":
        return to_csv(result)
    if fmt == "text":
        return to_text(result)
    raise ValueError(f"--format {fmt!r}: expected text, json or csv")


def csv_rows(result: dict):
    def row(section, key, phase="", step="", count="", time_us="", share=""):
        return {"section": section, "phase": phase, "step": step, "key": key, "count": count,
                "time_us": time_us, "share": share}
    for c, v in result["categories"].items():
        yield row("category", c, "all", count=v.get("count", ""), time_us=v["time_us"], share=v["share"])
    for ph, p in result["phases"].items():
        for c, v in p["categories"].items():
            yield row("category", c, ph, time_us=v["time_us"], share=v["share"])
    for s in result["steps"]:
        for c, t in s["categories"].items():
            yield row("step", c, s["phase"], s["step"], time_us=t)
        for k in ("kernel_time_us", "gpu_span_us", "idle_in_step_us", "gap_before_us", "launch_api_us", "cpu_dur_us"):
            yield row("step", k, s["phase"], s["step"], count=s["kernels"] if k == "kernel_time_us" else "",
                      time_us="" if s[k] is None else s[k])
    for k, v in result["idle"].items():
        yield row("idle", k, time_us=v)
    for api, v in result["launch"]["apis"].items():
        yield row("launch_api", api, count=v["count"], time_us=v["cpu_time_us"])
    for api, h in result["launch"]["launch_to_gpu_start"].items():
        for stat, v in h.items():
            if stat != "count":
                yield row("launch_latency", f"{api}.{stat}", count=h["count"], time_us=round(v, 3))
    for k in result["top_kernels"]:
        yield row("top_kernel", k["name"], k["category"], count=k["count"], time_us=k["time_us"], share=k["share"])


def to_csv(result: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    w.writerows(csv_rows(result))
    return buf.getvalue()


def _ms(us: float) -> str:
    return f"{us / 1e3:10.3f}"


def to_text(result: dict) -> str:
    t = result["trace"]
    lines = [f"vllm-w2ext analyze  {t['file']}  ({t['bytes'] / 1e6:.1f} MB, {t['events']} events, "
             f"{t['kernels']} kernels, {t['memcpy']} memcpy, {t['memset']} memset)  rules {result['rules_version']}",
             f"devices: {', '.join(d for d in t['devices'] if d) or 'n/a'}   parser: {t['parser']}"]
    for n in result["notes"]:
        lines.append(f"NOTE: {n}")
    phases = [p for p in ("prefill", "decode", "mixed", "empty", "unknown", "outside_steps") if p in result["phases"]]
    lines += ["", f"GPU time by category (ms, share)   total {result['gpu_time_us'] / 1e3:.3f} ms "
                  f"(kernels only {result['kernel_time_us'] / 1e3:.3f} ms)"]
    head = f"{'category':<14}{'all':>10}{'%':>7}" + "".join(f"{p:>14}{'%':>7}" for p in phases)
    lines.append(head)
    for c, v in result["categories"].items():
        if not v["time_us"] and not any(result["phases"][p]["categories"][c]["time_us"] for p in phases):
            continue
        cells = f"{c:<14}{_ms(v['time_us'])}{100 * v['share']:7.1f}"
        for p in phases:
            pv = result["phases"][p]["categories"][c]
            cells += f"{_ms(pv['time_us']):>14}{100 * pv['share']:7.1f}"
        lines.append(cells)
    lines += ["", "Steps by phase (means per step, us)",
              f"{'phase':<14}{'steps':>7}{'cpu dur':>11}{'gpu span':>11}{'kernel':>11}{'idle in':>11}{'gap before':>12}{'launch api':>12}"]
    for p in phases:
        v = result["phases"][p]
        lines.append(f"{p:<14}{v['steps']:>7}{v['mean_step_cpu_dur_us']:>11.1f}{v['mean_step_gpu_span_us']:>11.1f}{v['mean_step_kernel_time_us']:>11.1f}"
                     f"{v['mean_step_idle_in_step_us']:>11.1f}{v['mean_gap_before_us']:>12.1f}"
                     f"{v['mean_step_launch_api_us']:>12.1f}")
    i = result["idle"]
    lines += ["", f"GPU idle: window {i['gpu_window_us'] / 1e3:.3f} ms, busy {i['gpu_busy_us'] / 1e3:.3f} ms "
                  f"({100 * i['utilization']:.1f} %); idle inside steps {i['in_steps_us'] / 1e3:.3f} ms, between "
                  f"steps {i['between_steps_us'] / 1e3:.3f} ms, outside steps {i['outside_steps_us'] / 1e3:.3f} ms"]
    la = result["launch"]
    lines += ["", f"CPU launch calls: {la['cpu_time_us'] / 1e3:.3f} ms in total"]
    for api, v in la["apis"].items():
        h = la["launch_to_gpu_start"].get(api, {})
        lat = (f"  launch->GPU start p50 {h['p50_us']:.1f} p90 {h['p90_us']:.1f} max {h['max_us']:.1f} us"
               if h.get("count") else "")
        lines.append(f"  {api:<26}{v['count']:>8} calls {v['cpu_time_us'] / 1e3:9.3f} ms (mean {v['mean_us']:.1f} us){lat}")
    lines += ["", f"Top {len(result['top_kernels'])} kernels", f"{'ms':>10}{'%':>7}{'count':>8}  {'category (most time first)':<28} name"]
    for k in result["top_kernels"]:
        name = k["name"] if len(k["name"]) <= 90 else k["name"][:87] + "..."
        cats = "/".join(list(k.get("categories") or [k["category"]])[:2])
        lines.append(f"{_ms(k['time_us'])}{100 * k['share']:7.1f}{k['count']:>8}  {cats:<28} {name}")
    o = result["ordering"]
    if o["reordered_beyond_window"] or o["activities_without_launch"]:
        lines += ["", f"ordering: {o['reordered_beyond_window']} activities out of start order beyond the window, "
                      f"{o['activities_without_launch']} without a launch call (no step)"]
    return "\n".join(lines) + "\n"


# -- several tensor-parallel ranks (ranks.py) --------------------------------------------------------
TP_CSV_FIELDS = ("rank",) + CSV_FIELDS
SKEW_STATS = ("matched", "median_us", "p90_us", "max_us", "own_median_us")


def render_ranks(result: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(result, indent=1) + "\n"
    if fmt == "csv":
        return ranks_csv(result)
    if fmt == "text":
        return ranks_text(result)
    raise ValueError(f"--format {fmt!r}: expected text, json or csv")


def _skew_scopes(skew: dict):
    """(label, block) of the skew table: all, each phase, by position in the step, each collective kernel."""
    yield "all", skew["all"]
    for ph, b in skew["by_phase"].items():
        yield f"phase {ph}", b
    for pos, b in skew["by_position"].items():
        yield pos, b
    for name, b in skew["by_collective"].items():
        yield short_name(name), b


def ranks_csv(result: dict) -> str:
    """Each trace's rows (``rank`` column first), then ``tp_share`` rows (per rank and phase: key
    share / share_without_waiting with the value in ``share``, communication_us / gpu_busy_us / waiting_us
    in ``time_us``) and ``tp_skew`` rows (phase = scope: all, phase X, first/later in step, kernel K)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TP_CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    tp = result["tensor_parallel"]
    for r, res in zip(tp["ranks"], result["traces"]):
        for row in csv_rows(res):
            w.writerow({"rank": r["rank"], **row})
    blank = dict.fromkeys(TP_CSV_FIELDS, "")
    for r in tp["ranks"]:
        for ph, row in [("all", r)] + list(r["phases"].items()):
            for k in ("communication_us", "gpu_busy_us", "waiting_us"):
                if k in row:
                    w.writerow(blank | {"rank": r["rank"], "section": "tp_share", "phase": ph, "key": k,
                                        "count": row.get("steps", ""), "time_us": row[k]})
            for k in ("share", "share_without_waiting"):
                if k in row:
                    w.writerow(blank | {"rank": r["rank"], "section": "tp_share", "phase": ph, "key": k,
                                        "share": row[k]})
    for scope, b in _skew_scopes(tp["skew"]):
        if not b.get("matched"):
            continue
        for k, v in b["skew_us"].items():
            if k != "count":
                w.writerow(blank | {"section": "tp_skew", "phase": scope, "key": f"skew_{k}", "count": b["matched"],
                                    "time_us": v})
        for k, v in b["collective_own_us"].items():
            if k != "count":
                w.writerow(blank | {"section": "tp_skew", "phase": scope, "key": f"own_{k}", "count": b["matched"],
                                    "time_us": v})
        for who, n in b["late"].items():
            w.writerow(blank | {"section": "tp_skew", "phase": scope, "key": f"late {who}", "count": n})
        for who, v in b["wait_us"].items():
            w.writerow(blank | {"rank": who.split()[-1], "section": "tp_skew", "phase": scope, "key": "wait_us",
                                "time_us": v, "share": b["wait_share_of_collective_time"][who]})
    return buf.getvalue()


def _pct(x) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _wait_cell(per_step: dict, rank) -> str:
    v = per_step.get(f"rank {rank}")
    return f"{'':>15}" if v is None else f"{v:>15.1f}"


def ranks_text(result: dict) -> str:
    tp = result["tensor_parallel"]
    ranks = tp["ranks"]
    skew = tp["skew"]
    lines = [f"vllm-w2ext analyze  {len(ranks)} tensor-parallel rank traces  rules {result['rules_version']}"]
    for r in ranks:
        lines.append(f"  rank {r['rank']}: {r['file']}")
    for n in tp["notes"]:
        lines.append(f"NOTE: {n}")
    c = tp["clock"]
    lines += ["", f"Clock: {c['method']}; " + ("one baseTimeNanoseconds for all traces" if c["same_base"] else
                                               "different baseTimeNanoseconds, each trace shifted by its own")]
    e = c.get("check_end_spread_us") or {}
    if e.get("count"):
        lines.append(f"  check: matched collectives end {e['median_us']:.3f} us apart (median), {e['p90_us']:.3f} us "
                     f"(p90) over the ranks (they leave a collective together when the clocks agree)")
    phases = [p for p in ("prefill", "decode", "mixed", "empty", "unknown")
              if any(p in r["phases"] for r in ranks)]
    lines += ["", ("Communication share of GPU busy time (communication kernels' GPU time, waiting for the other "
                   "ranks included / busy time; w/o wait: the waiting taken out)"),
              f"{'rank':<6}{'collectives':>12}{'comm ms':>10}{'busy ms':>10}{'share %':>9}{'wait ms':>10}"
              f"{'w/o wait %':>11}" + "".join(f"{p + ' %':>12}{'w/o wait':>10}" for p in phases)]
    for r in ranks:
        cells = (f"{r['rank']:<6}{r['collectives']:>12}{r['communication_us'] / 1e3:>10.3f}{r['gpu_busy_us'] / 1e3:>10.3f}"
                 f"{_pct(r['share']):>9}{r.get('waiting_us', 0.0) / 1e3:>10.3f}{_pct(r.get('share_without_waiting')):>11}")
        for p in phases:
            pr = r["phases"].get(p, {})
            cells += f"{_pct(pr.get('share')):>12}{_pct(pr.get('share_without_waiting')):>10}"
        lines.append(cells)
    unmatched = ", ".join(f"{k} {v}" for k, v in skew["unmatched"].items())
    lines += ["", f"Rank skew at the collectives: {skew['matched']} matched ({skew['matching']}); unmatched: {unmatched}",
              (f"  skew = spread of a collective's start times over the ranks; late = the rank that starts last "
               f"(within {skew['tie_us']:g} us: even); own = the last rank's kernel time (no waiting); "
               f"wait/step = time a rank spins in collectives waiting for the others, per step"),
              f"{'scope (phase, position, kernel)':<40}{'matched':>8}{'skew med':>10}{'p90':>9}{'max':>10}{'own med':>9}{'late':>22}"
              + "".join(f"{'wait/step r' + str(r['rank']):>15}" for r in ranks)]
    for scope, b in _skew_scopes(skew):
        if not b.get("matched"):
            continue
        label = scope if len(scope) <= 39 else scope[:36] + "..."
        s, own = b["skew_us"], b["collective_own_us"]
        late = "/".join(str(v) for v in b["late"].values())
        per_step = b.get("wait_per_step_us") or {}
        lines.append(f"{label:<40}{b['matched']:>8}{s['median_us']:>10.2f}{s['p90_us']:>9.2f}{s['max_us']:>10.1f}"
                     f"{own['median_us']:>9.2f}{late:>22}"
                     + "".join(_wait_cell(per_step, r["rank"]) for r in ranks))
    lines.append(f"  late column: {' / '.join(skew['all']['late'])}")
    a = skew["all"]
    if a.get("matched"):
        who = a["usually_late"]
        most = a["late_for_most_time"]
        lines.append(("  late most often: " + (f"rank {who} ({100 * a['usually_late_share']:.0f} % of the starts more "
                                              f"than {skew['tie_us']:g} us apart)" if who is not None else
                                              "no rank (the late rank alternates)"))
                     + "; late for the most time: " + (f"rank {most} ({100 * a['late_for_most_time_share']:.0f} % of "
                                                       "the summed skew)" if most is not None else "no rank"))
        lines.append("  waiting share of each rank's collective time: "
                     + ", ".join(f"{k} {100 * v:.1f} %" for k, v in a["wait_share_of_collective_time"].items()))
    for r, res in zip(ranks, result["traces"]):
        lines += ["", f"===== rank {r['rank']} =====", to_text(res).rstrip("\n")]
    return "\n".join(lines) + "\n"
