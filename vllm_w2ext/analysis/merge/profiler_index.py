"""What ``vllm-w2ext merge`` needs to know about one torch-profiler trace, from one streaming pass:
the step annotations (the plugin's ``worker.execute_model #<step>`` record_function ranges, and
vLLM's own ``execute_context_..._generation_...`` ranges), the kernel launches (CUDA runtime/driver
calls with a correlation id) and the GPU activities they launched, or, on CPU-only traces, the CPU
ops; which processes and threads have events, what the profiler called them, and the GPU activities
that overlap on their stream (Hopper kernels launched with programmatic dependent launch start before
the previous one ends: Perfetto drops such a slice, ``slice_drop_overlapping_complete_event``), which
the merge moves to a lane track of their stream. Only small tuples are kept; the events themselves
are copied later from the file."""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from vllm_w2ext.analysis.readers.kineto_raw import KinetoRawReader
from vllm_w2ext.vocab import ANNOTATION_RE

VLLM_STEP_ANNOTATION = re.compile(r"^execute_context_\d+\(\d+\)_generation_\d+\(\d+\)$")
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
LAUNCH_CATS = ("cuda_runtime", "cuda_driver")
STREAM_CATS = GPU_CATS + ("gpu_user_annotation",)     # what Kineto draws on a GPU stream's track
LANE_TID_BASE = 20_000_000         # lane L of stream S: tid LANE_TID_BASE * L + S (clear of real tids)
# Kineto's bookkeeping events name no real process: a string pid ("Spans": the recording window) or a
# negative one (-1: buffer requests), which Perfetto files under pid 0, i.e. GPU 0. They move here.
PROFILER_PID = 99_999_990          # above any Linux pid (PID_MAX_LIMIT is 4,194,304)
# Kineto's ac2g flows (launch -> kernel) take CUPTI's correlation id (32 bits) as their id, and Perfetto
# pairs flow ends by id alone: two ranks' traces, whose correlation ids run alike, would cross-link. The
# k-th profiler trace of a merge gets its ac2g ids shifted by k * AC2G_ID_STRIDE (clear of our own flow
# ids, our_events.FLOW_ID_BASE, for up to 232 traces); its bookkeeping tids by k * BOOKKEEPING_TID_STRIDE.
AC2G_ID_STRIDE = 1 << 32
BOOKKEEPING_TID_STRIDE = 100


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
    process_names: dict = field(default_factory=dict)   # pid -> the profiler's process_name
    process_labels: dict = field(default_factory=dict)  # pid -> the profiler's process_labels ("GPU 0", "CPU")
    thread_names: dict = field(default_factory=dict)    # (pid, tid) -> the profiler's thread_name
    threads: dict = field(default_factory=dict)         # (pid, tid) -> events on it (M events not counted)
    gpu_pids: dict = field(default_factory=dict)        # GPU pid -> device id
    moved: dict = field(default_factory=dict)           # event ordinal -> lane tid (overlapping GPU activity)
    moved_flows: dict = field(default_factory=dict)     # (correlation, ts) -> (pid, tid, lane tid): its ac2g end
    lane_tracks: dict = field(default_factory=dict)     # (pid, lane tid) -> (stream tid, lane)
    remap: dict = field(default_factory=dict)           # (pid, tid) of bookkeeping -> (PROFILER_PID, tid)
    flow_id_shift: int = 0                              # added to its ac2g flow ids (several traces: renumber)
    first_ns: int | None = None                    # recorded window (complete events), relative to base
    last_ns: int | None = None

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpu)

    @property
    def cpu_pids(self) -> list:
        """The profiled processes (integer pids that are not GPUs), busiest first."""
        n: dict = {}
        for (pid, _), c in self.threads.items():
            if isinstance(pid, int) and pid >= 0 and pid not in self.gpu_pids:
                n[pid] = n.get(pid, 0) + c
        return sorted(n, key=lambda p: -n[p])

    @property
    def rank(self) -> int | None:
        """The trace's rank (Kineto's ``distributedInfo``), when it has one."""
        rank = (self.meta.get("distributedInfo") or {}).get("rank") if isinstance(self.meta, dict) else None
        return rank if isinstance(rank, int) else None

    def renumber(self, k: int) -> None:
        """The k-th (from 0) of several profiler traces merged into one: its ac2g flow ids and its
        bookkeeping tracks move to ranges of their own (the first trace keeps its numbers)."""
        self.flow_id_shift = k * AC2G_ID_STRIDE
        self.remap = {key: (pid, tid + k * BOOKKEEPING_TID_STRIDE) for key, (pid, tid) in self.remap.items()}

    def device_name(self, device: int) -> str:
        for d in self.meta.get("deviceProperties") or ():
            if isinstance(d, dict) and d.get("id") == device and d.get("name"):
                return str(d["name"])
        return ""

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
    stream_events: dict = {}                  # (pid, tid) -> [(start, -end, ordinal, correlation, ts)]
    for n, (_, e) in enumerate(reader):
        ph, cat = e.get("ph"), e.get("cat")
        pid = _int(e.get("pid"))
        if ph == "M":
            _metadata(ix, e, pid)
            continue
        key = (e.get("pid"), e.get("tid"))
        if _hashable(key) and not is_global_instant(e):
            ix.threads[key] = ix.threads.get(key, 0) + 1
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
        elif cat in STREAM_CATS:
            args = e.get("args") or {}
            corr = args.get("correlation") if cat in GPU_CATS else None
            device = args.get("device")
            ix.gpu_pids.setdefault(pid, device if isinstance(device, int) else pid)
            if _hashable(tid):
                stream_events.setdefault((pid, tid), []).append((start, -end, n, corr, float(e["ts"])))
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
    for pid, label in ix.process_labels.items():      # Kineto labels its GPU processes "GPU <device>"
        m = re.match(r"^GPU (\d+)$", label)
        if m and pid in ix.gpu_pids:
            ix.gpu_pids[pid] = int(m.group(1))
    _lanes(ix, stream_events)
    for k, (pid, tid) in enumerate(sorted((key for key in ix.threads if not (isinstance(key[0], int) and key[0] >= 0)),
                                          key=str)):
        ix.remap[(pid, tid)] = (PROFILER_PID, k + 1)
    if not ix.gpu:
        for pid, tid, s, e_, ts, name in cpu_ops:
            ix.cpu_ops.setdefault((pid, tid), []).append((s, -e_, ts, name))
        for k, v in ix.cpu_ops.items():             # sorted by start, outermost first on ties
            v.sort()
            ix.cpu_ops[k] = [(s, -ne, ts, name) for s, ne, ts, name in v]
    return ix


def is_global_instant(e: dict) -> bool:
    """A global instant event: drawn on the trace-wide track, whatever pid it names."""
    return e.get("ph") in ("i", "I") and e.get("s") == "g"


def _hashable(x) -> bool:
    return isinstance(x, (int, str, type(None))) or (isinstance(x, tuple) and all(_hashable(v) for v in x))


def _metadata(ix: ProfilerIndex, e: dict, pid) -> None:
    name, args = e.get("name"), e.get("args") or {}
    key = e.get("pid")
    if not _hashable(key):
        return
    if name == "process_name":
        if pid is not None:
            ix.named_pids.add(pid)
        ix.process_names[key] = str(args.get("name", ""))
    elif name == "process_labels":
        ix.process_labels[key] = str(args.get("labels", ""))
    elif name == "thread_name" and _hashable(e.get("tid")):
        ix.thread_names[(key, e.get("tid"))] = str(args.get("name", "")).strip()


def _lanes(ix: ProfilerIndex, stream_events: dict) -> None:
    """Activities that overlap an earlier one on their stream without nesting in it go to lane tracks
    (the first lane where they nest), as Perfetto would otherwise drop them; ``ix.gpu`` follows."""
    moved_corr: dict = {}
    for (pid, tid), evs in stream_events.items():
        if not isinstance(tid, int):
            continue
        evs.sort()
        stacks: list[list[int]] = [[]]
        for start, neg_end, n, corr, ts in evs:
            end = -neg_end
            for lane, st in enumerate(stacks):
                while st and st[-1] <= start:
                    st.pop()
                if not st or end <= st[-1]:
                    break
            else:
                stacks.append([])
                lane, st = len(stacks) - 1, stacks[-1]
            st.append(end)
            if lane:
                new = LANE_TID_BASE * lane + tid
                ix.moved[n] = new
                ix.lane_tracks[(pid, new)] = (tid, lane)
                if corr is not None:
                    ix.moved_flows[(corr, ts)] = (pid, tid, new)
                    moved_corr[(corr, ts)] = new
    if moved_corr:
        for corr, acts in ix.gpu.items():
            ix.gpu[corr] = [(s, pid, moved_corr.get((corr, ts), tid), ts, name) for s, pid, tid, ts, name in acts]
