"""instrument -> uninstrument -> instrument, as OpenTelemetry's instrumentors are tested: a module
imported after instrument() is wrapped by its post-import hook, uninstrument() restores the original
methods, and instrumenting again wraps them anew."""
import sys
import types

import wrapt

from vllm_w2ext.hooks import Instrumentor
from vllm_w2ext.hooks.spec import Hook
from vllm_w2ext.hooks.wrapping import is_wrapped

MOD = "w2ext_unit_target"


def make_module():
    m = types.ModuleType(MOD)
    exec("class Engine:\n    def step(self, x):\n        return x + 1\n", m.__dict__)
    return m


def test_instrument_uninstrument_instrument():
    seen = []
    hooks = [Hook("t.step", MOD, "Engine.step", lambda o, a, k: a[0], lambda s, r, e: seen.append((s, r))),
             Hook("t.absent", MOD, "Engine.missing", lambda o, a, k: None, optional=True)]
    sys.modules.pop(MOD, None)
    inst = Instrumentor(hooks)
    inst.instrument()
    sys.modules[MOD] = m = make_module()
    original = vars(m.Engine)["step"]
    wrapt.importer.notify_module_loaded(m)          # what the import system does on a real import
    assert is_wrapped(m.Engine, "step") and vars(m.Engine)["step"].__wrapped__ is original
    assert m.Engine().step(1) == 2 and seen == [(1, 2)]

    inst.uninstrument()
    assert vars(m.Engine)["step"] is original and not is_wrapped(m.Engine, "step")
    assert m.Engine().step(5) == 6 and seen == [(1, 2)]

    inst.instrument()
    assert is_wrapped(m.Engine, "step")
    assert m.Engine().step(7) == 8 and seen == [(1, 2), (7, 8)]
    inst.uninstrument()
    sys.modules.pop(MOD, None)


def test_set_active_pauses_without_unwrapping():
    """Paused hooks pass calls straight through and count nothing, also through a bound method taken
    before the pause (as vLLM's EngineCore.step_fn is); resumed, they record again."""
    seen = []
    hooks = [Hook("t.step", MOD, "Engine.step", lambda o, a, k: a[0], lambda s, r, e: seen.append((s, r)))]
    sys.modules.pop(MOD, None)
    inst = Instrumentor(hooks)
    inst.instrument()
    sys.modules[MOD] = m = make_module()
    wrapt.importer.notify_module_loaded(m)
    step = m.Engine().step                          # captured while hooked, like EngineCore.step_fn
    assert step(1) == 2 and seen == [(1, 2)]
    calls = inst.set_active(False)
    assert step(2) == 3 and seen == [(1, 2)] and is_wrapped(m.Engine, "step")
    assert inst.set_active(True) == calls           # nothing counted while paused
    assert step(3) == 4 and seen == [(1, 2), (3, 4)]
    assert inst.set_active(True) == calls + 1
    inst.uninstrument()
    sys.modules.pop(MOD, None)


def test_resume_forgets_the_previous_step():
    """A resume tells the worker hooks that the steps in between ran unrecorded: the next execution record
    has no previous end, so no gap or device idle is measured across the pause (the one signal the export
    side reads: test_steps_assembly's pause tests)."""
    from vllm_w2ext.hooks import worker
    inst = Instrumentor([])
    worker.S.last_end = 456
    inst.set_active(False)
    assert worker.S.last_end == 456                 # a pause alone changes nothing
    inst.set_active(True)
    assert worker.S.last_end == 0
