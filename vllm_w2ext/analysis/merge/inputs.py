"""What ``vllm-w2ext merge`` was given: span files and profiler traces, found in files or folders, and
how the merged file names them (relative to its own folder, so a shared trace carries no paths of the
machine that merged it)."""
from __future__ import annotations

import os
from pathlib import Path

from vllm_w2ext.vocab import TRACE_FILE_RE

PROFILER_SUFFIXES = (".pt.trace.json", ".pt.trace.json.gz", ".pt.trace.json.xz")


class MergeError(Exception):
    """Inputs or options the merge cannot work with (the command prints it and exits 2)."""


def find_inputs(inputs: list[str], out_path: str | None = None) -> tuple[list[str], list[str]]:
    """(span files, profiler traces) named by the inputs: files, or folders searched recursively.
    A file reached twice (the same folder given twice, or through a symlink) counts once."""
    spans, profs = set(), set()
    out = os.path.realpath(out_path) if out_path else None
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in p.rglob("*"):
                if f.is_file() and TRACE_FILE_RE.match(f.name):
                    spans.add(os.path.realpath(f))
                elif f.is_file() and f.name.endswith(PROFILER_SUFFIXES):
                    profs.add(os.path.realpath(f))
        elif p.is_file():
            if p.name.endswith(".pftrace"):
                spans.add(os.path.realpath(p))
            elif p.name.endswith((".json", ".json.gz", ".json.xz")):
                profs.add(os.path.realpath(p))
            else:
                raise MergeError(f"merge input {item!r}: expected a w2ext-<pid>.pftrace span file, a torch-profiler "
                                 "trace (*.pt.trace.json[.gz|.xz]) or a folder of them")
        else:
            raise MergeError(f"merge input {item!r}: no such file or folder")
    profs.discard(out)
    return sorted(spans), sorted(profs)


def relative_name(path: str, out_path) -> str:
    """An input as the merged file names it: relative to the merged file's folder."""
    try:
        return os.path.relpath(os.path.abspath(path), os.path.dirname(os.path.abspath(str(out_path))))
    except ValueError:                    # another drive (Windows)
        return os.path.basename(path)
