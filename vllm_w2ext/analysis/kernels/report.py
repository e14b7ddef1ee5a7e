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
