"""A collector that is down in the worst way: it accepts TCP connections and never reads or answers
(gRPC and HTTP exporters then wait for their timeouts), for the outage tests of spans and metrics."""
from __future__ import annotations

import socket
import threading


class BlackHole:
    """Accepts TCP connections on a loopback port and never reads or answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()
