"""A slow collector: the OTLP receiver answers every export, but only after SLOW_S seconds, for the
whole of a served benchmark. Compared in the same test with the same benchmark on a server that has
the plugin on but no span exporter (metrics endpoint on in both, so only the exporter differs); both
servers run side by side and the benchmarks alternate (none, slow, none, slow):

- no request fails;
- the engine never waits for the collector: an exporter that blocked the thread that made the spans
  would stall each run by SLOW_S per export RPC, and a run makes at least PROMPTS / BATCH_SIZE of them
  (one front-end span per request at least), so its throughput ratio to the no-export server would be
  at most T / (T + stall), T the no-export run's duration (~0.25 here); the test asserts the ratio of
  the means lies above the midpoint between that and 1. How close to 1 it stays (the export process's
  host load on 2 shared cores) is a speed question: benchmarks, not this test (ratios seen in CI: 0.84
  to 1.14);
- memory stays bounded: the server tree's RSS, sampled every 0.5 s, peaks at most RSS_MARGIN_MIB above
  the no-export server's peak, and from the end of the first slow run to the end of the second it grows
  by at most GROWTH_MIB more than the no-export server grew (the span queue is bounded at
  VLLM_W2EXT_QUEUE_SIZE=1024);
- what does not fit is dropped and counted in vllm_w2ext_spans_dropped_total, while the slow
  collector still receives spans (slow, not dead), and nothing is logged per span or per batch.
"""
from __future__ import annotations

import contextlib
import json
import re
import threading
import urllib.request

import psutil
import pytest
from conftest import ROOT, clean_env
from support.prometheus import metric_sum
from support.vllm_server import CliLoop, free_port, vllm_serve

from vllm_w2ext.receiver import OTLPReceiver
from vllm_w2ext.telemetry.otlp import BATCH_SIZE

SLOW_S = 3.0              # each export RPC takes this long (the exporter's timeout is 10 s: no errors)
PROMPTS = 1000          # > 2 x the queue bound of front-end spans per run: the queue overflows
RSS_MARGIN_MIB = 256      # the slow server loads gRPC + the OTLP exporter in 3 processes; the baseline does not
GROWTH_MIB = 64


class RssSampler:
    """RSS of a process and all its children, every 0.5 s, in a thread."""

    def __init__(self, pid: int):
        self.pid, self.samples, self._stop = pid, [], threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def now(self) -> float:
        try:
            root = psutil.Process(self.pid)
            procs = [root] + root.children(recursive=True)
        except psutil.Error:
            return 0.0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(self.now())
            self._stop.wait(0.5)

    def stop(self) -> float:
        self._stop.set()
        self._t.join()
        return max(self.samples)


def bench(client: CliLoop, port: int, model, out_dir, name: str) -> dict:
    """`vllm bench serve` (in the one client process of the module: the same command, without its ~8 s
    start-up; each run loads its tokenizer and dataset as a fresh process does)."""
    client.run(["bench", "serve", "--backend", "vllm", "--model", "tiny", "--tokenizer", str(model),
                "--port", str(port), "--dataset-name", "random", "--random-input-len", "32",
                "--random-output-len", "16", "--num-prompts", str(PROMPTS), "--request-rate", "inf",
                "--ignore-eos", "--save-result", "--result-dir", str(out_dir), "--result-filename", name])
    return json.loads((out_dir / name).read_text())


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def plugin_lines(log: str) -> list[str]:
    return [line for line in log.splitlines()
            if "vllm_w2ext" in line or any(k in line for k in ("Transient error", "Failed to export",
                                                                 "Queue full", "Exception while exporting"))]


def server_pid(port: int) -> int:
    return next(p.pid for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] and "serve" in p.info["cmdline"] and "bench" not in p.info["cmdline"]
                and str(port) in p.info["cmdline"])


@pytest.fixture(scope="module")
def slow_vs_none(tiny_model, tmp_path_factory):
    """Both servers up at once, benchmarks interleaved (none, slow, none, slow) so that the load of
    other jobs on the machine hits both alike; RSS of each server tree sampled all along."""
    tmp = tmp_path_factory.mktemp("otlp-slow")
    rx = OTLPReceiver(delay_s=SLOW_S).start()
    mports = {"none": free_port(), "slow": free_port()}
    envs = {"none": clean_env(VLLM_W2EXT="1", VLLM_W2EXT_METRICS_PORT=str(mports["none"])),
            "slow": clean_env(VLLM_W2EXT="1", VLLM_W2EXT_METRICS_PORT=str(mports["slow"]),
                              VLLM_W2EXT_QUEUE_SIZE="1024", **rx.env("grpc"))}
    out = {k: {"runs": [], "settled_rss_mib": []} for k in envs}
    try:
        with contextlib.ExitStack() as stack:
            client = CliLoop(clean_env(), tmp / "bench.log", ROOT)      # imports vLLM while the servers start
            stack.callback(client.close)
            ports = {k: stack.enter_context(vllm_serve(tiny_model, env, tmp / f"{k}.log", ROOT))
                     for k, env in envs.items()}
            samplers = {k: RssSampler(server_pid(port)) for k, port in ports.items()}
            for i in range(2):
                for k in ("none", "slow"):
                    out[k]["runs"].append(bench(client, ports[k], tiny_model, tmp, f"{k}{i}.json"))
                    out[k]["settled_rss_mib"].append(samplers[k].now())
            for k in envs:
                out[k]["metrics"] = scrape(mports[k])
                out[k]["peak_rss_mib"] = samplers[k].stop()
        out["slow"]["received"] = len(rx.spans())
    finally:
        rx.stop()
    for k in envs:
        out[k]["log"] = (tmp / f"{k}.log").read_text()
    base, slow = out["none"], out["slow"]
    thr = {k: [r["request_throughput"] for r in v["runs"]] for k, v in (("none", base), ("slow", slow))}
    mean = {k: sum(v) / len(v) for k, v in thr.items()}
    run_s = sum(r["duration"] for r in base["runs"]) / len(base["runs"])
    stall_s = (PROMPTS // BATCH_SIZE) * SLOW_S           # per run, if each export blocked the span's thread
    blocked_ratio = run_s / (run_s + stall_s)
    summary = {"request_throughput": thr, "mean": mean, "ratio": mean["slow"] / mean["none"],
               "no_export_run_s": run_s, "stall_s_if_blocking": stall_s, "ratio_if_blocking": blocked_ratio,
               "floor": (1 + blocked_ratio) / 2,
               "peak_rss_mib": {"none": base["peak_rss_mib"], "slow": slow["peak_rss_mib"]},
               "settled_rss_mib": {"none": base["settled_rss_mib"], "slow": slow["settled_rss_mib"]},
               "dropped": metric_sum(slow["metrics"], "vllm_w2ext_spans_dropped_total"),
               "recorded": metric_sum(slow["metrics"], "vllm_w2ext_spans_recorded_total"),
               "export_errors": metric_sum(slow["metrics"], "vllm_w2ext_export_errors_total"),
               "received_by_slow_collector": slow["received"], "log_lines": plugin_lines(slow["log"])}
    (tmp / "summary.json").write_text(json.dumps(summary, indent=1))
    print("slow collector vs no export:", json.dumps(summary))
    return base, slow, summary


def test_no_request_fails(slow_vs_none):
    base, slow, _ = slow_vs_none
    for r in base["runs"] + slow["runs"]:
        assert r["completed"] == PROMPTS and r["failed"] == 0


def test_export_never_stalls_the_engine(slow_vs_none):
    _, _, s = slow_vs_none
    assert s["ratio"] > s["floor"], s


def test_memory_bounded(slow_vs_none):
    _, _, s = slow_vs_none
    assert s["peak_rss_mib"]["slow"] <= s["peak_rss_mib"]["none"] + RSS_MARGIN_MIB, s
    first, second = s["settled_rss_mib"]["slow"]
    none_first, none_second = s["settled_rss_mib"]["none"]
    assert (second - first) - max(0.0, none_second - none_first) <= GROWTH_MIB, s     # beyond vLLM's own growth


def test_slow_not_dead_and_drops_counted(slow_vs_none):
    _, _, s = slow_vs_none
    assert s["received_by_slow_collector"] > 0                 # exports do get through, slowly
    assert s["dropped"] > 0                                    # the bounded queue overflowed ...
    assert s["export_errors"] == 0                             # ... but no export failed


def test_no_line_per_span(slow_vs_none):
    _, slow, _ = slow_vs_none
    lines = plugin_lines(slow["log"])
    # the overflow is said once per process that dropped, the exporter's own trouble once more at most
    assert any("span queue" in line and "is full" in line for line in lines), lines[:10]
    pids = re.findall(r"vllm_w2ext, pid (\d+)", "\n".join(lines))
    # the lines whole in the message (a list's repr is cut short): one CI run failed on a fourth line unseen
    assert len(pids) == len(lines) <= 6 and all(pids.count(p) <= 2 for p in set(pids)), "\n".join(lines[:10])
