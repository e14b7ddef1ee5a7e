"""Export process: OTLP encoding/sending and Prometheus aggregation, outside vLLM's processes.

Measured on the H100 (vLLM 0.26.0, batch-1 decode, README "Measured"): with the exporters on the
in-process export thread, batch-1 latency grew by 4 % (OTLP) and 1 % (metrics) although the hooks
themselves cost 0.2 %: building OTel span objects, protobuf encoding and histogram updates are
Python that holds the GIL vLLM's engine thread needs between two 7 ms decode steps. So each vLLM
process (front end, EngineCore, worker) starts one export process (a fresh interpreter that never
imports vLLM) and hands it its finished ranges through a pipe as plain lists: in vLLM's process
that is one encoding of plain lists in C (``wire.encode_frame``) and one ``write`` per batch.

Since then the export process also assembles step attributes and request spans and writes the trace
file: vLLM's process only records raw ranges and serializes them (``recording.py``).

Protocol (parent -> child, on the child's stdin): frames (``wire.encode_frame``), each a tuple
``(kind, payload)`` with the kinds of :class:`~vllm_w2ext.telemetry.wire.Frame`. ``flush`` is
acknowledged on the child's stdout as ``<u32 seq>``. End of input (the parent exited, closed the
pipe or was killed) makes the child flush its sinks within ``VLLM_W2EXT_SHUTDOWN_TIMEOUT_S`` and exit.
The child runs in its own session (a Ctrl-C to the terminal's process group reaches vLLM, whose exit
then ends the child) and also exits when its parent is gone.
"""
from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import threading
import time

from vllm_w2ext import config
from vllm_w2ext.telemetry import identity
from vllm_w2ext.telemetry.exporters import wants_metrics
from vllm_w2ext.telemetry.sink import Sink
from vllm_w2ext.telemetry.wire import LEN, Frame, SelfCost, decode_frame, encode_frame, frame_length

log = logging.getLogger("vllm_w2ext")
_PIPE_BYTES = 1 << 20                 # pipe capacity asked for (Linux F_SETPIPE_SZ)
_F_SETPIPE_SZ = 1031
CHILD_MODULE = "vllm_w2ext.export_child"


def read_frames(stream):
    """Yield ``(kind, payload)`` frames until end of input; an unreadable frame is skipped."""
    read = stream.read
    while True:
        head = read(4)
        if len(head) < 4:
            return
        n, codec = frame_length(head)
        data = read(n)
        if len(data) < n:
            return
        try:
            yield decode_frame(data, codec)
        except Exception as e:  # a bad frame must not end the export
            log.warning("vllm_w2ext export process: skipped an unreadable frame: %r", e)


class ExportProcessSink(Sink):
    """vLLM's side of the pipe: forwards raw range records, identity and self-cost to the export process."""
    name = "export_process"

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.fd = proc.stdin.fileno()
        self._identity = None
        self._seq = 0
        self._dead = False
        self._lock = threading.Lock()
        self._released: dict[int, float] = {}      # thread id -> wall seconds in the writes (released_here)
        self._encoding: dict[int, float] = {}      # thread id -> thread CPU seconds in encode_frame (encode_cpu_here)

    def released_here(self) -> float:
        return self._released.get(threading.get_ident(), 0.0)

    def encode_cpu_here(self) -> float:
        return self._encoding.get(threading.get_ident(), 0.0)

    def close_in_forked_child(self) -> None:
        _close_pipes(self.proc)

    def _send(self, kind: str, payload) -> bool:
        if self._dead:
            return False
        c0 = time.thread_time()
        data = encode_frame(kind, payload)
        tid = threading.get_ident()
        self._encoding[tid] = self._encoding.get(tid, 0.0) + time.thread_time() - c0
        with self._lock:
            if self._dead:                 # shut down meanwhile: the descriptor is closed (its number maybe reused)
                return False
            t0 = time.perf_counter()
            try:
                view = memoryview(data)
                while view:                # blocks only the export thread, with the GIL released
                    view = view[os.write(self.fd, view):]
                return True
            except OSError as e:           # BrokenPipeError: the export process is gone
                self._dead = True
                code = self.proc.poll()
                # killed by a signal: at shutdown vLLM force-kills what is left of a process that is slow to exit,
                # its children with it (its process manager, by process tree: our own session does not shield
                # it); that process is being killed too, so this is no news to its user. Any other end is.
                (log.info if code is not None and code < 0 else log.warning)(
                    "vllm_w2ext: the export process (pid %s) is gone (%r%s); spans and metrics of this process "
                    "are dropped from now on", self.proc.pid, e, "" if code is None else f", exit code {code}")
                return False
            finally:                       # the writes, GIL released (and taken back): not held (Pipeline)
                self._released[tid] = self._released.get(tid, 0.0) + time.perf_counter() - t0

    def sync_identity(self, metrics_dir: str | None) -> None:
        """Tell the export process who this process is, when that changed (a role's ranks, the metrics folder)."""
        key = (os.getpid(), identity.generation(), metrics_dir)
        if key != self._identity and self._send(Frame.IDENTITY, (key[0], identity.vllm_version(), identity.roles(),
                                                                 metrics_dir)):
            self._identity = key

    def consume(self, records: list) -> None:
        if not self._send(Frame.RANGES, records):
            self.dropped += len(records)
            self.failed_batches += 1

    def send_stats(self, cost: SelfCost) -> None:
        self._send(Frame.STATS, tuple(cost))      # a plain tuple: marshal writes it (a NamedTuple goes as pickle)

    def serve_metrics(self, port: int, host: str, directory: str) -> bool:
        """The front end's metrics endpoint runs in the export process: scrapes cost vLLM nothing."""
        return self._send(Frame.SERVE_METRICS, (port, host, directory))

    def flush(self, timeout_s: float) -> None:
        """Everything sent so far is exported (or the export process gave up) within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self._seq += 1
        if not self._send(Frame.FLUSH, (self._seq, timeout_s)):
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
                (seq,), got = LEN.unpack(got[:4]), got[4:]
                if seq >= self._seq:
                    return

    def shutdown(self, timeout_s: float) -> None:
        """End of input. Sends after this are quiet no-ops: a flush may still come at exit (a one-process
        engine's ``EngineCore.shutdown`` runs from vLLM's ``weakref.finalize``, after our ``atexit`` handler),
        and writing to the closed descriptor, whose number another file may have by then, must not happen."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._dead = True
            try:
                self.proc.stdin.close()    # end of input: the export process flushes and exits
            except OSError:
                pass
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # it exits on its own deadline; never hold up vLLM's exit
            pass


_prestarted: list = [None]       # (pid of the process it serves, Popen) started ahead of first use
_used_here = [False]             # this process has (had) an export process: so will a forked child


def wanted(settings: config.Settings) -> bool:
    return settings.export_process == "on" and (settings.otlp_enabled or wants_metrics(settings)
                                                or bool(settings.trace_dir))


def start() -> ExportProcessSink | None:
    proc = _take_prestarted() or _spawn()
    return ExportProcessSink(proc) if proc is not None else None


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
        proc = subprocess.Popen([sys.executable, "-m", CHILD_MODULE],
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
    """A forked child must not keep its parent's pipe open (the export process would never see EOF).

    Closed through the file objects, not ``os.close(fileno)``: a file object that still believes it
    is open closes its descriptor number again when it is collected, and by then the child may have
    reused that number (its own export process's pipe, opened right after: that export process then
    saw end of input and exited, and the child wrote to a closed or foreign descriptor). The child's
    copy of the parent's ``Popen`` is then finished off without waiting on a process it does not own."""
    for f in (proc.stdin, proc.stdout):
        try:
            f.close()                  # our writes bypass the buffer (os.write): nothing to flush
        except (OSError, ValueError):
            pass
    if proc.returncode is None:
        proc.returncode = -1           # not our child: no waitpid, no resurrection in subprocess._active


def _after_fork_in_child() -> None:
    got, _prestarted[0] = _prestarted[0], None
    if got is not None:
        _close_pipes(got[1])
    if _used_here[0]:                   # the child is a vLLM process of its own (e.g. a forked worker)
        _used_here[0] = False
        prestart(config.current())


os.register_at_fork(after_in_child=_after_fork_in_child)
