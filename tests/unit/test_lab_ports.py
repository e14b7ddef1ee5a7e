"""lab.free_port: a free port from below the kernel's ephemeral range, so no other program's bind(0) can be
handed it between the choice and the server's bind."""
from __future__ import annotations

import socket

import vllm_w2ext.lab as lab


def test_port_below_the_ephemeral_range_and_bindable(monkeypatch):
    monkeypatch.setattr(lab, "_ephemeral_low", lambda: 30000)
    ports = {lab.free_port() for _ in range(20)}
    assert all(10000 <= p < 30000 for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", min(ports)))


def test_a_taken_port_is_skipped(monkeypatch):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        taken = held.getsockname()[1]
        picks = iter([taken, taken])
        monkeypatch.setattr(lab, "_ephemeral_low", lambda: 40000)
        monkeypatch.setattr("random.randrange", lambda a, b: next(picks, 20000 + taken % 1000))
        assert lab.free_port() == 20000 + taken % 1000


def test_no_room_below_the_range_falls_back_to_the_kernel(monkeypatch):
    monkeypatch.setattr(lab, "_ephemeral_low", lambda: 0)
    p = lab.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))
