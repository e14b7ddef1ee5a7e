"""The export process's main program (``python -m vllm_w2ext.export_child``): one per vLLM process.

A composition root, like ``telemetry/pipeline.py`` is for vLLM's side: it reads the frames its vLLM
process writes (``telemetry/export_process.py``), assembles step attributes and request spans
(``steps/assemble.py``) and feeds the exporters (``telemetry/exporters.py``). It never imports vLLM.
It exits on end of input (the parent exited, closed the pipe or was killed) after flushing within
``VLLM_W2EXT_SHUTDOWN_TIMEOUT_S``, and also when its parent is gone.
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading

from vllm_w2ext import config
from vllm_w2ext.steps import assemble
from vllm_w2ext.telemetry import identity, metrics_server
from vllm_w2ext.telemetry.export_process import read_frames
from vllm_w2ext.telemetry.exporters import ExportChain
from vllm_w2ext.telemetry.wire import LEN, Frame, SelfCost


class Served:
    """What the export process knows of the vLLM process it serves (from its identity frames)."""
    pid = 0
    metrics_dir: str | None = None


def _reader(stream, q: queue.Queue) -> None:
    for frame in read_frames(stream):
        q.put(frame)
    q.put(None)


def unpin() -> None:
    """Run wherever the kernel finds room: every core, not the parent's pinned set. vLLM binds CPU workers
    to cores (GPU workers to their NUMA node's); a child inherits that mask, so the export process would
    share its worker's core with the worker's busy-polling main thread and fall minutes behind (seen on the
    2-core CPU build: a worker's trace file written only after the run ended).

    Every core, not only the cores the parent is not pinned to (as before): vLLM's readers spin on
    ``sched_yield`` for up to 1 s after each read, and on this machine's kernel (6.18) a spinner pinned to a
    core starved every other task placed there for 5-60 s (export processes runnable but not run, per
    /proc/PID/schedstat, while the other core idled; the kernel's own workers too: "workqueue lockup").
    Confined to the one core that is not its parent's, the export process cannot escape a spinner there;
    allowed on every core, the kernel's load balancing moves a waiting task to an idle one. Where no other
    core is allowed (a cpuset), the inherited mask stays."""
    try:
        every = set(range(os.cpu_count() or 1))
        if os.sched_getaffinity(0) != every:
            os.sched_setaffinity(0, every)
    except (AttributeError, OSError):      # no affinity API, or the cpuset allows fewer cores: keep the mask
        pass


def main() -> int:
    unpin()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(asctime)s vllm_w2ext export process %(process)d: %(message)s")
    settings = config.load()
    parent = os.getppid()
    served = Served()
    served.pid = parent
    chain = ExportChain(settings, assemble.for_settings(settings), lambda: served.metrics_dir, lambda: served.pid,
                        in_export_process=True)
    q: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(sys.stdin.buffer, q), name="w2ext-export-reader", daemon=True).start()
    ack = sys.stdout.buffer
    interval = settings.export_waits_ms[0] / 1000.0
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
            if kind == Frame.RANGES:
                chain.consume(payload)
            elif kind == Frame.IDENTITY:
                pid, version, roles, mdir = payload
                identity.adopt(pid, version, roles)
                served.pid, served.metrics_dir = pid, mdir
            elif kind == Frame.STATS:
                chain.parent_cost = SelfCost._make(payload)
            elif kind == Frame.SERVE_METRICS:
                port, host, mdir = payload
                served.metrics_dir = mdir
                metrics_server.serve(port, host, mdir)
            elif kind == Frame.FLUSH:
                seq, timeout_s = payload
                chain.flush(timeout_s)
                ack.write(LEN.pack(seq))
                ack.flush()
        chain.tick()
    chain.shutdown(settings.shutdown_timeout_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
