"""NVML sampler (the lab's ``nvidia-smi dmon`` step, automated): utilization, memory, power and clocks
of every GPU at a fixed interval, as CSV, until SIGTERM/SIGINT.

    python -m vllm_w2ext.lab.gpu_monitor OUT.csv [--interval 0.2] [--phase NAME | --phase-file PATH]

Needs ``nvidia-ml-py`` (``pynvml``). The phase column marks which experiment a row belongs to: a fixed
``--phase``, or the current content of ``--phase-file`` (the lab runner rewrites it at every session).
``vllm_w2ext.lab.report.results.nvml_by_phase(csv)`` summarises the CSV per phase."""
from __future__ import annotations

import argparse
import csv
import signal
import threading
import time

FIELDS = ("time", "phase", "gpu", "util_gpu_pct", "util_mem_pct", "mem_used_mib", "power_w", "sm_clock_mhz",
          "mem_clock_mhz", "temp_c")


def sample(nv, handles) -> list[tuple]:
    now = time.time()
    rows = []
    for i, h in enumerate(handles):
        u = nv.nvmlDeviceGetUtilizationRates(h)
        m = nv.nvmlDeviceGetMemoryInfo(h)
        rows.append((now, i, u.gpu, u.memory, m.used // (1 << 20), nv.nvmlDeviceGetPowerUsage(h) / 1000.0,
                     nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM), nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
                     nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)))
    return rows


def read_phase(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--interval", type=float, default=0.2)
    ap.add_argument("--phase", default="")
    ap.add_argument("--phase-file", help="read the phase name from this file at every sample")
    a = ap.parse_args(argv)
    import pynvml as nv
    nv.nvmlInit()
    handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with open(a.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(FIELDS)
        while not stop.is_set():
            phase = read_phase(a.phase_file) if a.phase_file else a.phase
            for r in sample(nv, handles):
                w.writerow((f"{r[0]:.3f}", phase) + r[1:])
            f.flush()
            stop.wait(a.interval)
    nv.nvmlShutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
