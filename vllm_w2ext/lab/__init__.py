"""The lab: model folders, benchmark drivers and their environment capture."""
from vllm_w2ext.telemetry.identity import installed_vllm  # noqa: F401  (the lab's and benchmarks' name for it)


def _ephemeral_low() -> int:
    """The low end of the kernel's range for ``bind(0)`` (Linux; 0 where it cannot be read)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the local servers the lab and the tests start), from below the kernel's
    ephemeral range where there is room: the server binds it seconds later, and in between another program's
    ``bind(0)`` (vLLM's own ``get_open_port``, gloo, a receiver) is never handed a port from outside that range."""
    import random
    import socket
    low = _ephemeral_low()
    for _ in range(64 if low > 12000 else 0):
        port = random.randrange(10000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
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


