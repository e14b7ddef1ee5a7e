"""``explain``: a span folder (plus optional scrape and profile) turned into ranked findings, the device
idle by cause, the requests' summary and a one-line verdict (the dict ``--format json`` prints)."""
from __future__ import annotations

from vllm_w2ext.analysis.explain import batches, idle, interference, kernel_mix, metrics, preemption, queueing
from vllm_w2ext.analysis.explain.findings import Finding, pct, ranked
from vllm_w2ext.analysis.explain.requests import summary
from vllm_w2ext.analysis.explain.timeline import Timeline, device_label, load

SIGNIFICANT = 0.05        # a finding below this share of the wall time is not worth a headline
BUSY_OK = 0.95            # a device busy this much of its stepping time is not waiting on the host
SCHEDULING = ("schedule", "update_from_output", "engine_loop")


def _devices(idle_by_dev: dict) -> list[dict]:
    return [{"device": device_label(dev), "engine": dev[0], "rank": dev[1], "pid": d.pid, "steps": d.steps,
             "steps_idle_unmeasured": d.unmeasured,
             **({"run_steps": d.run_steps, "scale": round(d.scale, 4)} if d.scale != 1.0 else {}),
             "busy_s": round(d.busy_s, 6), "stepping_idle_s": round(d.stepping_idle_s, 6),
             "busy_share_of_stepping": round(d.busy_share, 6), "idle_s": round(d.idle_s, 6)}
            for dev, d in sorted(idle_by_dev.items())]


def _from_metrics(m: dict, wall_s: float) -> list[Finding]:
    """Device-idle findings from the scrape's counters (spans without device attributes)."""
    out = []
    for c, s in m["device_idle_by_cause"].items():
        if s > 0:
            ev = {"text": f"{s:.3f} s in the scrape's counters (process lifetime, warm-up included; "
                          "no_work is not split into frontend without the spans)",
                  "by_device": {k: round(d["idle"].get(c, 0.0), 6) for k, d in m["devices"].items()},
                  "source": "metrics"}
            out.append(Finding(f"device_idle.{c}", c, idle.TITLES.get(c, c), s, s / wall_s if wall_s else 0.0, ev))
    return out


def verdict(tl: Timeline, devices: list[dict], by_cause: dict, findings: list[Finding], from_metrics: bool = False
            ) -> str:
    if not devices:
        if tl.executions:
            return "the worker spans carry no device attributes: " + (
                "device idle by cause comes from the scrape's counters" if from_metrics else
                "device idle is not broken down (a scrape with --metrics can stand in)")
        return "no model executions in this folder: nothing to say about the device"
    busy = sum(d["busy_share_of_stepping"] for d in devices) / len(devices)
    head = (f"the device was busy {pct(busy)} of the stepping time" if len(devices) == 1 else
            f"the {len(devices)} devices were busy {pct(busy)} of the stepping time (mean over the devices: "
            + ", ".join(f"{d['device']} {pct(d['busy_share_of_stepping'])}" for d in devices) + ")")
    sched = sum(by_cause[c]["seconds"] for c in SCHEDULING)
    stepping = sum(d["busy_s"] + d["stepping_idle_s"] for d in devices) / len(devices)
    if stepping and sched / stepping < 0.02:
        head += "; scheduling is not the bottleneck"
    big = [f for f in findings if f.share >= SIGNIFICANT]
    if not big:
        return head + ("; nothing else stands out" if busy >= BUSY_OK else
                       "; no single cause stands out (none costs 5 % of the wall time)")
    return head + f"; the largest loss: {big[0].title} ({big[0].seconds:.3f} s, {pct(big[0].share)} of the wall time)"


def explain(path: str, metrics_path: str | None = None, profile: str | None = None,
            timeline: Timeline | None = None) -> dict:
    tl = timeline if timeline is not None else load(path)
    idle_by_dev = idle.all_devices(tl) if tl.has_device_attrs else {}
    rows = batches.rows(tl)
    found: list[Finding] = []
    if tl.has_device_attrs:
        found += idle.findings(tl, idle_by_dev)
    inter, pre = interference.finding(tl, rows), preemption.finding(tl, rows)
    queued = queueing.findings(tl, rows)
    cap = next((f for f in queued if f.id == "queueing.capacity"), None)
    if pre is not None and preemption.absorb(pre, cap, tl.wall_s):
        queued.remove(cap)
    found += [f for f in (inter, pre) if f is not None] + queued
    notes = list(tl.notes)
    out: dict = {}
    stood_in = False
    by_cause = idle.by_cause(idle_by_dev, tl.wall_s)
    if metrics_path:
        m = metrics.read(metrics_path)
        out["metrics"] = m
        if not m["devices"]:
            notes.append(f"{metrics_path}: no vllm_w2ext_device_idle_seconds_total in the scrape")
        elif not tl.has_device_attrs:
            stood_in = True
            found += _from_metrics(m, tl.wall_s)
            by_cause = {c: {"seconds": s, "share": round(s / tl.wall_s, 6) if tl.wall_s else 0.0}
                        for c, s in m["device_idle_by_cause"].items()}
    if profile:
        f, mix, pnotes = kernel_mix.finding(profile, tl.wall_s)
        out["kernel_mix"] = mix
        notes += pnotes
        if f is not None:           # None: no GPU kernels (a CPU-only profile), which analyze's notes say
            found.append(f)
    found = ranked(found)
    devices = _devices(idle_by_dev)
    return {"path": path,
            "wall": {"seconds": round(tl.wall_s, 6), "source": tl.wall_source, "start_ns": tl.wall_start,
                     "end_ns": tl.wall_end},
            "processes": [{"pid": p.pid, "name": p.name} for p in tl.processes],
            "devices": devices,
            "verdict": verdict(tl, devices, by_cause, found, stood_in),
            "findings": [f.as_dict() for f in found],
            "device_idle_by_cause": by_cause,
            "requests": summary(tl),
            **out,
            "notes": notes}
