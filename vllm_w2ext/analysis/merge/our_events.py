"""Our side of the merged trace: the span files' slices as Chrome-JSON complete events on threads of
their own process (a thread per role, or per span name for ranges that overlap, split into lanes
where they would not nest), plus the flow events that link them. Names and order: tracks.py."""
from __future__ import annotations

from vllm_w2ext.analysis.merge.clock import ns_to_us
from vllm_w2ext.analysis.merge.tracks import ROLE_ORDER, span_process
from vllm_w2ext.analysis.readers.pftrace import ROLE_NAMES, SpanFile

OUR_TID_BASE = 10_000_000          # above any Linux thread id (PID_MAX_LIMIT is 4,194,304)
FLOW_ID_BASE = 1_000_000_000_000   # clear of the profiler's ac2g correlation ids
CAT, FLOW_CAT = "w2ext", "w2ext.flow"


class OurEvents:
    """Our events (metadata, spans, flows) in the output's time base, in the order they are written."""

    def __init__(self, base_ns: int, offset_ns: int):
        self.base, self.offset = base_ns, offset_ns
        self.events: list[dict] = []
        self.next_tid = OUR_TID_BASE
        self.next_flow = FLOW_ID_BASE
        self.flows = 0
        self.threads: list[tuple] = []    # (pid, tid, name, order key) of the span threads

    def ts(self, our_ns: int) -> float:
        return ns_to_us(our_ns + self.offset - self.base)

    def flow(self, name: str, src: tuple, dst: tuple) -> None:
        """Flow from the slice at src (pid, tid, ts) to the slice at dst."""
        fid, self.next_flow = self.next_flow, self.next_flow + 1
        self.events.append({"ph": "s", "id": fid, "pid": src[0], "tid": src[1], "ts": src[2],
                            "cat": FLOW_CAT, "name": name})
        self.events.append({"ph": "f", "bp": "e", "id": fid, "pid": dst[0], "tid": dst[1], "ts": dst[2],
                            "cat": FLOW_CAT, "name": name})
        self.flows += 1


def lanes(slices) -> list[tuple[int, object]]:
    """(lane, slice) so that the slices of each lane nest strictly (Chrome-JSON complete events). A
    slice starting at the same ns as the one it would nest in takes another lane: a flow binds to the
    innermost slice open at its ts, so slices of one lane must not share a start (the requests first
    scheduled in one step all start with that step)."""
    stacks: list[list[tuple[int, int]]] = []
    out = []
    for s in sorted(slices, key=lambda s: (s.start_ns, -s.end_ns)):
        for i, st in enumerate(stacks):
            while st and st[-1][1] <= s.start_ns:
                st.pop()
            if not st or (s.end_ns <= st[-1][1] and s.start_ns > st[-1][0]):
                st.append((s.start_ns, s.end_ns))
                out.append((i, s))
                break
        else:
            stacks.append([(s.start_ns, s.end_ns)])
            out.append((len(stacks) - 1, s))
    return out


def add_spans(o: OurEvents, sf: SpanFile) -> dict:
    """Complete events of one span file; returns {id(slice): (pid, tid, ts)} for flows. Its threads are
    listed in ``o.threads`` (pid, tid, name, order key) for tracks.layout, which names and orders them:
    one per role (``w2ext EngineCore engine 0``), then the lanes of overlapping spans by name."""
    where = {}
    proc = span_process(sf)
    groups: dict[str, list] = {}
    for s in sf.slices:
        groups.setdefault(s.track if s.track in ROLE_NAMES else s.name, []).append(s)
    for group, slices in sorted(groups.items()):
        tids: dict[int, int] = {}
        role = group in ROLE_NAMES
        label = f"w2ext {proc.role_label(group)}" if role else f"w2ext {group}"
        for lane, s in lanes(slices):
            tid = tids.get(lane)
            if tid is None:
                tid = tids[lane] = o.next_tid
                o.next_tid += 1
                key = (0, ROLE_ORDER.get(group, 9), "", lane) if role else (1, 0, group, lane)
                o.threads.append((sf.pid, tid, label + (f" #{lane}" if lane else ""), key))
            ts = o.ts(s.start_ns)
            args = {**s.args, "w2ext.role": s.role, "w2ext.track": s.track}
            o.events.append({"ph": "X", "cat": CAT, "name": s.name, "pid": sf.pid, "tid": tid, "ts": ts,
                             "dur": ns_to_us(s.end_ns - s.start_ns), "args": args})
            where[id(s)] = (sf.pid, tid, ts)
    return where
