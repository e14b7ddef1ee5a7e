"""Stage SGLang 0.5.17 on the lent GPU machine (H200, Python 3.12, torch 2.11.0+cu130, no network, 64 MiB a call).

Driven by `sglang_stage.sh` next to this file (see its header and benchmarks/README.md, "SGLang on the H200"):

    pack              (here)       download the cp312 wheels the machine lacks, trim them, put them in one
                                   tar.xz, split it into parts of at most SGLANG_PART_MB (48) MiB under
                                   .gpu/sglang/partK, with a manifest (sha256 of the archive and of each part)
    part K            (device)     keep part K under /tmp; the call that brings the last missing part joins
                                   them, checks the sha256, installs the wheels (pip --no-index --no-deps
                                   --target), writes the env file and runs `check`
    check             (device)     import sglang, sgl_kernel, flashinfer and the modules bench_one_batch uses,
                                   then `python -m sglang.bench_one_batch --help`
    jit               (device)     compile the JIT kernels the Llama run needs (flashinfer rmsnorm, sglang rope
                                   and KV store: nvcc, ~1 min) so a toolchain problem shows before the run
    repack SRC DIR    (here)       one wheel, stored (not deflated, so xz sees the bytes), trimmed by TRIM

Only the standard library is used, so `pack` runs on any Python 3.9+ here, and `part`/`check` on the device's.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

SGLANG_VERSION = "0.5.17"

# Every wheel the device lacks for `import sglang` and `python -m sglang.bench_one_batch` (dense Llama, dummy
# weights, --attention-backend triton, --sampling-backend pytorch). Versions: sglang's own pins where it pins
# (sglang 0.5.17's Requires-Dist), otherwise what the registry served on 2026-11-30. The device already has
# torch 2.11.0, triton 3.6.0, numpy, requests, aiohttp, psutil, pillow, scipy, einops, uvloop, xxhash,
# prometheus-client, huggingface-hub, safetensors, sentencepiece, tiktoken, jinja2, pyyaml, regex, filelock,
# anyio, httpx, h11, click, tabulate, nvidia-ml-py, cuda-bindings, ninja, torchvision, torchaudio, pygments
# (KINDS.md's package list): none of those travel.
WHEELS = [
    ("sglang==0.5.17", "the engine; pins torch==2.11.0 (the device's)"),
    ("sglang-kernel==0.4.5", "sgl_kernel: AOT CUDA ops for torch 2.11 + CUDA 13 (sm90/common_ops)"),
    ("flashinfer-python==0.6.15.post1", "imported unconditionally on CUDA by sglang.srt.layers.sampler; "
     "sgl_kernel's rmsnorm/fused_add_rmsnorm call flashinfer.norm (JIT-compiled with nvcc on first use)"),
    ("apache-tvm-ffi==0.1.11", "tvm_ffi: flashinfer's and sglang.kernels.jit's JIT loader (sglang pins 0.1.11)"),
    ("xgrammar==0.2.1", "imported at module level by sglang's function-call parsers (sglang pins 0.2.1)"),
    ("transformers==5.12.1", "sglang pins 5.12.1; the device has 5.17.0"),
    ("tokenizers==0.22.2", "transformers 5.12.1 checks tokenizers<=0.23.0 at import; the device has 0.23.2"),
    ("openai==2.6.1", "sglang.srt.entrypoints.openai.protocol (sglang pins 2.6.1)"),
    ("distro==1.9.0", "openai"),
    ("jiter==0.19.0", "openai"),
    ("sniffio==1.3.1", "openai"),
    ("pydantic==2.14.4", "sglang (protocol, configs), fastapi, openai, xgrammar"),
    ("pydantic-core==2.50.5", "pydantic 2.14.4"),
    ("annotated-types==0.8.0", "pydantic"),
    ("typing-inspection==0.4.5", "pydantic, fastapi"),
    ("fastapi==0.136.3", "sglang.srt.utils / disaggregation (0.136.3: newer ones import opentelemetry)"),
    ("starlette==1.10.0", "fastapi; sglang.srt.utils.common"),
    ("uvicorn==0.54.0", "sglang.srt.disaggregation.encode_receiver"),
    ("compressed-tensors==0.20.1", "sglang.srt.layers.quantization (module level)"),
    ("loguru==0.7.3", "compressed-tensors"),
    ("gguf==0.19.0", "sglang.srt.layers.quantization.gguf (module level)"),
    ("msgspec==0.23.0", "sglang.srt.managers.io_struct and 27 more modules"),
    ("orjson==3.13.0", "sglang.srt.configs.load_config"),
    ("partial-json-parser==0.2.1.1.post7", "sglang.srt.function_call"),
    ("pybase64==1.5.1", "sglang.srt.utils"),
    ("setproctitle==1.3.8", "sglang.srt.managers"),
    ("pyzmq==27.3.0", "zmq: sglang.srt.managers, debug_utils"),
    ("dill==0.4.1", "sglang.srt.sampling.custom_logit_processor"),
    ("ipython==9.18.1", "sglang.utils: `from IPython.display import HTML, display`"),
    ("ipython-pygments-lexers==1.1.1", "ipython"),
    ("jedi==0.20.1", "ipython"),
    ("parso==0.8.7", "jedi"),
    ("matplotlib-inline==0.2.2", "ipython"),
    ("traitlets==5.16.1", "ipython"),
    ("pexpect==4.9.0", "ipython"),
    ("ptyprocess==0.7.0", "pexpect"),
    ("prompt-toolkit==3.0.53", "ipython"),
    ("wcwidth==0.9.4", "prompt-toolkit"),
    ("stack-data==0.6.3", "ipython"),
    ("asttokens==3.0.2", "stack-data"),
    ("executing==2.3.0", "stack-data"),
    ("pure-eval==0.2.4", "stack-data"),
]

# What is cut out of a wheel before it travels (wheel file-name prefix -> [(glob, why)]). Each cut was checked
# against sglang 0.5.17's source; see benchmarks/README.md, "SGLang on the H200".
TRIM = {
    "sglang_kernel": [
        ("sgl_kernel/flash_ops.abi3.so",
         "FlashAttention-3 for SGLang (1.1 GB): loaded only by sgl_kernel/flash_attn.py (`from sgl_kernel "
         "import flash_ops`), which `import sgl_kernel` does not import; sglang imports sgl_kernel.flash_attn "
         "only on its fa3/fa4, xpu and vision attention paths, never with --attention-backend triton"),
        ("sgl_kernel/sm100/*",
         "common_ops built for SM100+ (Blackwell) and for no-GPU imports: load_utils picks sm90/ when the "
         "compute capability is 90 (H100/H200)"),
        ("sgl_kernel/flashmla_ops.abi3.so", "FlashMLA (DeepSeek MLA attention), loaded lazily by flash_mla.py"),
        ("sgl_kernel/infllm_ops.*", "InfLLM-v2 sparse attention, loaded lazily by infllm_v2/_loader.py"),
    ],
    "sglang": [
        ("sglang/multimodal_gen/*", "diffusion serving (sglang.multimodal_gen): nothing bench_one_batch reaches"),
        ("sglang/srt/server/_core.*.so", "the Rust HTTP server (only with SGLANG_RUST_SERVER)"),
        ("sglang/srt/grpc/_core.*.so", "the gRPC server (imported inside http_server's gRPC path only)"),
        ("sglang/srt/multimodal/_core.*.so", "Rust image processing for the Inkling model"),
    ],
    "xgrammar": [
        ("xgrammar/lib/libxgrammar.a", "static library for C++ builds against xgrammar; Python loads "
         "libxgrammar_bindings.so"),
    ],
}

PLATFORMS = ["manylinux_2_35_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64", "manylinux_2_28_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_26_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64"]

MIB = 1 << 20
ARCHIVE = "sglang.tar.xz"
STAGE = Path(os.environ.get("SGLANG_STAGE_DIR", "/tmp/sglang-stage"))
SITE = Path(os.environ.get("SGLANG_SITE", "/tmp/sglang-site"))
ENV_FILE = Path(os.environ.get("SGLANG_ENV_FILE", "/tmp/sglang-env.sh"))
JIT_DIR = os.environ.get("SGLANG_JIT_DIR", "/tmp/sglang-jit")
# What the run must pass (see benchmarks/README.md): FA3 did not travel, FlashInfer sampling is not used.
RUN_FLAGS = "--attention-backend triton --sampling-backend pytorch"


def say(msg: str) -> None:
    print(f"sglang_stage: {msg}", flush=True)


def fail(msg: str, code: int = 1) -> None:
    print(f"sglang_stage: ERROR: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- here: pack
def trim_rules(wheel_name: str):
    prefix = wheel_name.split("-")[0].lower()
    return TRIM.get(prefix, [])


def repack(src: Path, out_dir: Path) -> dict:
    """Rewrite a wheel uncompressed (ZIP_STORED), without the members TRIM names, and with RECORD to match."""
    rules = trim_rules(src.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / src.name
    dropped, dropped_bytes, hits = [], 0, {g: 0 for g, _ in rules}
    with zipfile.ZipFile(src) as zin:
        infos = zin.infolist()
        record_name = next((i.filename for i in infos if i.filename.endswith(".dist-info/RECORD")), None)
        keep = []
        for info in infos:
            hit = next((g for g, _ in rules if fnmatch.fnmatch(info.filename, g)), None)
            if hit:
                hits[hit] += 1
                dropped.append(info.filename)
                dropped_bytes += info.file_size
            else:
                keep.append(info)
        unused = [g for g, n in hits.items() if n == 0]
        if unused:
            fail(f"{src.name}: trim pattern(s) matched nothing: {unused} (a new wheel layout?)")
        dropped_set = set(dropped)
        tmp = dst.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zout:
            for info in keep:
                data = zin.read(info.filename)
                if info.filename == record_name and dropped_set:
                    lines = data.decode().splitlines()
                    data = ("\n".join(ln for ln in lines if ln.split(",")[0] not in dropped_set) + "\n").encode()
                new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                new.external_attr = info.external_attr
                new.compress_type = zipfile.ZIP_STORED
                zout.writestr(new, data)
        tmp.replace(dst)
    return {"wheel": src.name, "bytes_in": src.stat().st_size, "dropped_files": len(dropped),
            "dropped_bytes_unpacked": dropped_bytes, "rules": [g for g, _ in rules]}


def download(cache: Path) -> list[Path]:
    """One folder per requirement, so each requirement maps to exactly one wheel."""
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    wheels = []
    for req, _why in WHEELS:
        d = cache / "dl" / req.replace("==", "-")
        found = sorted(d.glob("*.whl")) if d.is_dir() else []
        if len(found) != 1:
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "--python-version", "3.12", "--implementation", "cp", *plat, "-d", str(d), req]
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            noise = "\n".join(ln for ln in r.stdout.splitlines() if "is ignored" not in ln)
            found = sorted(d.glob("*.whl"))
            if r.returncode != 0 or len(found) != 1:
                fail(f"pip download {req} failed (rc {r.returncode}):\n{noise}")
            say(f"downloaded {found[0].name} ({found[0].stat().st_size / MIB:.1f} MiB)")
        wheels.append(found[0])
    return wheels


def pack(root: Path, cache: Path, part_mib: float, xz_threads: int) -> None:
    t0 = time.time()
    wheels = download(cache)
    work = cache / "wheels"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    report = [repack(w, work) for w in wheels]
    for r in report:
        if r["dropped_files"]:
            say(f"trimmed {r['wheel']}: {r['dropped_files']} files, "
                f"{r['dropped_bytes_unpacked'] / MIB:.1f} MiB unpacked")
    # Build the archive only when the wheels changed (xz -9 of ~400 MiB takes minutes on one core).
    names = sorted(p.name for p in work.glob("*.whl"))
    key = hashlib.sha256(json.dumps([(n, sha256(work / n)) for n in names]).encode()).hexdigest()
    archive = cache / ARCHIVE
    stamp = cache / (ARCHIVE + ".key")
    if not (archive.is_file() and stamp.is_file() and stamp.read_text().strip() == key):
        say(f"compressing {len(names)} wheels ({sum((work / n).stat().st_size for n in names) / MIB:.0f} MiB "
            f"stored) with xz -9 -T{xz_threads} ...")
        tar = subprocess.Popen(["tar", "-C", str(cache), "--sort=name", "--owner=0", "--group=0",
                                "--mtime=@0", "-cf", "-", "wheels"], stdout=subprocess.PIPE)
        with open(archive.with_suffix(".tmp"), "wb") as f:
            xz = subprocess.run(["xz", "-9", f"-T{xz_threads}", "-c"], stdin=tar.stdout, stdout=f)
        tar.stdout.close()
        if tar.wait() != 0 or xz.returncode != 0:
            fail("tar | xz failed")
        archive.with_suffix(".tmp").replace(archive)
        stamp.write_text(key + "\n")
    out = root / ".gpu" / "sglang"
    shutil.rmtree(out, ignore_errors=True)
    size = archive.stat().st_size
    part_bytes = int(part_mib * MIB)
    n = -(-size // part_bytes)
    parts = []
    with open(archive, "rb") as f:
        for k in range(n):
            d = out / f"part{k}"
            d.mkdir(parents=True)
            p = d / f"{ARCHIVE}.part{k}"
            p.write_bytes(f.read(part_bytes))
            parts.append({"name": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)})
    manifest = {
        "what": f"sglang {SGLANG_VERSION} for the lent GPU machine (cp312, torch 2.11.0+cu130); see "
                "benchmarks/README.md, 'SGLang on the H200'",
        "archive": ARCHIVE, "archive_bytes": size, "archive_sha256": sha256(archive),
        "parts": parts,
        "wheels": [{"file": n, "bytes_stored": (work / n).stat().st_size, "sha256": sha256(work / n)}
                   for n in names],
        "requirements": [{"req": r, "why": w} for r, w in WHEELS],
        "trimmed": [{"wheel": r["wheel"], "files": r["dropped_files"],
                     "mib_unpacked": round(r["dropped_bytes_unpacked"] / MIB, 1),
                     "rules": [{"glob": g, "why": why} for g, why in trim_rules(r["wheel"])]}
                    for r in report if r["dropped_files"]],
        "run_flags": RUN_FLAGS,
    }
    text = json.dumps(manifest, indent=1) + "\n"
    (out / "manifest.json").write_text(text)
    for k in range(n):
        (out / f"part{k}" / "manifest.json").write_text(text)
    with open(out / "SHA256SUMS", "w") as f:
        f.write(f"{manifest['archive_sha256']}  {ARCHIVE}\n")
        for p in parts:
            f.write(f"{p['sha256']}  {p['name']}\n")
    # The project's tree travels with every call: warn when tree + a part would pass 64 MiB.
    tree = tracked_tree_bytes(root)
    say(f"archive {size / MIB:.1f} MiB (sha256 {manifest['archive_sha256'][:16]}...), {n} part(s) of at most "
        f"{part_mib:g} MiB: " + ", ".join(f"part{k} {p['bytes'] / MIB:.1f} MiB" for k, p in enumerate(parts)))
    if tree is not None:
        worst = (tree + max(p["bytes"] for p in parts)) / MIB
        say(f"working tree that travels with each call: {tree / MIB:.1f} MiB; largest call {worst:.1f} MiB of 64"
            + ("" if worst <= 63.5 else "  -- TOO BIG: lower SGLANG_PART_MB"))
    say(f"device calls needed: {n} (one per part, each right after the other: /tmp survives only ~30 s idle)")
    for k in range(n):
        last = " && source /tmp/sglang-env.sh && <run>" if k == n - 1 else ""
        say(f"  call {k + 1}: carry [\".gpu/sglang/part{k}\"]  command: "
            f"bash benchmarks/gpu/sglang_stage.sh part {k}{last}")
    say(f"done in {time.time() - t0:.0f} s; manifest: .gpu/sglang/manifest.json")


def tracked_tree_bytes(root: Path):
    try:
        files = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others",
                                "--exclude-standard"], stdout=subprocess.PIPE, check=True).stdout
    except Exception:
        return None
    total = 0
    for rel in files.split(b"\0"):
        if rel:
            try:
                total += (root / rel.decode()).stat().st_size
            except OSError:
                pass
    return total


# ------------------------------------------------------------------------------------------- device: part
def part(root: Path, k: int) -> int:
    src_dir = root / ".gpu" / "sglang" / f"part{k}"
    mf = src_dir / "manifest.json"
    if not mf.is_file():
        fail(f".gpu/sglang/part{k} is not here: run this call with carry [\".gpu/sglang/part{k}\"] "
             "(and `bash benchmarks/gpu/sglang_stage.sh pack` here first)", 2)
    manifest = json.loads(mf.read_text())
    n = len(manifest["parts"])
    if not 0 <= k < n:
        fail(f"part {k}: the manifest has parts 0..{n - 1}", 2)
    STAGE.mkdir(parents=True, exist_ok=True)
    staged_mf = STAGE / "manifest.json"
    if staged_mf.is_file() and json.loads(staged_mf.read_text())["archive_sha256"] != manifest["archive_sha256"]:
        say(f"{STAGE} held parts of another build: cleared")
        shutil.rmtree(STAGE)
        STAGE.mkdir(parents=True)
    shutil.copyfile(mf, staged_mf)
    want = manifest["parts"][k]
    src = src_dir / want["name"]
    if not src.is_file():
        fail(f"{src} is missing from the carried folder", 2)
    got = sha256(src)
    if got != want["sha256"]:
        fail(f"{want['name']}: sha256 {got} != manifest {want['sha256']} (partial transfer? pack again?)")
    shutil.copyfile(src, STAGE / want["name"])
    say(f"part {k} of 0..{n - 1} kept in {STAGE} ({want['bytes'] / MIB:.1f} MiB, sha256 ok)")
    missing = [i for i, p in enumerate(manifest["parts"]) if not (STAGE / p["name"]).is_file()]
    if missing:
        if k == n - 1 or any(i < k for i in missing):
            say(f"parts {missing} are not on this machine: it was given back between calls (or they were never "
                "sent). Start again from the first missing part, calls right after each other.")
            return 3
        say(f"next: call with carry [\".gpu/sglang/part{missing[0]}\"] and "
            f"`bash benchmarks/gpu/sglang_stage.sh part {missing[0]}` within ~30 s")
        return 0
    return install(manifest)


def install(manifest: dict) -> int:
    done = SITE / ".sglang_stage_installed"
    if done.is_file() and done.read_text().strip() == manifest["archive_sha256"]:
        say(f"already installed in {SITE}")
    else:
        t0 = time.time()
        archive = STAGE / manifest["archive"]
        with open(archive, "wb") as out:
            for p in manifest["parts"]:
                with open(STAGE / p["name"], "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
        got = sha256(archive)
        if got != manifest["archive_sha256"]:
            fail(f"joined archive sha256 {got} != manifest {manifest['archive_sha256']}")
        say(f"joined {len(manifest['parts'])} parts: {archive} sha256 ok")
        wheels_dir = STAGE / "wheels"
        shutil.rmtree(wheels_dir, ignore_errors=True)
        with tarfile.open(archive) as t:
            if hasattr(tarfile, "data_filter"):
                t.extractall(STAGE, filter="data")
            else:
                t.extractall(STAGE)
        archive.unlink()
        for w in manifest["wheels"]:
            p = wheels_dir / w["file"]
            if not p.is_file() or sha256(p) != w["sha256"]:
                fail(f"{w['file']}: missing or wrong sha256 after unpacking")
        shutil.rmtree(SITE, ignore_errors=True)
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--disable-pip-version-check", "--target", str(SITE),
               *[str(wheels_dir / w["file"]) for w in manifest["wheels"]]]
        r = subprocess.run(cmd)
        if r.returncode != 0:
            fail(f"pip install --target {SITE} failed (rc {r.returncode})")
        shutil.rmtree(wheels_dir, ignore_errors=True)
        done.write_text(manifest["archive_sha256"] + "\n")
        say(f"installed {len(manifest['wheels'])} wheels into {SITE} in {time.time() - t0:.0f} s")
    return check()


def jit_toolchain() -> dict:
    """Where nvcc, cublasLt.h and libcuda.so/libcudart.so are, for the kernels compiled at first use (flashinfer's
    rmsnorm, sglang.kernels.jit's rope and KV-store). Seen here: flashinfer's norm.cu includes cublasLt.h, and its
    link step needs -lcuda and -lcudart; a CUDA install with nvcc alone has neither the header nor libcuda.so."""
    env = {}
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if not cuda_home:
        if Path("/usr/local/cuda/bin/nvcc").exists():
            cuda_home = "/usr/local/cuda"
        elif shutil.which("nvcc"):
            cuda_home = str(Path(os.path.realpath(shutil.which("nvcc"))).parent.parent)
    notes = []
    if not cuda_home or not Path(cuda_home, "bin", "nvcc").exists():
        notes.append("nvcc NOT FOUND: the JIT kernels (rmsnorm, rope, KV store) cannot compile")
    else:
        env["CUDA_HOME"] = cuda_home
        notes.append(f"nvcc: {cuda_home}/bin/nvcc")
    pip_cuda = []  # the CUDA packages torch came with (nvidia/cu13/{include,lib})
    try:
        import nvidia  # namespace package of the nvidia-* wheels
        for base in nvidia.__path__:
            pip_cuda += sorted(Path(base).glob("*/include/cublasLt.h"))
    except Exception:
        pass
    if cuda_home and Path(cuda_home, "include", "cublasLt.h").exists():
        notes.append("cublasLt.h: in the CUDA install")
    elif pip_cuda:
        env["CPATH"] = str(pip_cuda[0].parent)
        notes.append(f"cublasLt.h: from torch's CUDA wheels ({pip_cuda[0].parent}), via CPATH")
    else:
        notes.append("cublasLt.h NOT FOUND: flashinfer's rmsnorm cannot compile")
    link_dir = Path(JIT_DIR) / "lib"
    home = Path(cuda_home or "/usr/local/cuda")
    # where the linker looks anyway (flashinfer passes -L$CUDA_HOME/lib64 and lib64/stubs)
    linker_dirs = [home / "lib64", home / "lib64" / "stubs", Path("/usr/lib/x86_64-linux-gnu"),
                   Path("/lib/x86_64-linux-gnu"), Path("/usr/lib64"), Path("/usr/lib")]
    other_dirs = [Path(d) for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    other_dirs += [Path("/usr/local/nvidia/lib64"), Path("/usr/local/nvidia/lib"), home / "lib"]
    other_dirs += [p.parent.parent / "lib" for p in pip_cuda]
    for lib in ("cuda", "cudart"):
        if any((d / f"lib{lib}.so").exists() for d in linker_dirs):
            notes.append(f"lib{lib}.so: found where the linker looks")
            continue
        target = None
        for d in other_dirs + linker_dirs:
            hits = sorted(d.glob(f"lib{lib}.so*")) if d.is_dir() else []
            hits = [h for h in hits if h.name == f"lib{lib}.so" or h.name[len(f"lib{lib}.so."):].isdigit()]
            if hits:
                target = hits[0]
                break
        if target is None:
            notes.append(f"lib{lib}.so NOT FOUND: JIT kernels cannot link (-l{lib})")
            continue
        link_dir.mkdir(parents=True, exist_ok=True)
        link = link_dir / f"lib{lib}.so"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target.resolve())
        env["LIBRARY_PATH"] = str(link_dir)
        notes.append(f"lib{lib}.so: {link} -> {target.resolve()}, via LIBRARY_PATH")
    return {"env": env, "notes": notes}


def write_env() -> dict:
    tc = jit_toolchain()
    e = tc["env"]
    lines = [
        "# written by benchmarks/gpu/sglang_stage.py: `source` it before running SGLang",
        f"export PYTHONPATH={SITE}${{PYTHONPATH:+:$PYTHONPATH}}",
        "# JIT caches: flashinfer's rmsnorm and sglang.kernels.jit's rope / KV-store are compiled on first use",
        f"export FLASHINFER_WORKSPACE_BASE={JIT_DIR} TVM_FFI_CACHE_DIR={JIT_DIR}/tvm-ffi",
    ]
    if "CUDA_HOME" in e:
        lines.append(f"export CUDA_HOME={e['CUDA_HOME']} PATH={e['CUDA_HOME']}/bin:$PATH")
    if "CPATH" in e:
        lines.append(f"export CPATH={e['CPATH']}${{CPATH:+:$CPATH}}")
    if "LIBRARY_PATH" in e:
        lines.append(f"export LIBRARY_PATH={e['LIBRARY_PATH']}${{LIBRARY_PATH:+:$LIBRARY_PATH}}")
    lines += [
        "# keep NVLink multicast off (two-GPU kinds), as the machine's own settings do",
        "export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0} "
        "TORCH_SYMM_MEM_DISABLE_MULTICAST=${TORCH_SYMM_MEM_DISABLE_MULTICAST:-1}",
        "# flags every run of this staging must pass: no FA3 here, no FlashInfer sampling",
        f'export SGLANG_STAGE_FLAGS="{RUN_FLAGS}"',
    ]
    ENV_FILE.write_text("\n".join(lines) + "\n")
    say(f"env file: source {ENV_FILE}  (PYTHONPATH={SITE}; $SGLANG_STAGE_FLAGS = {RUN_FLAGS})")
    for n in tc["notes"]:
        say(f"  JIT toolchain: {n}")
    return e


def child_env() -> dict:
    env = dict(os.environ)
    extra = write_env()
    env["PYTHONPATH"] = str(SITE) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["SGLANG_SITE"] = str(SITE)
    env.setdefault("FLASHINFER_WORKSPACE_BASE", JIT_DIR)
    env.setdefault("TVM_FFI_CACHE_DIR", JIT_DIR + "/tvm-ffi")
    for k, v in extra.items():
        if k == "CUDA_HOME":
            env[k] = v
            env["PATH"] = v + "/bin" + os.pathsep + env.get("PATH", "")
        else:
            env[k] = v + (os.pathsep + env[k] if env.get(k) else "")
    return env


CHECK_SRC = r"""
import importlib, os, sys, traceback
bad = []
def imp(name):
    try:
        return importlib.import_module(name)
    except BaseException as e:
        tb = traceback.format_exception(type(e), e, e.__traceback__)
        bad.append(f"{name}: {type(e).__name__}: {e}\n    " + "    ".join(tb[-4:]))
        return None
site = os.environ["SGLANG_SITE"]
for name in ["sglang", "sgl_kernel", "flashinfer", "flashinfer.sampling", "flashinfer.norm", "tvm_ffi",
             "xgrammar", "transformers", "tokenizers", "torch", "triton"]:
    m = imp(name)
    if m is not None and "." not in name:
        where = "staged" if (getattr(m, "__file__", "") or "").startswith(site) else "device"
        print(f"  {name:12s} {getattr(m, '__version__', '?'):24s} ({where})")
sk = sys.modules.get("sgl_kernel")
if sk is not None:
    print("  sgl_kernel.common_ops:", getattr(getattr(sk, "common_ops", None), "__file__", "?"))
for name in ["sglang.srt.server_args", "sglang.srt.model_executor.model_runner",
             "sglang.srt.layers.attention.triton_backend", "sglang.srt.layers.sampler",
             "sglang.srt.models.llama", "sglang.benchmark.one_batch"]:
    imp(name)
if bad:
    print("sglang_stage: import check FAILED\n  " + "\n  ".join(bad))
    sys.exit(1)
print("sglang_stage: import check ok")
"""


def check() -> int:
    if not (SITE / ".sglang_stage_installed").is_file():
        fail(f"nothing installed in {SITE}: run the `part K` calls first", 3)
    env = child_env()
    say("import check (python3 with PYTHONPATH=" + str(SITE) + "):")
    r = subprocess.run([sys.executable, "-c", CHECK_SRC], env=env)
    if r.returncode != 0:
        return r.returncode
    h = subprocess.run([sys.executable, "-m", "sglang.bench_one_batch", "--help"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if h.returncode != 0 or "--attention-backend" not in h.stdout or "--batch-size" not in h.stdout:
        print(h.stdout[-4000:])
        say(f"`python -m sglang.bench_one_batch --help` FAILED (rc {h.returncode})")
        return 1
    say(f"`python -m sglang.bench_one_batch --help` ok ({len(h.stdout.splitlines())} lines)")
    say(f"ready: source {ENV_FILE} && python3 -m sglang.bench_one_batch --model-path M --load-format dummy "
        "$SGLANG_STAGE_FLAGS --batch-size 32 --input-len 512 --output-len 256")
    return 0


JIT_SRC = r"""
import time, torch
t = time.time()
from flashinfer.jit.norm import gen_norm_module
spec = gen_norm_module()
spec.build_and_load()
print(f"  flashinfer norm (rmsnorm, fused_add_rmsnorm): built in {time.time() - t:.0f} s -> {spec.get_library_path()}")
t = time.time()
from sglang.kernels.ops.attention import rope
rope._jit_fused_rope_module(True, 128, torch.bfloat16, torch.bfloat16)
print(f"  sglang fused rope (neox, head 128, bf16): built in {time.time() - t:.0f} s")
t = time.time()
from sglang.kernels.ops.kvcache import kvcache
kvcache._jit_kvcache_module(2048, 2048)
print(f"  sglang KV-cache store (8 KV heads x 128 x bf16): built in {time.time() - t:.0f} s")
print("sglang_stage: JIT build ok")
"""


def jit() -> int:
    """Build, ahead of the first run, the JIT kernels a dense Llama-3.1-8B needs (cached under SGLANG_JIT_DIR)."""
    if not (SITE / ".sglang_stage_installed").is_file():
        fail(f"nothing installed in {SITE}: run the `part K` calls first", 3)
    say("building the JIT kernels the Llama run compiles at first use:")
    r = subprocess.run([sys.executable, "-c", JIT_SRC], env=child_env())
    if r.returncode != 0:
        say("JIT build FAILED (see above): the run would fail the same way at its first forward")
    return r.returncode


def main(argv: list[str]) -> int:
    root = Path.cwd()
    if not argv:
        print(__doc__)
        return 2
    cmd = argv[0]
    if cmd == "pack":
        cache = Path(os.environ.get("SGLANG_STAGE_CACHE", Path.home() / ".cache" / "w2ext-sglang"))
        pack(root, cache, float(os.environ.get("SGLANG_PART_MB", "48")),
             int(os.environ.get("SGLANG_XZ_THREADS", "1")))
        return 0
    if cmd == "part" and len(argv) == 2 and argv[1].isdigit():
        return part(root, int(argv[1]))
    if cmd == "check":
        return check()
    if cmd == "jit":
        return jit()
    if cmd == "repack" and len(argv) == 3:
        print(json.dumps(repack(Path(argv[1]), Path(argv[2]))))
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
