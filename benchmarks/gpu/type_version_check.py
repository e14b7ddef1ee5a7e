"""Does swapping a method in and out of a class slow OTHER code of that class? (issue #19)

CPython specializes attribute loads (``self.x``) against the class's version tag; any assignment to a class
attribute gives the class a new tag and every cached load of its instances misses and re-specializes, with a
growing back-off after repeated misses. Since 3.12 a class that has used ``MAX_VERSIONS_PER_CLASS`` (1000)
tags gets none at all and its attribute loads are never specialized again. The plugin's step gate
(``hooks.runner.StepGate``) swaps hooked methods of vLLM's Scheduler, Worker and model runner in and out
of their classes around recorded steps: this measures what that does to a method with many ``self.x`` loads
(a stand-in for ``Scheduler.schedule``), no plugin involved.

    python3 benchmarks/gpu/type_version_check.py        # prints one line per case
"""
import sys
import time


class Sched:
    def __init__(self):
        for i in range(20):
            setattr(self, f"a{i}", i)

    def work(self):
        s = 0
        for _ in range(20):
            s += self.a0 + self.a1 + self.a2 + self.a3 + self.a4 + self.a5 + self.a6 + self.a7 + self.a8 + self.a9
            s += self.a10 + self.a11 + self.a12 + self.a13 + self.a14 + self.a15 + self.a16 + self.a17 + self.a18
            s += self.a19
        return s

    def hooked(self):
        return 1


def other(self):
    return 2


ORIG = Sched.__dict__["hooked"]


def run(cls, flip_every: int, n: int = 20000) -> float:
    """µs per work() call while a method of the class is swapped every ``flip_every`` calls (0: never)."""
    s = cls()
    t0 = time.perf_counter_ns()
    for i in range(n):
        if flip_every and i % flip_every == 0:
            cls.hooked = other if (i // flip_every) % 2 else ORIG
        s.work()
    return (time.perf_counter_ns() - t0) / n / 1e3


def fresh():
    return type("Sched", (Sched,), {"hooked": ORIG})


def main() -> None:
    print(f"python {sys.version.split()[0]}")
    for fe in (0, 1000, 64, 32, 8, 2):
        print(f"fresh class, method swapped every {fe or 'never'} calls: "
              f"{min(run(fresh(), fe) for _ in range(5)):.2f} us per call")
    worn = fresh()
    for i in range(1200):                      # > MAX_VERSIONS_PER_CLASS swaps, then none
        worn.hooked = other if i % 2 else ORIG
        worn().work()                          # each swap used: the class is looked up between them
    print(f"class swapped 1200 times before, none during: {min(run(worn, 0) for _ in range(5)):.2f} us per call "
          f"(a fresh class: {min(run(fresh(), 0) for _ in range(5)):.2f})")


if __name__ == "__main__":
    main()
