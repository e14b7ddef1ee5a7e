"""A stand-in for ``recording.Nvtx`` that lists its push and pop calls (unit tests of the marks)."""


class FakeNvtx:
    def __init__(self):
        self.calls = []

    def push(self, name, role, step):
        self.calls.append(("push", name))

    def pop(self):
        self.calls.append(("pop",))
