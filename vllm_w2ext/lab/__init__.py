"""The lab: model folders, benchmark drivers and their environment capture."""


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for the local servers the lab and the tests start)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
