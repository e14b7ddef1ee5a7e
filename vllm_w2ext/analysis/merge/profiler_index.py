"""What ``vllm-w2ext merge`` needs to know about one torch-profiler trace, from one streaming pass:
the step annotations (the plugin's ``worker.execute_model #<step>`` record_function ranges, and
vLLM's own ``execute_context_..._generation_...`` ranges), the kernel launches (CUDA runtime/driver
calls with a correlation id) and the GPU activities they launched, or, on CPU-only traces, the CPU
ops. Only small tuples are kept; the events themselves are copied later from the file."""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from vllm_w2ext.analysis.readers.kineto_raw import KinetoRawReader
from vllm_w2ext.vocab import ANNOTATION_RE

VLLM_STEP_ANNOTATION = re.compile(r"^execute_context_\d+\(\d+\)_generation_\d+\(\d+\)$")
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATS = ("cuda_runtime", "cuda_driver")


def ts_ns(ts_us) -> int:
    """Kineto ``ts``/``dur`` (µs, 3 decimals) as integer ns, exact for the values Kineto writes."""
    return round(float(ts_us) * 1000)


@dataclass
class Annotation:
    name: str           # span name without the step suffix, or vLLM's full annotation name
    step: int           # step id (ours) or the ordinal of vLLM's step annotations
    pid: int
    tid: int
    ts: float           # the profiler's own ts (flows bind to it exactly)
    start_ns: int       # relative to the trace's baseTimeNanoseconds
    end_ns: int
    ours: bool


@dataclass
class ProfilerIndex:
    path: str
    base_ns: int = 0
    meta: dict = field(default_factory=dict)
    events: int = 0
    truncated: bool = False
    annotations: list[Annotation] = field(default_factory=list)
    launches: dict = field(default_factory=dict)   # (pid, tid) -> sorted [(start_ns, end_ns, correlation)]
    gpu: dict = field(default_factory=dict)        # correlation -> [(start_ns, pid, tid, ts, name)]
    cpu_ops: dict = field(default_factory=dict)    # (pid, tid) -> sorted [(start_ns, end_ns, ts, name)]
    named_pids: set = field(default_factory=set)   # pids the profiler names (process_name metadata)
    pids: set = field(default_factory=set)
    first_ns: int | None = None                    # recorded window (complete events), relative to base
    last_ns: int | None = None

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpu)

    def step_targets(self, a: Annotation) -> list[tuple]:
        """What a step annotation launched, in time order: GPU activities (pid, tid, ts, name)
        of the launches inside it, or on CPU-only traces its top-level CPU ops."""
        key = (a.pid, a.tid)
        if self.has_gpu:
            launches = self.launches.get(key, ())
            i = bisect.bisect_left(launches, (a.start_ns,))
            out = []
            while i < len(launches) and launches[i][0] <= a.end_ns:
                out += self.gpu.get(launches[i][2], ())
                i += 1
            return [t[1:] for t in sorted(out)]
        ops = self.cpu_ops.get(key, ())
        i = bisect.bisect_left(ops, (a.start_ns,))
        out, last_end = [], -1
        while i < len(ops) and ops[i][0] <= a.end_ns:
            s, e, ts, name = ops[i]
            if s >= last_end and e <= a.end_ns:     # top level inside the annotation
                out.append((a.pid, a.tid, ts, name))
                last_end = e
            i += 1
        return out


def _int(v):
    return v if isinstance(v, int) else None


def index_trace(path: str) -> ProfilerIndex:
    ix = ProfilerIndex(path)
    reader = KinetoRawReader(path)
    vllm_steps = 0
    launches: list = []
    cpu_ops: list = []
    for _, e in reader:
        ph, cat = e.get("ph"), e.get("cat")
        pid = _int(e.get("pid"))
        if ph == "M":
            if e.get("name") == "process_name" and pid is not None:
                ix.named_pids.add(pid)
            continue
        if ph != "X" or pid is None or "ts" not in e:
            continue
        ix.pids.add(pid)
        start = ts_ns(e["ts"])
        end = start + ts_ns(e.get("dur", 0))
        if ix.first_ns is None or start < ix.first_ns:
            ix.first_ns = start
        if ix.last_ns is None or end > ix.last_ns:
            ix.last_ns = end
        tid = e.get("tid")
        if cat == "user_annotation":
            name = e.get("name", "")
            m = ANNOTATION_RE.match(name)
            if m:
                ix.annotations.append(Annotation(m.group(1), int(m.group(2)), pid, tid, float(e["ts"]),
                                                 start, end, True))
            elif VLLM_STEP_ANNOTATION.match(name):
                ix.annotations.append(Annotation(name, vllm_steps, pid, tid, float(e["ts"]), start, end, False))
                vllm_steps += 1
        elif cat in GPU_CATS:
            corr = (e.get("args") or {}).get("correlation")
            if corr is not None:
                ix.gpu.setdefault(corr, []).append((start, pid, tid, float(e["ts"]), e.get("name", "")))
                cpu_ops = []                  # a GPU trace: steps point at kernels, not CPU ops
        elif cat in LAUNCH_CATS:
            corr = (e.get("args") or {}).get("correlation")
            if corr is not None:
                launches.append((pid, tid, start, end, corr))
        elif cat == "cpu_op" and not ix.gpu:
            cpu_ops.append((pid, tid, start, end, float(e["ts"]), e.get("name", "")))
    ix.meta, ix.events, ix.truncated = reader.meta, reader.events, reader.truncated
    base = ix.meta.get("baseTimeNanoseconds", 0)
    ix.base_ns = int(base) if isinstance(base, (int, float)) else 0
    for pid, tid, s, e_, corr in launches:
        ix.launches.setdefault((pid, tid), []).append((s, e_, corr))
    for v in ix.launches.values():
        v.sort()
    if not ix.gpu:
        for pid, tid, s, e_, ts, name in cpu_ops:
            ix.cpu_ops.setdefault((pid, tid), []).append((s, -e_, ts, name))
        for k, v in ix.cpu_ops.items():             # sorted by start, outermost first on ties
            v.sort()
            ix.cpu_ops[k] = [(s, -ne, ts, name) for s, ne, ts, name in v]
    return ix
