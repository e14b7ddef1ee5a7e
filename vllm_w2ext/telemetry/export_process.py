"""Export process: OTLP encoding/sending and Prometheus aggregation, outside vLLM's processes.

Measured on the H100 (vLLM 0.26.0, batch-1 decode, README "Measured"): with the exporters on the
in-process export thread, batch-1 latency grew by 4 % (OTLP) and 1 % (metrics) although the hooks
themselves cost 0.2 %: building OTel span objects, protobuf encoding and histogram updates are
Python that holds the GIL vLLM's engine thread needs between two 7 ms decode steps. So each vLLM
process (front end, EngineCore, worker) starts one export process (a fresh interpreter that never
imports vLLM) and hands it its finished ranges through a pipe as pickled tuples: in vLLM's process
that is one ``pickle.dumps`` of plain tuples (C code) and one ``write`` per batch.

Protocol (parent -> child, on the child's stdin): frames of ``<u32 length><pickle>``, each a tuple
``(kind, payload)``: ``identity`` (pid, vLLM version, roles, metrics folder), ``ranges`` (list of
tuples, see :func:`pack`), ``stats`` (the parent's self-cost counters), ``serve_metrics`` (the
front end's scrape endpoint: port, host, folder; served here so scrapes never hold vLLM's GIL), ``flush`` (sequence number,
acknowledged on the child's stdout as ``<u32 seq>``). End of input (the parent exited, closed the
pipe or was killed) makes the child flush its sinks within ``VLLM_W2EXT_SHUTDOWN_TIMEOUT_S`` and exit.
The child runs in its own session (a Ctrl-C to the terminal's process group reaches vLLM, whose exit
then ends the child) and also exits when its parent is gone.
"""
from __future__ import annotations

import logging
import os
import pickle
import queue
import select
import struct
import subprocess
import sys
import threading
import time

from vllm_w2ext import config
from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.ranges import Range

log = logging.getLogger("vllm_w2ext")
_LEN = struct.Struct("<I")
_PIPE_BYTES = 1 << 20                 # pipe capacity asked for (Linux F_SETPIPE_SZ)
_F_SETPIPE_SZ = 1031


def pack(r: Range) -> tuple:
    return (r.name, r.role, r.trace_id, r.span_id, r.parent_id, r.start_ns, r.end_ns, r.attrs, r.links,
            r.step, r.error, r.nested)


def unpack(t: tuple) -> Range:
    r = Range(t[0], t[1], t[2], t[3], t[4], t[5], t[7], t[9])
    r.end_ns, r.links, r.error, r.nested = t[6], t[8], t[10], t[11]
    return r


class ExportProcessSink:
    """Parent side: a sink of the in-process pipeline that forwards ranges to the export process."""
    name = "export_process"

    def __init__(self, proc: subprocess.Popen, pipeline):
        self.proc, self.pipeline = proc, pipeline
        self.fd = proc.stdin.fileno()
        self.dropped = 0               # ranges lost because the export process is gone
        self.failed_batches = 0
        self._identity = None
        self._seq = 0
        self._dead = False
        self._lock = threading.Lock()

    @classmethod
    def start(cls, settings: config.Settings, pipeline) -> "ExportProcessSink | None":
        proc = _take_prestarted() or _spawn()
        return cls(proc, pipeline) if proc is not None else None

    def close_in_forked_child(self) -> None:
        _close_pipes(self.proc)

    def _send(self, kind: str, payload) -> bool:
        if self._dead:
            return False
        data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            try:
                view = memoryview(_LEN.pack(len(data)) + data)
                while view:                # blocks only this export thread, with the GIL released
                    view = view[os.write(self.fd, view):]
                return True
            except OSError as e:           # BrokenPipeError: the export process is gone
                self._dead = True
                self.pipeline.warn_once("export_process", "vllm_w2ext: the export process (pid %s) is gone "
                                        "(%r); spans and metrics of this process are dropped from now on",
                                        self.proc.pid, e)
                return False

    def _sync_identity(self) -> None:
        from vllm_w2ext.telemetry.metrics_server import metrics_dir
        ident = (os.getpid(), identity.vllm_version(), identity.roles(), metrics_dir())
        if ident != self._identity and self._send("identity", ident):
            self._identity = ident

    def consume(self, ranges: list[Range]) -> None:
        self._sync_identity()
        if not self._send("ranges", [pack(r) for r in ranges]):
            self.dropped += len(ranges)
            self.failed_batches += 1

    def tick(self) -> None:
        from vllm_w2ext.telemetry.sinks import pipeline_counters
        self._sync_identity()
        self._send("stats", pipeline_counters(self.pipeline)())

    def serve_metrics(self, port: int, host: str, directory: str) -> bool:
        """The front end's metrics endpoint runs in the export process: scrapes cost vLLM nothing."""
        return self._send("serve_metrics", (port, host, directory))

    def flush(self, timeout_s: float) -> None:
        """Everything sent so far is exported (or the export process gave up) within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self.tick()
        self._seq += 1
        if not self._send("flush", (self._seq, timeout_s)):
            return
        out = self.proc.stdout.fileno()
        got = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([out], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(out, 64)
            if not chunk:
                break
            got += chunk
            while len(got) >= 4:
                (seq,), got = _LEN.unpack(got[:4]), got[4:]
                if seq >= self._seq:
                    return

    def shutdown(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        self.tick()
        try:
            self.proc.stdin.close()        # end of input: the export process flushes and exits
        except OSError:
            pass
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # it exits on its own deadline; never hold up vLLM's exit
            pass


_prestarted: list = [None]       # (pid of the process it serves, Popen) started ahead of first use
_used_here = [False]             # this process has (had) an export process: so will a forked child


def wanted(settings: config.Settings) -> bool:
    from vllm_w2ext.telemetry.sinks import wants_metrics
    return settings.export_process == "on" and (settings.otlp_enabled or wants_metrics(settings))


def prestart(settings: config.Settings) -> None:
    """Start this process's export process now (plugin registration), so its interpreter start-up
    (about a second of imports, on another core) is over before the first engine step."""
    if wanted(settings) and _prestarted[0] is None:
        proc = _spawn()
        if proc is not None:
            _prestarted[0] = (os.getpid(), proc)


def _take_prestarted():
    got, _prestarted[0] = _prestarted[0], None
    if got is not None and got[0] == os.getpid() and got[1].poll() is None:
        return got[1]
    return None


def _spawn():
    _used_here[0] = True
    try:
        proc = subprocess.Popen([sys.executable, "-m", "vllm_w2ext.telemetry.export_process"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
                                start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    except OSError as e:
        log.warning("vllm_w2ext: could not start the export process (%r); exporting in-process "
                    "(VLLM_W2EXT_EXPORT_PROCESS=off does this on purpose)", e)
        return None
    try:
        import fcntl
        fcntl.fcntl(proc.stdin.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
    except OSError:                    # not Linux, or above /proc/sys/fs/pipe-max-size: keep the default
        pass
    return proc


def _close_pipes(proc) -> None:
    """A forked child must not keep its parent's pipe open (the export process would never see EOF)."""
    for f in (proc.stdin, proc.stdout):
        try:
            os.close(f.fileno())
        except (OSError, ValueError):
            pass


def _after_fork_in_child() -> None:
    got, _prestarted[0] = _prestarted[0], None
    if got is not None:
        _close_pipes(got[1])
    if _used_here[0]:                   # the child is a vLLM process of its own (e.g. a forked worker)
        _used_here[0] = False
        prestart(config.current())


os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the export process ----------------------------------------------------------------------------
class _ParentCounters:
    """Self-cost counters: the parent's (sent as ``stats``) plus this process's sinks and CPU."""

    def __init__(self) -> None:
        self.parent = (0, 0, 0, 0.0, 0.0, {})
        self.sinks: list = []

    def __call__(self):
        rec, dropped, errors, cpu, hook_s, hook_errors = self.parent
        dropped += sum(getattr(s, "dropped", 0) for s in self.sinks)
        errors += sum(getattr(s, "failed_batches", 0) for s in self.sinks)
        return rec, dropped, errors, cpu + time.process_time(), hook_s, hook_errors


def _reader(stream, q: queue.Queue) -> None:
    read = stream.read
    while True:
        head = read(4)
        if len(head) < 4:
            break
        (n,) = _LEN.unpack(head)
        data = read(n)
        if len(data) < n:
            break
        try:
            q.put(pickle.loads(data))
        except Exception as e:  # a bad frame must not end the export
            log.warning("vllm_w2ext export process: skipped an unreadable frame: %r", e)
    q.put(None)


def main() -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(asctime)s vllm_w2ext export process %(process)d: %(message)s")
    from vllm_w2ext.telemetry.metrics_server import DIR_ENV
    from vllm_w2ext.telemetry.sinks import exporter_sinks
    settings = config.load()
    parent = os.getppid()
    counters = _ParentCounters()
    sinks = counters.sinks
    sinks += exporter_sinks(settings, counters, write_front=True)
    q: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(sys.stdin.buffer, q), name="w2ext-export-reader",
                     daemon=True).start()
    ack = sys.stdout.buffer
    interval = settings.export_interval_ms / 1000.0
    warned: set[str] = set()

    def each(method: str, *args) -> None:
        for s in sinks:
            fn = getattr(s, method, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception as e:  # one failing sink must not stop the others
                if (s.name, method) not in warned:
                    warned.add((s.name, method))
                    log.warning("%s %s failed: %r", s.name, method, e)

    while True:
        try:
            msg = q.get(timeout=interval)
        except queue.Empty:
            msg = ()
            if os.getppid() != parent:     # parent gone without closing the pipe (fd kept by a child)
                msg = None
        if msg is None:
            break
        if msg:
            kind, payload = msg
            if kind == "ranges":
                each("consume", [unpack(t) for t in payload])
            elif kind == "identity":
                pid, version, roles, mdir = payload
                identity.adopt(pid, version, roles)
                if mdir:
                    os.environ[DIR_ENV] = mdir
            elif kind == "stats":
                counters.parent = payload
            elif kind == "serve_metrics":
                from vllm_w2ext.telemetry import metrics_server
                port, host, mdir = payload
                os.environ[DIR_ENV] = mdir
                metrics_server.serve(port, host, mdir)
            elif kind == "flush":
                seq, timeout_s = payload
                each("flush", timeout_s)
                ack.write(_LEN.pack(seq))
                ack.flush()
        each("tick")
    each("shutdown", settings.shutdown_timeout_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
