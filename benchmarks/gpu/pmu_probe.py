"""Can this machine count instructions (a hardware PMU visible to the guest)? perf_event_open through ctypes
for the calling thread: PERF_COUNT_HW_INSTRUCTIONS and CPU_CYCLES around a fixed Python loop, twice. If it
can, the plugin's work in vLLM's threads can be counted in instructions there, which the host's slow spells
do not change (they change seconds). Prints one JSON line."""
import ctypes
import json
import os
import struct

NR_PERF_EVENT_OPEN = 298          # x86_64


def counter(config: int) -> int:
    # struct perf_event_attr (size 128): type, size, config, ..., flags: disabled=1, exclude_kernel=1, exclude_hv=1
    flags = (1 << 0) | (1 << 5) | (1 << 6)
    attr = struct.pack("IIQQQQQ", 0, 128, config, 0, 0, 0, flags).ljust(128, b"\0")
    buf = ctypes.create_string_buffer(attr, 128)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(NR_PERF_EVENT_OPEN, buf, 0, -1, -1, 0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return fd


def measure(fd: int) -> int:
    import fcntl
    fcntl.ioctl(fd, 0x2403, 0)     # PERF_EVENT_IOC_RESET
    fcntl.ioctl(fd, 0x2400, 0)     # PERF_EVENT_IOC_ENABLE
    x = 0
    for i in range(100000):
        x += i
    fcntl.ioctl(fd, 0x2401, 0)     # PERF_EVENT_IOC_DISABLE
    return struct.unpack("q", os.read(fd, 8))[0]


out = {"paranoid": open("/proc/sys/kernel/perf_event_paranoid").read().strip()}
for name, cfg in (("instructions", 1), ("cycles", 0)):
    try:
        fd = counter(cfg)
        out[name] = [measure(fd) for _ in range(3)]
    except OSError as e:
        out[name] = f"unavailable: {e}"
print(json.dumps(out))
