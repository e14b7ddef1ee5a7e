"""A real Prometheus server (Debian's `prometheus`) on 127.0.0.1 with a temporary config."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

from support.vllm_server import free_port, stop


class Prometheus:
    """``exemplars``: start with ``--enable-feature=exemplar-storage`` (Prometheus then scrapes as
    OpenMetrics and keeps the exemplars it finds; ``query_exemplars`` reads them back)."""

    def __init__(self, workdir: Path, jobs: dict[str, str], interval: str = "1s", storage: Path | None = None,
                 exemplars: bool = False):
        self.bin = shutil.which("prometheus")
        if self.bin is None:
            raise FileNotFoundError("prometheus binary not found (apt-get install prometheus; .ci/setup-extras)")
        self.dir = workdir
        self.storage = storage or workdir / "data"
        self.port = free_port()
        self.exemplars = exemplars
        cfg = ["global:", f"  scrape_interval: {interval}", f"  evaluation_interval: {interval}", "scrape_configs:"]
        for job, target in jobs.items():
            cfg += [f"  - job_name: {json.dumps(job)}", "    static_configs:", f"      - targets: [{json.dumps(target)}]"]
        (workdir / "prometheus.yml").write_text("\n".join(cfg) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Prometheus":
        log = open(self.dir / "prometheus.log", "w")
        self.proc = subprocess.Popen(
            [self.bin, f"--config.file={self.dir / 'prometheus.yml'}", f"--storage.tsdb.path={self.storage}", "--storage.tsdb.retention.time=3650d",
             f"--web.listen-address=127.0.0.1:{self.port}"]
            + (["--enable-feature=exemplar-storage"] if self.exemplars else []), stdout=log, stderr=subprocess.STDOUT)
        return self

    def query_exemplars(self, expr: str, start: float, end: float) -> list:
        """``/api/v1/query_exemplars``: [{seriesLabels, exemplars: [{labels, value, timestamp}]}]."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        url = f"http://127.0.0.1:{self.port}/api/v1/query_exemplars?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"] or []

    def query(self, expr: str, at: float | None = None) -> list:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait(self, expr: str, timeout: float = 60.0, at: float | None = None) -> list:
        """Poll until ``expr`` returns data (the first scrape takes ~5 s in Prometheus 2.42)."""
        deadline = time.monotonic() + timeout
        last = []
        while time.monotonic() < deadline:
            try:
                last = self.query(expr, at)
                if last:
                    return last
            except OSError:
                pass
            time.sleep(0.5)
        return last

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGTERM, 20)


def promtool() -> str | None:
    return shutil.which("promtool")


def metric_sum(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` in an exposition text whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total

