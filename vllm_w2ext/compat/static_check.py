"""Check every hook row against a vLLM source tree, an unpacked wheel or a ``.whl`` file, without
importing vLLM or torch: the sources are parsed with ``ast``.

Per hook (``vllm_w2ext.hooks.all_hooks()``): the module file exists, the class exists, the method is
defined on that class itself (the plugin wraps it there: an inherited method does not attach, and
the row says where it is inherited from), its signature has the parameters the hook reads, and the
attributes the hook reads from vLLM's objects exist (``vllm_w2ext.hooks.requirements``).

Statuses: ``ok``; ``missing`` (module, class or method absent: a required hook fails the check);
``absent`` (the same for an optional hook); ``incompatible`` (found, but a hard requirement is not
met: fails the check, optional or not, since the hook would attach and misread). Soft requirements
that are not met are listed as warnings.

    vllm-w2ext doctor --vllm-source ~/src/vllm            # a checkout (PATH/vllm/...)
    vllm-w2ext doctor --vllm-source .venv/lib/python3.11/site-packages
    vllm-w2ext doctor --vllm-source vllm-0.33.0-cp38-abi3-manylinux_2_28_x86_64.whl --format json
"""
from __future__ import annotations

import ast
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from vllm_w2ext.compat import rust_frontend
from vllm_w2ext.hooks.requirements import (
    ATTRS,
    INHERITED_BY,
    ONE_OF,
    PARAMS,
    Attrs,
    Param,
    lookup,
)

OK, MISSING, ABSENT, INCOMPATIBLE = "ok", "missing", "absent", "incompatible"
FAILING = (MISSING, INCOMPATIBLE)
_MAX_DEPTH = 12


class SourceError(Exception):
    """PATH is not a vLLM source tree or wheel."""


# -- sources: a folder or a wheel, read by relative path ("vllm/v1/request.py") -------------------------
class Source:
    kind = "tree"
    label = ""

    def read(self, rel: str) -> str | None:
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def dist_infos(self) -> list[str]:
        """Names of the top-level ``*.dist-info`` folders."""
        raise NotImplementedError

    def module_file(self, module: str) -> str | None:
        base = module.replace(".", "/")
        for rel in (base + ".py", base + "/__init__.py"):
            if self.exists(rel):
                return rel
        return None

    def version(self) -> tuple[str | None, str | None]:
        """(distribution name, version) of the vLLM in this source, as far as it says."""
        dist, ver = None, None
        for name in self.dist_infos():
            m = re.match(r"^(vllm(?:[-_][a-z]+)?)-([^-]+)\.dist-info$", name)
            if not m or m.group(1).replace("_", "-") == "vllm-w2ext":
                continue
            top = self.read(f"{name}/top_level.txt")
            record = self.read(f"{name}/RECORD") if top is None else None
            if (top is not None and "vllm" in top.split()) or (record is not None and "vllm/__init__.py" in record):
                dist, ver = m.group(1).replace("_", "-"), m.group(2)
                break
        text = self.read("vllm/_version.py") or ""
        m = re.search(r"""^(?:__version__\s*=\s*)?version\s*=\s*['"]([^'"]+)['"]""", text, re.MULTILINE)
        if m:
            ver = m.group(1)
        if ver is None:
            m = re.search(r"vllm(?:[-_][a-z]+)?-(\d[^-/]*?)(?:-|\.tar|$)", self.label)
            ver = m.group(1) if m else None
        return dist, ver


class TreeSource(Source):
    def __init__(self, root: Path, label: str):
        self.root, self.label = root, label

    def read(self, rel: str) -> str | None:
        try:
            return (self.root / rel).read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def dist_infos(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.root) if e.name.startswith("vllm")
                          and e.name.endswith(".dist-info") and e.is_dir())
        except OSError:
            return []


class WheelSource(Source):
    kind = "wheel"

    def __init__(self, path: Path):
        self.label = str(path)
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise SourceError(f"{path}: not a readable wheel ({e})") from None
        self.names = set(self.zip.namelist())

    def read(self, rel: str) -> str | None:
        if rel not in self.names:
            return None
        return self.zip.read(rel).decode("utf-8", errors="replace")

    def exists(self, rel: str) -> bool:
        return rel in self.names

    def dist_infos(self) -> list[str]:
        return sorted({n.split("/", 1)[0] for n in self.names if n.split("/", 1)[0].endswith(".dist-info")})


def open_source(path: str | os.PathLike) -> Source:
    """A ``.whl`` file, a folder holding ``vllm/`` (checkout, unpacked wheel, site-packages) or the
    ``vllm`` package folder itself."""
    p = Path(path).expanduser()
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise SourceError(f"{p}: a file that is not a wheel (zip)")
        src = WheelSource(p)
    elif (p / "vllm" / "__init__.py").is_file():
        src = TreeSource(p, str(p))
    elif p.name == "vllm" and (p / "__init__.py").is_file():
        src = TreeSource(p.parent, str(p))
    elif not p.exists():
        raise SourceError(f"{p}: no such file or folder")
    else:
        raise SourceError(f"{p}: no vllm/__init__.py under it (give a vLLM checkout, unpacked wheel, "
                          "site-packages folder or .whl)")
    if not src.exists("vllm/__init__.py"):
        raise SourceError(f"{p}: no vllm/__init__.py in it")
    return src


# -- parsed modules and classes ------------------------------------------------------------------------
def _walk_defs(body: list):
    """Statements of a module or class body, descending into ``if`` / ``try`` / ``with`` blocks
    (``if TYPE_CHECKING:``, version switches)."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _walk_defs(node.body)
            yield from _walk_defs(node.orelse)
        elif isinstance(node, ast.Try):
            for part in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _walk_defs(part)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            yield from _walk_defs(node.body)


@dataclass
class Module:
    name: str
    rel: str
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    imports: dict[str, tuple[str, str]] = field(default_factory=dict)   # local name -> (module, name)


@dataclass
class ClassRef:
    module: Module
    node: ast.ClassDef

    @property
    def where(self) -> str:
        return f"{self.module.rel}:{self.node.lineno}"


def _name_of(expr: ast.expr) -> str:
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return f"{_name_of(expr.value)}.{expr.attr}"
    if isinstance(expr, ast.Subscript):              # Generic[T], Base[int]
        return _name_of(expr.value)
    if isinstance(expr, ast.Call):
        return _name_of(expr.func)
    return ast.dump(expr)


class Index:
    """Parsed modules of one source, on demand."""

    def __init__(self, source: Source):
        self.source = source
        self._modules: dict[str, Module | None] = {}
        self._attrs: dict[tuple[str, str], tuple] = {}

    def module(self, name: str) -> Module | None:
        if name not in self._modules:
            self._modules[name] = self._parse(name)
        return self._modules[name]

    def _parse(self, name: str) -> Module | None:
        rel = self.source.module_file(name)
        if rel is None:
            return None
        text = self.source.read(rel) or ""
        try:
            tree = ast.parse(text, filename=rel)
        except SyntaxError:
            return None
        mod = Module(name, rel)
        package = name if rel.endswith("/__init__.py") else name.rpartition(".")[0]
        for node in _walk_defs(tree.body):
            if isinstance(node, ast.ClassDef):
                mod.classes[node.name] = node           # the last definition wins, as at run time
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - node.level + 1] if node.level > 1 else parts
                    base = ".".join(parts + ([node.module] if node.module else []))
                for a in node.names:
                    mod.imports[a.asname or a.name] = (base, a.name)
        return mod

    def cls(self, module: str, name: str) -> ClassRef | None:
        mod = self.module(module)
        if mod is None or name not in mod.classes:
            return None
        return ClassRef(mod, mod.classes[name])

    def bases(self, ref: ClassRef) -> tuple[list[ClassRef], list[str]]:
        """Base classes found in this source, and the names of those that are not (``ABC``,
        ``msgspec.Struct``, or a module missing from the source)."""
        found, outside = [], []
        for b in ref.node.bases:
            name = _name_of(b)
            target = None
            if isinstance(b, (ast.Name, ast.Subscript)) and name in ref.module.classes and name != ref.node.name:
                target = ClassRef(ref.module, ref.module.classes[name])
            elif name in ref.module.imports:
                mod, cls = ref.module.imports[name]
                if mod.split(".")[0] == "vllm":
                    target = self.cls(mod, cls)
                    if target is None:          # a re-export: `from .a import B` in a package __init__
                        inner = self.module(mod)
                        if inner is not None and cls in inner.imports:
                            target = self.cls(*inner.imports[cls])
            if target is not None:
                found.append(target)
            else:
                outside.append(name)
        return found, outside

    def mro(self, ref: ClassRef) -> list[ClassRef]:
        """The class and its bases found in this source, depth first (enough for reporting)."""
        out, seen, stack = [], set(), [(ref, 0)]
        while stack:
            r, depth = stack.pop(0)
            key = (r.module.name, r.node.name)
            if key in seen or depth > _MAX_DEPTH:
                continue
            seen.add(key)
            out.append(r)
            stack[0:0] = [(b, depth + 1) for b in self.bases(r)[0]]
        return out

    def own_attrs(self, ref: ClassRef) -> tuple[set[str], bool]:
        """Attribute names a class defines itself, and whether its instances take no attributes
        beyond those (``__slots__``, ``@dataclass(slots=True)``, a ``msgspec.Struct`` without ``dict=True``)."""
        key = (ref.module.name, ref.node.name)
        if key in self._attrs:
            return self._attrs[key]
        names: set[str] = set()
        closed = False
        for node in _walk_defs(ref.node.body):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        names.add(t.id)
                        closed |= t.id == "__slots__"
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(node.name)
                args = node.args.posonlyargs + node.args.args
                if args:
                    names |= _self_stores(node, args[0].arg)
        for d in ref.node.decorator_list:
            if isinstance(d, ast.Call) and _name_of(d.func).split(".")[-1] == "dataclass":
                closed |= any(k.arg == "slots" and isinstance(k.value, ast.Constant) and k.value.value is True
                              for k in d.keywords)
        if any(_name_of(b).split(".")[-1] == "Struct" for b in ref.node.bases):
            closed |= not any(k.arg == "dict" and isinstance(k.value, ast.Constant) and k.value.value is True
                              for k in ref.node.keywords)
        self._attrs[key] = (names, closed)
        return names, closed


def _self_stores(fn: ast.AST, self_name: str) -> set[str]:
    out = set()
    for node in ast.walk(fn):
        if (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name) and node.value.id == self_name):
            out.add(node.attr)
    return out


def _is_overload(fn: ast.AST) -> bool:
    return any(_name_of(d).split(".")[-1] == "overload" for d in getattr(fn, "decorator_list", ()))


def _method(ref: ClassRef, name: str):
    """The method as the class body defines it (the last non-``@overload`` definition), or an
    assignment ``name = ...`` in the class body, or None."""
    found = None
    for node in _walk_defs(ref.node.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            if not _is_overload(node) or found is None or _is_overload(found):
                found = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found = node
    return found


@dataclass
class Signature:
    positional: list[str]           # after self/cls
    kwonly: list[str]
    varargs: bool
    varkw: bool
    text: str

    @classmethod
    def of(cls, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> Signature:
        a = fn.args
        pos = [x.arg for x in a.posonlyargs + a.args]
        if not any(_name_of(d) == "staticmethod" for d in fn.decorator_list) and pos:
            pos = pos[1:]
        kw = [x.arg for x in a.kwonlyargs]
        parts = list(pos) + (["*" + a.vararg.arg] if a.vararg else (["*"] if kw else [])) + kw
        if a.kwarg:
            parts.append("**" + a.kwarg.arg)
        return cls(pos, kw, a.vararg is not None, a.kwarg is not None, f"({', '.join(parts)})")


def check_param(sig: Signature, p: Param) -> str | None:
    """None when the signature has what the hook reads, else what is wrong."""
    if p.position is None:
        if p.name in sig.positional or p.name in sig.kwonly or sig.varkw:
            return None
        return f"no parameter {p.name!r}"
    if len(sig.positional) > p.position and sig.positional[p.position] == p.name:
        return None
    if p.name in sig.positional:
        return f"{p.name!r} is parameter {sig.positional.index(p.name) + 1}, the hook reads parameter {p.position + 1}"
    if p.name in sig.kwonly:
        return f"{p.name!r} is keyword-only, the hook reads it as parameter {p.position + 1}"
    got = sig.positional[p.position] if len(sig.positional) > p.position else None
    return f"no parameter {p.name!r}" + (f" (parameter {p.position + 1} is {got!r})" if got else "")


def check_attrs(index: Index, spec: Attrs) -> tuple[list[str], list[str]]:
    """(problems, warnings) of one attribute requirement."""
    ref = index.cls(spec.module, spec.cls)
    where = f"{spec.module}.{spec.cls}"
    if ref is None:
        if index.module(spec.module) is not None:
            what = "class not found"
        else:
            what = "module does not parse" if index.source.module_file(spec.module) else "module not found"
        return [f"{where}: {what}"], []
    names: set[str] = set()
    closed = True
    outside: list[str] = []
    for r in index.mro(ref):
        own, c = index.own_attrs(r)
        names |= own
        closed &= c
        outside += index.bases(r)[1]
    outside = [o for o in outside if o.split(".")[-1] not in ("object", "ABC", "Generic", "Protocol", "Struct")]
    hint = f" (bases not in the source: {', '.join(sorted(set(outside)))})" if outside else ""
    problems, warnings = [], []
    missing = [n for n in spec.names if n not in names]
    if missing:
        problems.append(f"{where} has no {', '.join(missing)}{hint}")
    soft = [n for n in spec.soft if n not in names]
    if soft:
        warnings.append(f"{where} has no {', '.join(soft)}{hint}")
    for group in spec.any_of:
        if not any(n in names for n in group):
            problems.append(f"{where} has none of {', '.join(group)}{hint}")
    if spec.sets_own and closed:
        problems.append(f"{where} takes no new attributes (__slots__), the plugin sets its own on it")
    return problems, warnings


def check_hook(index: Index, hook) -> dict:
    row = {"hook": hook.name, "role": hook.role, "target": f"{hook.module}.{hook.target}",
           "optional": hook.optional, "note": hook.note, "status": OK, "file": None, "line": None,
           "signature": None, "detail": "", "problems": [], "warnings": []}
    gone = ABSENT if hook.optional else MISSING
    mod = index.module(hook.module)
    if mod is None:
        rel = index.source.module_file(hook.module)
        row.update(status=gone, detail="module file not found" if rel is None else f"{rel} does not parse")
        return row
    row["file"] = mod.rel
    ref = index.cls(hook.module, hook.cls_name)
    if ref is None:
        row.update(status=gone, detail=f"class {hook.cls_name} not found in {mod.rel}")
        return row
    fn = _method(ref, hook.method)
    if fn is None:
        inherited = next(((b, m) for b in index.mro(ref)[1:] if (m := _method(b, hook.method)) is not None), None)
        if inherited:
            b, m = inherited
            detail = (f"{hook.method} is not defined on {hook.cls_name}: inherited from {b.node.name} "
                      f"({b.module.rel}:{m.lineno}); the plugin wraps the method on {hook.cls_name} itself")
        else:
            detail = f"{hook.cls_name} ({ref.where}) has no method {hook.method}"
        row.update(status=gone, detail=detail)
        return row
    row["line"] = fn.lineno
    sig = Signature.of(fn) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
    row["signature"] = sig.text if sig else None
    for p in lookup(PARAMS, hook.name):
        if sig is None:
            row["warnings"].append(f"{hook.method} is assigned, not defined: parameter {p.name!r} not checked")
            continue
        err = check_param(sig, p)
        if err:
            row["warnings" if p.soft else "problems"].append(f"{hook.method}{sig.text}: {err}")
    for spec in lookup(ATTRS, hook.name):
        problems, warnings = check_attrs(index, spec)
        row["problems"] += problems
        row["warnings"] += warnings
    for sub_module, sub_name in lookup(INHERITED_BY, hook.name):
        sub = index.cls(sub_module, sub_name)
        if sub is not None and (m := _method(sub, hook.method)) is not None:
            row["warnings"].append(f"{sub_name} overrides {hook.method} ({sub.module.rel}:{m.lineno}): "
                                   f"the hook does not run there")
    if row["problems"]:
        row["status"] = INCOMPATIBLE
    return row


def check(path: str | os.PathLike, hooks=None) -> dict:
    """The report of one vLLM source: version, Rust front end, one row per hook, summary, exit code."""
    if hooks is None:
        from vllm_w2ext.hooks import all_hooks
        hooks = all_hooks()
    source = open_source(path)
    index = Index(source)
    dist, version = source.version()
    rows = [check_hook(index, h) for h in hooks]
    counts = {s: sum(r["status"] == s for r in rows) for s in (OK, MISSING, ABSENT, INCOMPATIBLE)}
    counts["warnings"] = sum(bool(r["warnings"]) for r in rows)
    failing = [r["hook"] for r in rows if r["status"] in FAILING]
    status = {r["hook"]: r["status"] for r in rows}
    groups = []
    for feature, names in ONE_OF.items():
        names = tuple(n for n in names if n in status)
        if names:
            found = [n for n in names if status[n] == OK]
            groups.append({"feature": feature, "hooks": list(names), "found": found, "ok": bool(found)})
            if not found:
                failing.append(f"one of {'/'.join(names)} ({feature})")
    return {"source": source.label, "kind": source.kind, "distribution": dist, "vllm_version": version,
            "rust_frontend": rust_frontend.detect(source), "hooks": rows, "groups": groups, "summary": counts,
            "failing": failing, "exit_code": 1 if failing else 0}


_STATE = {OK: "ok", MISSING: "MISSING", ABSENT: "absent (optional)", INCOMPATIBLE: "INCOMPATIBLE"}


def format_text(report: dict) -> str:
    rows = report["hooks"]
    s = report["summary"]
    dist = report["distribution"] or "vllm"
    lines = [f"static check of {dist} {report['vllm_version'] or '(version unknown)'}: {report['source']}",
             (f"hooks: {s[OK]} ok, {s[MISSING]} missing, {s[ABSENT]} optional absent, "
              f"{s[INCOMPATIBLE]} incompatible, {s['warnings']} with warnings")]
    w = max(len(r["target"]) for r in rows) if rows else 0
    for r in rows:
        where = f"{r['file']}:{r['line']}" if r["line"] else r["detail"]
        lines.append(f"  {r['role']:<12} {r['target']:<{w}}  {_STATE[r['status']]:<17} {where}".rstrip())
        for p in r["problems"]:
            lines.append(f"      problem: {p}")
        for p in r["warnings"]:
            lines.append(f"      warning: {p}")
    for g in report.get("groups", ()):
        if not g["ok"]:
            lines.append(f"  none of {', '.join(g['hooks'])} attaches: {g['feature']} lost")
    rf = report["rust_frontend"]
    lines.append(f"Rust front end: {rf['state']}" + (f". {rf['message']}" if rf["present"] else ""))
    if report["failing"]:
        lines.append(f"FAILED: {', '.join(report['failing'])}")
    return "\n".join(lines)
