"""The one scrape endpoint: the front-end process serves its own metrics merged with the latest
snapshot of every other vLLM process (EngineCore, workers) found in the metrics folder.

Snapshots with exemplars are OpenMetrics text (``metrics.StepMetrics.exposition``) read back with the
OpenMetrics parser, so the exemplars of every process survive the merge: a scrape that asks for
``application/openmetrics-text`` gets them, a plain text-format scrape gets the same samples without.
A snapshot is parsed once per version (its size and modification time), not once per scrape."""
from __future__ import annotations

import atexit
import glob
import logging
import os
import shutil
import tempfile
import threading

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from vllm_w2ext import config

log = logging.getLogger("vllm_w2ext")
DIR_ENV = "VLLM_W2EXT_METRICS_DIR"
_lock = threading.Lock()
_state = {"started": False, "server": None, "dir": None}


def metrics_dir() -> str | None:
    """Folder shared by the processes of one vLLM instance (set by the front end for its children).
    The one reader of it in vLLM's processes; an export process is told it in its identity frame."""
    return config.current().metrics_dir or os.environ.get(DIR_ENV) or None


def shared_dir() -> str:
    """The instance's metrics folder: the one set (``VLLM_W2EXT_METRICS_DIR``, or inherited from the
    front end), else a new temporary folder that the processes this one starts inherit through the
    environment, and that this process, which made it, removes when it exits (not a forked child of it:
    it inherits the exit handler, not the folder). A process that is killed (SIGKILL) leaves it behind."""
    d = metrics_dir()
    if d:
        return d
    d = tempfile.mkdtemp(prefix="vllm-w2ext-metrics-")
    os.environ[DIR_ENV] = d
    atexit.register(_remove_made_dir, d, os.getpid())
    return d


def _remove_made_dir(directory: str, maker_pid: int) -> None:
    if os.getpid() == maker_pid:
        shutil.rmtree(directory, ignore_errors=True)


def parse_snapshot(text: str) -> list:
    """A snapshot's metric families, whichever exposition format it was written in. The text format
    turns each counter's and histogram's ``_created`` series into a gauge family of its own, whose name
    clashes with the family's in an OpenMetrics exposition: those are left out (start times only)."""
    if text.rstrip().endswith("# EOF"):
        return list(parse_openmetrics(text))
    return [f for f in parse_text(text) if not (f.type == "gauge" and f.name.endswith("_created"))]


class MergedCollector:
    def __init__(self, own, directory: str):
        self.own, self.directory = own, directory
        self._parsed: dict[str, tuple] = {}     # path -> ((size, mtime_ns), families)

    def collect(self):
        fams: dict[tuple[str, str], Metric] = {}

        def add(fam):
            key = (fam.name, fam.type)
            m = fams.get(key)
            if m is None:
                m = fams[key] = Metric(fam.name, fam.documentation, fam.type)
            m.samples.extend(fam.samples)

        if self.own is not None:
            for fam in self.own.registry.collect():
                add(fam)
        me = f"{os.getpid()}.prom" if self.own is not None else None
        paths = sorted(glob.glob(os.path.join(self.directory, "*.prom")))
        for path in paths:
            if os.path.basename(path) == me:
                continue
            try:
                st = os.stat(path)
                version = (st.st_size, st.st_mtime_ns)
                cached = self._parsed.get(path)
                if cached is None or cached[0] != version:
                    with open(path) as f:
                        text = f.read()
                    cached = self._parsed[path] = (version, parse_snapshot(text))
                for fam in cached[1]:
                    add(fam)
            except (OSError, ValueError) as e:   # a half-written or vanished file: skip this scrape
                log.debug("vllm_w2ext: skipped metrics snapshot %s: %r", path, e)
        for gone in set(self._parsed) - set(paths):
            del self._parsed[gone]
        yield from fams.values()


def ensure_started(own, delegate=None) -> None:
    """Start the endpoint once per front-end process (no-op without VLLM_W2EXT_METRICS_PORT).

    ``own``: this process's StepMetrics when it aggregates in-process (else None).
    ``delegate(port, host, directory) -> bool``: hand the HTTP server to this process's export
    process (scrapes then never run in vLLM's front end); on False it is served here."""
    s = config.current()
    if not s.metrics_port or _state["started"]:
        return
    with _lock:
        if _state["started"]:
            return
        _state["started"] = True
        d = shared_dir()
        os.makedirs(d, exist_ok=True)          # a folder named by the setting may not exist yet
        os.environ[DIR_ENV] = d            # spawned EngineCore/workers inherit it
        _state["dir"] = d
        if own is None and delegate is not None and delegate(s.metrics_port, s.metrics_host, d):
            return
        serve(s.metrics_port, s.metrics_host, d, own)


def serve(port: int, host: str, directory: str, own=None) -> None:
    """The HTTP endpoint merging ``own`` (a StepMetrics, or None) with every snapshot in ``directory``."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MergedCollector(own, directory))
    try:
        _state["server"] = start_http_server(port, addr=host, registry=reg)
    except OSError as e:
        log.error("vllm_w2ext: VLLM_W2EXT_METRICS_PORT=%s on %s unavailable (%s); the metrics endpoint "
                  "is off for this run, spans and traces are unaffected", port, host, e)
