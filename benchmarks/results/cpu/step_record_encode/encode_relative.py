"""How much of the export thread's encoding of an ``engine.step`` record is its absolute timestamps (a look for
issue #19's export-thread share, not a change): ``marshal`` (the wire's ``encode_frame``) of 200 records shaped like a
real one at 128 requests per step (captured from a CPU engine: 25 ints, 17 of them wall-clock ns near 1.8e18, a
128-bit trace id and a 64-bit span id), against the same records with those times as offsets of up to 2^22 ns from
the step's start. Each record has its own int objects (marshal writes shared ones as references). Warm loop: a lower
bound; best of 5 repeats.

    python benchmarks/results/cpu/step_record_encode/encode_relative.py
"""
import marshal
import random
import timeit

random.seed(0)


def record(k: int, relative: bool) -> list:
    t0 = 1796604052341294153 + k * 40_000_000
    trace, span = random.getrandbits(128), random.getrandbits(64)

    def t():
        return random.getrandbits(22) if relative else t0 + random.getrandbits(25)
    return ["engine.step", "engine_core", trace, span, 0, t0, t0 + 35_000_000, 61 + k, None, None, None, 1,
            ((128, 0, 128, (), (), 0, 0, (), (), None, 128, 0), True, (), 128, (0, 0, 0), t(), t(), t(), t(), 61 + k,
             1, ((trace, span, 61 + k, t(), t(), t(), t(), t(), t(), 128), t(), False, 128, t(), t(), None, t(), t(),
                 None, t(), t(), None))]


for relative in (False, True):
    batch = [record(k, relative) for k in range(200)]
    n = 300
    best = min(timeit.repeat(lambda: marshal.dumps(("records", batch)), number=n, repeat=5))
    print(f"{'relative' if relative else 'absolute'}: {1e6 * best / n / len(batch):.3f} us per record, "
          f"{len(marshal.dumps(batch)) // len(batch)} bytes")
